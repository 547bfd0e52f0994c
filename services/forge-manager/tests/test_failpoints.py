"""Failpoints (a test hook): off by default at no cost, and where they freeze the manager."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from forge_manager import failpoints
from forge_manager.decision import Permit

from .fakes import Clock, LeaseStore
from .test_manager import Pod, _leader_told_to_stand_by

WAIT_S = 10.0


@pytest.fixture
def fp_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "failpoints"
    failpoints.configure(path)
    try:
        yield path
    finally:
        failpoints.configure(None)


def _wait(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _hits(fp: Path) -> list[str]:
    try:
        return Path(f"{fp}.hits").read_text().splitlines()
    except FileNotFoundError:
        return []


def test_off_unless_the_environment_names_a_file() -> None:
    env = {k: v for k, v in os.environ.items() if k != failpoints.ENV}
    probe = "import forge_manager.failpoints as f; print(f.active())"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "None", out.stderr
    env[failpoints.ENV] = "/nonexistent/failpoints"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "/nonexistent/failpoints", out.stderr


def test_off_costs_no_system_call(monkeypatch: pytest.MonkeyPatch) -> None:
    failpoints.configure(None)

    def forbidden(*_a: object, **_k: object) -> None:
        raise AssertionError("a failpoint that is off touched the file system")

    monkeypatch.setattr(Path, "read_text", forbidden)
    monkeypatch.setattr(Path, "open", forbidden)
    for point in failpoints.POINTS:
        failpoints.hit(point)


def test_an_unarmed_or_unknown_point_passes(fp_file: Path) -> None:
    failpoints.hit("before_install")  # no file at all
    fp_file.write_text("# nothing armed\nbefore_enable_signal = pause # another point\n")
    failpoints.hit("before_install")
    assert _hits(fp_file) == []


def test_an_unknown_action_is_logged_and_ignored(
    fp_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fp_file.write_text("before_install=sleep(5)\n")
    failpoints.hit("before_install")
    assert _hits(fp_file) == []
    assert "line 1: unknown action 'sleep(5)' for before_install (use pause or stop)" in (
        caplog.text
    )


def test_pause_holds_the_thread_until_disarmed(fp_file: Path) -> None:
    fp_file.write_text("before_install=pause\n")
    done = threading.Event()
    thread = threading.Thread(target=lambda: (failpoints.hit("before_install"), done.set()))
    thread.start()
    _wait(lambda: len(_hits(fp_file)) == 1, "the hit")
    point, action, pid, _at = _hits(fp_file)[0].split()
    assert (point, action, int(pid)) == ("before_install", "pause", os.getpid())
    time.sleep(0.2)
    assert not done.is_set(), "a paused point let the thread go on"
    fp_file.write_text("")
    thread.join(WAIT_S)
    assert done.is_set()


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_stop_stops_the_whole_process_exactly_there(tmp_path: Path) -> None:
    fp = tmp_path / "failpoints"
    fp.write_text("after_enable_check=stop\n")
    marker = tmp_path / "after"
    code = textwrap.dedent(
        f"""
        import threading, time
        from forge_manager import failpoints
        ticks = []
        threading.Thread(target=lambda: [ticks.append(1) or time.sleep(0.01)
                                         for _ in range(100000)], daemon=True).start()
        failpoints.hit("after_enable_check")
        open({str(marker)!r}, "w").write("resumed")
        """
    )
    env = {**os.environ, failpoints.ENV: str(fp)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        _wait(lambda: _state(proc.pid) == "T", "the process to stop itself")
        assert _hits(fp)[0].split()[:3] == ["after_enable_check", "stop", str(proc.pid)]
        time.sleep(0.2)
        assert _state(proc.pid) == "T" and not marker.exists()
        fp.write_text("")  # disarm, then continue it
        proc.send_signal(signal.SIGCONT)
        assert proc.wait(WAIT_S) == 0
        assert marker.read_text() == "resumed"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()


# ---- where the manager's points are ----------------------------------------------------------
def _paused_step(a: Pod, fp: Path, point: str, meanwhile: Callable[[], None]) -> None:
    """Run one cycle of ``a`` with ``point`` armed ``pause``; when the cycle is frozen there, run
    ``meanwhile`` (time passes, another pod acts), then let the cycle go on."""
    fp.write_text(f"{point}=pause\n")
    thread = threading.Thread(target=a.manager.step)
    thread.start()
    try:
        _wait(lambda: len(_hits(fp)) == 1, f"the manager to reach {point}")
        assert thread.is_alive()
        meanwhile()
    finally:
        fp.write_text("")
        thread.join(WAIT_S)
    assert not thread.is_alive()


def _taken_over(a: Pod, store: LeaseStore, clock: Clock) -> None:
    """pod-0 stands still past its lease; pod-1 takes the Lease (written directly: a second
    manager in this process would pass the same armed point)."""
    clock.advance(a.settings.lease_duration + 1)
    assert store.record is not None
    store.write(store.record.resource_version, "pod-1", "taken-over")


@pytest.mark.parametrize(
    ("point", "caught_before"),
    [("before_install", "install"), ("before_enable_signal", "enable")],
)
def test_a_manager_paused_at_a_failpoint_acts_on_no_stale_decision(
    world: tuple[Path, LeaseStore, Clock], fp_file: Path, point: str, caught_before: str
) -> None:
    a, _b, clock = _leader_told_to_stand_by(world)
    store = world[1]
    a.permit = Permit(True, "this region forges again")
    clock.advance(1)
    _paused_step(a, fp_file, point, lambda: _taken_over(a, store, clock))
    assert a.sighups()[1] == 1, "pod-0 sent an enabling SIGHUP after its deadline"
    assert not a.files.any_present()
    assert a.metric("cardano_forge_stale_decisions_total", action=caught_before) == 1


def test_after_enable_check_is_the_window_forge_guard_covers(
    world: tuple[Path, LeaseStore, Clock], fp_file: Path
) -> None:
    """Past the last check the enabling SIGHUP goes out even after a pause: this is the window
    that only forge-guard closes (it removed the files at the permit's deadline, so the SIGHUP
    finds none). The point sits exactly there."""
    a, _b, clock = _leader_told_to_stand_by(world)
    store = world[1]
    a.permit = Permit(True, "this region forges again")
    clock.advance(1)

    sent_before = len(a.signals.sent)

    def guard_revokes_and_lease_expires() -> None:
        # Installed, not yet signalled (metrics would wait for the lock the paused cycle holds).
        assert a.files.all_present() and len(a.signals.sent) == sent_before
        _taken_over(a, store, clock)
        a.files.remove()  # what forge-guard does at the permit's deadline

    _paused_step(a, fp_file, "after_enable_check", guard_revokes_and_lease_expires)
    assert a.sighups()[1] == 2 and not a.files.any_present()
    assert a.metric("cardano_forge_stale_decisions_total", action="enable") is None
