"""Finding the node by exact name or PID file, socket liveness, SIGHUP, restart detection."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from forge_manager import node_signal
from forge_manager.decision import (
    PERMIT_LOCAL_ONLY,
    CredentialAction,
    ForgingSnapshot,
    NodeView,
    decide_forging,
)
from forge_manager.node_signal import (
    NodeWatcher,
    SignalError,
    find_node_pids,
    runs_non_producing,
    socket_answers,
)

from .fakes import spawn


def test_found_by_exact_comm_not_by_argument_substring(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    node, _ = spawn(tmp_path, "cn-exact-1", "--start-as-non-producing-node")
    # Has the name only inside its arguments: must not match.
    decoy, _ = spawn(tmp_path, "decoy-proc", "cn-exact-1")
    procs += [node, decoy]
    assert find_node_pids("cn-exact-1", None) == (node.pid,)
    assert find_node_pids("cn-exact", None) == ()  # a prefix is not the name
    assert runs_non_producing(node.pid) is True
    assert runs_non_producing(decoy.pid) is False


def test_both_spellings_of_the_non_producing_flag(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """cardano-node 8.7.2 to 10.5.0 spell the flag --non-producing-node (the chart passes the
    spelling of the configured version); 10.5.1 and later --start-as-non-producing-node."""
    old, _ = spawn(tmp_path, "cn-flag-old", "run", "--non-producing-node")
    new, _ = spawn(tmp_path, "cn-flag-new", "run", "--start-as-non-producing-node")
    neither, _ = spawn(tmp_path, "cn-flag-none", "run", "--non-producing")
    procs += [old, new, neither]
    assert runs_non_producing(old.pid) is True
    assert runs_non_producing(new.pid) is True
    assert runs_non_producing(neither.pid) is False


def test_pid_file(tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    node, _ = spawn(tmp_path, "cn-pidf-0")
    procs.append(node)
    pid_file = tmp_path / "node.pid"
    pid_file.write_text(f"{node.pid}\n")
    assert find_node_pids("cn-pidf-0", pid_file) == (node.pid,)
    pid_file.write_text("garbage")
    assert find_node_pids("cn-pidf-0", pid_file) == ()
    node.kill()
    node.wait()
    pid_file.write_text(f"{node.pid}\n")
    assert find_node_pids("cn-pidf-0", pid_file) == ()


def test_sighup_is_delivered_or_reported(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    node, out = spawn(tmp_path, "cn-hup-1")
    procs.append(node)
    watcher = NodeWatcher("cn-hup-1", None, tmp_path / "node.socket")
    assert watcher.observe().pids == (node.pid,)
    watcher.send_sighup((node.pid,))
    deadline = time.monotonic() + 5
    while "hup" not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "hup" in out.read_text()
    with pytest.raises(SignalError) as exc:
        watcher.send_sighup(())
    assert exc.value.reason == "not_found"
    watcher.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_signals_go_through_a_pidfd_to_the_instance_observed(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Once the observed instance has exited, its PID is never signalled again (a reused PID
    would belong to another process); its pidfd is closed at the next observation."""
    node, _ = spawn(tmp_path, "cn-pidfd-1")
    procs.append(node)
    watcher = NodeWatcher("cn-pidfd-1", None, tmp_path / "node.socket")
    before = _open_fds()
    assert watcher.observe().pids == (node.pid,)
    assert _open_fds() == before + 1  # the pidfd held for it
    for _ in range(3):
        watcher.observe()
    assert _open_fds() == before + 1  # held once, not per observation
    node.kill()
    node.wait()
    with pytest.raises(SignalError, match="gone"):
        watcher.send_sighup((node.pid,))
    assert watcher.observe().pids == ()
    assert _open_fds() == before
    # A PID it never observed is signalled only when it carries the node's name.
    other, out = spawn(tmp_path, "not-the-node")
    procs.append(other)
    with pytest.raises(SignalError, match="gone"):
        watcher.send_sighup((other.pid,))
    time.sleep(0.2)
    assert "hup" not in out.read_text()
    watcher.close()


def test_socket_liveness_needs_a_listener_not_a_file(tmp_path: Path) -> None:
    path = tmp_path / "node.socket"
    assert not socket_answers(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    try:
        assert socket_answers(path)
    finally:
        srv.close()
    assert path.exists() and not socket_answers(path)  # stale socket file of a dead node


def test_watcher_tracks_boot_restart_and_missing_flag(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    path = tmp_path / "node.socket"
    watcher = NodeWatcher("cn-watch-1", None, path)
    assert watcher.observe().pids == ()
    first, _ = spawn(tmp_path, "cn-watch-1")  # no --start-as-non-producing-node
    procs.append(first)
    view = watcher.observe()
    assert view.pids == (first.pid,) and not view.socket_up and not view.booted
    assert view.flag_missing
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    try:
        assert watcher.observe().booted
    finally:
        srv.close()
    view = watcher.observe()
    assert view.booted and not view.socket_up  # same instance, socket gone: not "booting"
    first.send_signal(signal.SIGKILL)
    first.wait()
    os.unlink(path)
    second, _ = spawn(tmp_path, "cn-watch-1", "--start-as-non-producing-node")
    procs.append(second)
    view = watcher.observe()
    assert view.pids == (second.pid,) and not view.booted and not view.flag_missing


def test_a_pid_file_naming_another_process_is_not_the_node(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """A wrapper shell's PID in the file would get every SIGHUP while the node forges on."""
    wrapper, _ = spawn(tmp_path, "sh-wrapper")
    node, _ = spawn(tmp_path, "cn-pidf-1", "--start-as-non-producing-node")
    procs += [wrapper, node]
    pid_file = tmp_path / "node.pid"
    pid_file.write_text(f"{wrapper.pid}\n")
    assert find_node_pids("cn-pidf-1", pid_file) == ()
    watcher = NodeWatcher("cn-pidf-1", pid_file, tmp_path / "node.socket")
    view = watcher.observe()
    assert view.pids == ()
    assert view.lookup_problem.startswith(f"CARDANO_NODE_PID_FILE {pid_file} names PID")
    assert "not a process named 'cn-pidf-1'" in view.lookup_problem
    pid_file.write_text(f"{node.pid}\n")
    assert find_node_pids("cn-pidf-1", pid_file) == (node.pid,)
    view = watcher.observe()
    assert view.pids == (node.pid,) and view.lookup_problem == ""
    watcher.close()


@pytest.mark.parametrize(("extra", "ended_by"), [((), "SIGTERM"), (("--ignore-term",), "SIGKILL")])
def test_stop_terms_then_kills_after_the_grace(
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],
    extra: tuple[str, ...],
    ended_by: str,
) -> None:
    node, _ = spawn(tmp_path, "cn-stop-1", *extra)
    procs.append(node)
    watcher = NodeWatcher("cn-stop-1", None, tmp_path / "node.socket")
    assert watcher.observe().pids == (node.pid,)
    started = time.monotonic()
    assert watcher.stop((node.pid,), grace=0.3) == ended_by
    assert node.wait(5) == (-signal.SIGTERM if ended_by == "SIGTERM" else -signal.SIGKILL)
    if ended_by == "SIGKILL":
        assert time.monotonic() - started >= 0.3  # it had its grace first
    with pytest.raises(SignalError, match="gone"):
        watcher.stop((node.pid,))
    watcher.close()


def test_a_node_found_running_at_manager_start_gets_no_start_up_credentials(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its socket does not answer: hung (and perhaps forging) or booting, nobody can tell. Only
    an instance started after the manager (or within the start grace before it) is booting."""
    monkeypatch.setattr(node_signal, "START_GRACE_S", 0.2)
    old, _ = spawn(tmp_path, "cn-hung-1", "--start-as-non-producing-node")
    procs.append(old)
    time.sleep(0.5)  # the node has run for a while when the manager (re)starts
    watcher = NodeWatcher("cn-hung-1", None, tmp_path / "node.socket")

    def standby(view: NodeView) -> CredentialAction:
        return decide_forging(
            ForgingSnapshot(
                now=100.0,
                leading_until=None,
                permit=PERMIT_LOCAL_ONLY,
                eligible=True,
                ineligible_reason="",
                shutting_down=False,
                node=view,
                credentials_present=True,
                signalled=None,
            )
        ).credentials

    assert standby(watcher.observe()) is CredentialAction.REMOVE
    old.kill()
    old.wait()
    new, _ = spawn(tmp_path, "cn-hung-1", "--start-as-non-producing-node")  # after the manager
    procs.append(new)
    assert standby(watcher.observe()) is CredentialAction.INSTALL  # booting: its window
