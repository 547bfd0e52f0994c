"""Failpoints: named places where a test can freeze this process. A test hook, off in production.

In the manner of etcd's gofail: the code calls :func:`hit` with a point's name where a pause
matters for safety, and a fault-injection test arms that point to freeze the real manager exactly
there, between a decision and the action it leads to. A SIGSTOP from outside lands there only by
chance.

**Off unless** the environment variable ``FORGE_MANAGER_FAILPOINTS`` names a file when this
module is first imported. The chart never sets it (``tests/chart/test_chart_failpoints.py``).
Off, :func:`hit` is one comparison with None: no system call, no allocation.

The file holds one ``point=action`` a line (``#`` starts a comment); it is read at every pass of
an armed process, so a test arms and disarms points by rewriting it. A point not listed, a
missing or unreadable file: the point passes. Actions:

* ``pause`` — the calling thread waits, re-reading the file every :data:`POLL_S`, while the file
  arms this point with ``pause`` (at most :data:`MAX_PAUSE_S`). Other threads run on until they
  need a lock the paused thread holds (in the manager: the reconcile lock, which the deadline
  guard, the cluster coordinator and ``/metrics`` take too).
* ``stop`` — the process stops itself (SIGSTOP to its own PID), as a freeze from outside would
  stop every thread, but exactly here; the test continues it with SIGCONT. A point still armed
  stops the process again at its next pass: disarm before continuing.

Each hit appends ``<point> <action> <pid> <CLOCK_BOOTTIME seconds>`` to ``<file>.hits`` before
acting, so the test knows the point was reached, by which process and when.

The points are :data:`POINTS`, all in :meth:`forge_manager.manager.ForgeManager._reconcile`.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from forge_manager.clock import now

ENV = "FORGE_MANAGER_FAILPOINTS"
POLL_S = 0.02
MAX_PAUSE_S = 3600.0
"""A paused thread goes on after this long even if the file still arms its point."""
ACTIONS = ("pause", "stop")

POINTS = {
    "before_install": "a decision to install the credentials was taken (and the forge permit "
    "written); the deadline and the cluster permit are about to be checked again",
    "before_enable_signal": "a decision to send the enabling SIGHUP was taken (the credentials "
    "are installed); the deadline and the cluster permit are about to be checked again",
    "after_enable_check": "the last check before the enabling SIGHUP passed; the SIGHUP is "
    "next (the window forge-guard covers)",
}

log = logging.getLogger("forge_manager")


class _Config:
    file: Path | None = None


_config = _Config()


def configure(path: str | os.PathLike[str] | None) -> None:
    """Arm failpoints from ``path`` (None: off). Done once from the environment at import."""
    _config.file = Path(path) if path else None


def active() -> Path | None:
    """The failpoint file, None when failpoints are off."""
    return _config.file


def hit(point: str) -> None:
    """Pass ``point``: freeze here when a test armed it, else nothing."""
    path = _config.file
    if path is None:
        return
    _act(path, point)


def armed(path: Path, point: str) -> str | None:
    """The action ``path`` arms ``point`` with, None when it does not."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        name, sep, action = line.partition("=")
        if not sep or name.strip() != point:
            continue
        action = action.strip()
        if action in ACTIONS:
            return action
        log.error(
            "failpoint file %s line %d: unknown action %r for %s (use pause or stop); ignored",
            path,
            number,
            action,
            point,
        )
    return None


def _act(path: Path, point: str) -> None:
    action = armed(path, point)
    if action is None:
        return
    line = f"{point} {action} {os.getpid()} {now():.6f}\n"
    with Path(f"{path}.hits").open("a") as hits:
        hits.write(line)
    log.warning("failpoint %s: %s", point, action)
    if action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    deadline = time.monotonic() + MAX_PAUSE_S
    while armed(path, point) == "pause" and time.monotonic() < deadline:
        time.sleep(POLL_S)


configure(os.environ.get(ENV) or None)
