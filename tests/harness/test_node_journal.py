"""The node's journal: who is alive, and which processes may be killed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import node as node_module
from tests.harness.controlplane import ControlPlane, ControlPlaneError
from tests.harness.node import Node, NodeError, Recorded, _normalized, _start_time, journal_is_live


def me() -> Recorded:
    pid = os.getpid()
    return Recorded(pid, _start_time(pid), sys.executable)


def test_a_process_matches_only_with_its_pid_start_time_and_binary() -> None:
    rec = me()

    assert rec.matches()
    assert not Recorded(rec.pid, str(int(rec.start) + 1), rec.binary).matches()  # PID reused
    assert not Recorded(rec.pid, rec.start, "/usr/bin/kubelet").matches()


def test_a_process_that_exited_does_not_match() -> None:
    proc = subprocess.Popen(["sleep", "0"])
    rec = Recorded(proc.pid, _start_time(proc.pid), "sleep")
    proc.wait()

    assert not rec.matches()


def test_a_session_node_lives_with_its_owner_a_detached_node_with_its_processes() -> None:
    gone = {"pid": 2**22 + 1, "start": "1", "binary": "kubelet"}
    alive = me().to_json()

    assert journal_is_live({"owner": alive, "processes": {}})
    # The session that started it was killed: its surviving processes are orphans.
    assert not journal_is_live({"owner": gone, "processes": {"kubelet": alive}})
    # make node-up exits after the start; the node lives on in its processes.
    assert journal_is_live({"owner": gone, "detached": True, "processes": {"kubelet": alive}})
    assert not journal_is_live({"owner": gone, "detached": True, "processes": {"k": gone}})


def test_image_names_are_normalised_as_containerd_stores_them() -> None:
    assert (
        _normalized("localhost/cardano-forge-test/pause:1")
        == "localhost/cardano-forge-test/pause:1"
    )
    assert (
        _normalized("cardano-forge/forge-manager:0.1.0")
        == "docker.io/cardano-forge/forge-manager:0.1.0"
    )
    assert _normalized("busybox:1") == "docker.io/library/busybox:1"
    assert _normalized("registry.example:5000/a/b:2") == "registry.example:5000/a/b:2"


def test_prerequisites_fail_with_one_line_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    node = Node(control_plane=ControlPlane(root=tmp_path / "cp"), root=tmp_path / "node")

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NodeError, match=r"run it as root \(sudo make node-up\)$"):
        node.start()

    def no_tool(name: str) -> str:
        raise ControlPlaneError(f"{name} not found")

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(node_module, "tool", no_tool)
    with pytest.raises(
        NodeError, match=r"^kubelet not found in .tools/bin or on PATH: run 'make node-tools'$"
    ):
        node.start()
