"""The entry point: a manager that cannot start leaves its node not forging."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from forge_manager import __main__ as entry
from forge_manager import node_signal

from .fakes import spawn


def _env(tmp: Path, **overrides: str) -> dict[str, str]:
    secret = tmp / "secret"
    secret.mkdir(exist_ok=True)
    for name in ("kes.skey", "vrf.skey", "node.cert"):
        (secret / name).write_text('{"type": "x", "cborHex": "5820"}\n')
    env = {
        "POD_NAME": "pod-0",
        "NAMESPACE": "cardano",
        "SOURCE_KES_KEY": str(secret / "kes.skey"),
        "SOURCE_VRF_KEY": str(secret / "vrf.skey"),
        "SOURCE_OP_CERT": str(secret / "node.cert"),
        "TARGET_KES_KEY": str(tmp / "secrets" / "kes.skey"),
        "TARGET_VRF_KEY": str(tmp / "secrets" / "vrf.skey"),
        "TARGET_OP_CERT": str(tmp / "secrets" / "node.cert"),
        "NODE_SOCKET": str(tmp / "node.socket"),
        "CARDANO_NODE_PROCESS_NAME": "cn-absent-test",
        "KUBECONFIG": str(tmp / "no-such-kubeconfig"),
        "METRICS_PORT": "1",
    }
    env.update(overrides)
    return env


def _left_behind(tmp: Path) -> list[Path]:
    """What a previous incarnation left: installed credentials and a crash-left temporary."""
    secrets = tmp / "secrets"
    secrets.mkdir()
    files = [secrets / n for n in ("kes.skey", "vrf.skey", "node.cert", ".kes.skey.k2j4x9_q")]
    for f in files:
        f.write_text("key material\n")
    return files


@pytest.fixture
def run_main(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], int]:
    monkeypatch.setattr(entry, "setup_logging", lambda *_a: None)  # keep pytest's handlers

    def run(env: dict[str, str]) -> int:
        for name in list(entry.os.environ):
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return entry.main()

    return run


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"LEASE_DURATION": "12"}, "configuration error: unsafe timing"),
        ({}, "no Kubernetes configuration"),
    ],
    ids=["bad-configuration", "no-kubeconfig"],
)
def test_a_manager_that_cannot_start_removes_what_a_previous_run_left(
    tmp_path: Path,
    run_main: Callable[[dict[str, str]], int],
    capsys: pytest.CaptureFixture[str],
    overrides: dict[str, str],
    fragment: str,
) -> None:
    left = _left_behind(tmp_path)
    assert run_main(_env(tmp_path, **overrides)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert [f.name for f in left if f.exists()] == []


def test_temporaries_are_removed_before_anything_else(
    tmp_path: Path, run_main: Callable[[dict[str, str]], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "secrets" / ".vrf.skey.a1b2c3d4"
    stale.parent.mkdir()
    stale.write_text("key material\n")
    seen: list[bool] = []

    def build(*_a: object) -> None:
        seen.append(stale.exists())
        raise RuntimeError("stop here")

    monkeypatch.setattr(entry, "build", build)
    assert run_main(_env(tmp_path)) == 2
    assert seen == [False]


@pytest.mark.parametrize("removable", [True, False])
def test_a_node_left_running_is_told_to_stop_or_stopped(
    tmp_path: Path,
    run_main: Callable[[dict[str, str]], int],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    procs: list[subprocess.Popen[bytes]],
    removable: bool,
) -> None:
    """It has run for longer than the start grace (its handler is installed): SIGHUP once the
    files are gone; when they cannot be removed, SIGTERM (then SIGKILL)."""
    monkeypatch.setattr(node_signal, "START_GRACE_S", 0.1)
    node, out = spawn(tmp_path, "cn-left-1", "--start-as-non-producing-node")
    procs.append(node)
    time.sleep(0.3)
    left = _left_behind(tmp_path)
    if not removable:
        left[2].unlink()
        left[2].mkdir()  # unlink() fails on it (EISDIR), like EACCES or EROFS would
    env = _env(tmp_path, LEASE_DURATION="12", CARDANO_NODE_PROCESS_NAME="cn-left-1")
    assert run_main(env) == 2
    err = capsys.readouterr().err.strip()
    if removable:
        assert f"signalled cardano-node [{node.pid}] to stop forging" in err
        deadline = time.monotonic() + 5
        while "hup" not in out.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "hup" in out.read_text()
    else:
        assert f"stopped cardano-node [{node.pid}] with SIGTERM" in err
        assert node.wait(5) == -signal.SIGTERM
