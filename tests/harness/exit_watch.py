"""Ends the forging record of a node stand-in that died without saying so.

A stand-in appends ``exited`` to its event log when it ends on SIGTERM or SIGINT. One killed
with SIGKILL writes nothing: by forge-guard or the forge manager stopping a node whose
credentials cannot be removed (SIGKILL after their grace, when the stand-in is slow to go on a
loaded machine), or by the harness. Its forging interval would stay open for the rest of the run
and overlap every later forger. :class:`ExitWatch` holds a pidfd for every stand-in process it
sees (polling each pod's :meth:`~tests.harness.forge_pod.ForgePod.node_pid`) and, when one ends
without an ``exited`` or ``killed`` event of its own, appends ``killed`` with the time it noticed
(CLOCK_BOOTTIME), at most one poll after the death: never earlier than it happened, so it can
only lengthen an interval, never hide an overlap. A stand-in that lived less than one poll is
not seen; it cannot have been signalled to forge in that time.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable, Sequence

from tests.harness.forge_pod import ForgePod

POLL_S = 0.05


class ExitWatch:
    def __init__(self, pods: Callable[[], Sequence[ForgePod]], poll: float = POLL_S) -> None:
        self._pods = pods
        self._poll = poll
        self._stop = threading.Event()
        self._fds: dict[int, tuple[int, ForgePod]] = {}
        """pidfd -> (pid, its pod)."""
        self._seen: set[tuple[str, int]] = set()
        self._thread = threading.Thread(target=self._run, name="exit-watch", daemon=True)
        self.recorded: list[tuple[str, int]] = []
        """(pod name, pid) of every death this watch recorded."""

    def start(self) -> ExitWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for fd in list(self._fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._open_new()
            if not self._fds:
                self._stop.wait(self._poll)
                continue
            try:
                readable, _, _ = select.select(list(self._fds), [], [], self._poll)
            except (OSError, ValueError):
                readable = []
            for fd in readable:
                pid, pod = self._fds.pop(fd)
                with contextlib.suppress(OSError):
                    os.close(fd)
                if not _ended(pod, pid):
                    pod.record_killed(pid)
                    self.recorded.append((pod.name, pid))

    def _open_new(self) -> None:
        for pod in list(self._pods()):
            with contextlib.suppress(Exception):
                pid = pod.node_pid()
                if pid is None or (pod.node_name, pid) in self._seen:
                    continue
                fd = os.pidfd_open(pid)
                self._seen.add((pod.node_name, pid))
                self._fds[fd] = (pid, pod)


def _ended(pod: ForgePod, pid: int) -> bool:
    """The stand-in recorded its own end (or the harness its kill); False when unreadable."""
    try:
        events = pod.events()
    except (OSError, ValueError):
        return False
    return any(e["pid"] == pid and e["event"] in ("exited", "killed") for e in events)
