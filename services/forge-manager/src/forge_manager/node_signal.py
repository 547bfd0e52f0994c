"""Finding cardano-node, telling whether it is up, and sending it SIGHUP.

* The node is found by its **exact** process name in the shared process namespace: the kernel's
  ``comm`` (``/proc/PID/comm``, at most 15 characters) or the base name of ``argv[0]``; never a
  substring of the command line (a shell running ``tail cardano-node.log`` is not the node). When
  ``CARDANO_NODE_PID_FILE`` is set, the PID in that file is used instead, and only when that
  process carries the same exact name: a file naming a wrapper shell (or a PID since reused by
  another program) is "node not found", never a process to signal.
* :class:`NodeWatcher` holds a pidfd (``os.pidfd_open``) for each node process it found and
  signals through it (``signal.pidfd_send_signal``): a pidfd refers to one process, so a PID
  reused after the node exited cannot be signalled by mistake. The name is checked after the
  pidfd was opened and the process is then confirmed alive through the pidfd, so the name read
  belongs to the process the pidfd holds. Without pidfd support (Linux before 5.3) the name is
  checked again right before ``kill()``.
* "Up" means a ``connect()`` to its socket succeeds: a crashed node leaves a stale socket file.
* :class:`NodeWatcher` remembers, per node instance (its PIDs), whether the socket has answered
  while it ran. A new PID is a restart; the new instance is "booting" until its socket answers,
  and then it is signalled again (the node ignores a SIGHUP before its consensus layer is up).
* A node running without ``--start-as-non-producing-node`` boots forging whenever the credential
  files are present; the watcher reports it so the manager can log and count it loudly.
* A node process that was already running when the manager started (its start time, field 22 of
  ``/proc/PID/stat``, lies more than :data:`START_GRACE_S` before the manager's) is not "fresh":
  if its socket does not answer it may be hung while forging on what an earlier manager gave it,
  or booting, and nobody can tell, so it gets no start-up credentials (see
  :class:`forge_manager.decision.NodeView`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from forge_manager.decision import NodeView

NON_PRODUCING_FLAG = "--start-as-non-producing-node"
# Both spellings: cardano-node 8.7.2 to 10.5.0 know only --non-producing-node (an alias later).
NON_PRODUCING_FLAGS = (NON_PRODUCING_FLAG, "--non-producing-node")
COMM_MAX = 15  # TASK_COMM_LEN - 1

STOP_GRACE_S = 0.5
"""Seconds a node told to stop (SIGTERM) gets before SIGKILL; see :meth:`NodeWatcher.stop`."""
KILL_WAIT_S = 1.0
"""Seconds to wait for the processes to end after SIGKILL."""

START_GRACE_S = 5.0
"""A node process that started less than this before the manager counts as starting with it
(booting: start-up credentials, no signal); an older one was running before the manager
started (see ``NodeView.fresh``). Five seconds: a real node's SIGHUP handler is installed and
its socket cannot have answered (the ledger is still loading) that soon after its start."""


class SignalError(Exception):
    """The node could not be signalled; ``reason`` is a short metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _cmdline(proc: Path, pid: int) -> list[str] | None:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]] if raw else []


def process_matches(proc: Path, pid: int, name: str) -> bool:
    """True when process ``pid`` is named exactly ``name`` (comm or basename of argv[0])."""
    argv = _cmdline(proc, pid)
    if argv is None:
        return False
    if argv and os.path.basename(argv[0]) == name:
        return True
    if len(name) > COMM_MAX:
        return False  # comm is truncated; only argv[0] can match such a name exactly
    try:
        comm = (proc / str(pid) / "comm").read_text().rstrip("\n")
    except OSError:
        return False
    return comm == name


def _alive(proc: Path, pid: int) -> bool:
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def pid_file_node(
    pid_file: Path, name: str, proc: Path = Path("/proc")
) -> tuple[tuple[int, ...], str]:
    """The node named by ``pid_file``: ``((pid,), "")``, or ``((), why)`` when the file names a
    live process that is not called ``name`` (``why`` is empty when the file is absent, not a
    PID, or names no live process: the node has not written it yet or has exited)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return (), ""
    if pid <= 0 or pid == os.getpid() or not _alive(proc, pid):
        return (), ""
    if not process_matches(proc, pid, name):
        argv = _cmdline(proc, pid) or []
        what = os.path.basename(argv[0]) if argv else "?"
        return (), (
            f"CARDANO_NODE_PID_FILE {pid_file} names PID {pid} ({what}), not a process named "
            f"{name!r}: not signalling it (write the node's own PID, e.g. exec the node from "
            "its wrapper, or fix CARDANO_NODE_PROCESS_NAME)"
        )
    return (pid,), ""


def find_node_pids(name: str, pid_file: Path | None, proc: Path = Path("/proc")) -> tuple[int, ...]:
    """PIDs of cardano-node (sorted); empty when none is found."""
    own = os.getpid()
    if pid_file is not None:
        return pid_file_node(pid_file, name, proc)[0]
    found: list[int] = []
    try:
        entries = list(proc.iterdir())
    except OSError:
        return ()
    for entry in entries:
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid != own and process_matches(proc, pid, name) and _alive(proc, pid):
            found.append(pid)
    return tuple(sorted(found))


def boot_seconds() -> float:
    """Seconds since boot on the clock of ``/proc/PID/stat``'s start times (CLOCK_BOOTTIME)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def started_at(pid: int, proc: Path = Path("/proc")) -> float | None:
    """When ``pid`` started, in seconds since boot (field 22 of ``/proc/PID/stat``); None when
    it cannot be read."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def runs_non_producing(pid: int, proc: Path = Path("/proc")) -> bool | None:
    """Whether ``pid`` was started non-producing, in either spelling (None: cannot tell)."""
    argv = _cmdline(proc, pid)
    if argv is None:
        return None
    return any(flag in argv[1:] for flag in NON_PRODUCING_FLAGS)


def socket_answers(path: Path, timeout: float = 0.25) -> bool:
    """True when a connect() to the unix socket ``path`` succeeds."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    return True


def _kill_failure(pid: int, exc: OSError) -> str:
    if isinstance(exc, ProcessLookupError):
        return f"{pid}: gone"
    if isinstance(exc, PermissionError):
        return f"{pid}: permission denied (run as the node's UID)"
    return f"{pid}: {errno.errorcode.get(exc.errno or 0, str(exc))}"


def _raise_failures(failures: list[str], what: str) -> None:
    if failures:
        reason = "permission_denied" if any("permission" in f for f in failures) else "not_found"
        raise SignalError(reason, f"{what} to cardano-node failed: " + ", ".join(failures))


def _pidfd_open(pid: int) -> int | None:
    """A pidfd for ``pid``; None when the kernel or Python has no pidfd support.
    Raises ProcessLookupError when the process is gone."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
            return None  # no pidfd support (or a seccomp profile denying it): fall back
        raise


@dataclass
class NodeWatcher:
    """Observes the node; remembers which instance has booted and whether the flag is missing;
    signals the instances it observed through pidfds."""

    process_name: str
    pid_file: Path | None
    socket_path: Path
    proc: Path = Path("/proc")
    _booted_pids: tuple[int, ...] | None = None
    _flag_missing_seen: bool = False
    _last_pids: tuple[int, ...] = ()
    manager_started: float = field(default_factory=boot_seconds)
    """When this manager started (seconds since boot): nodes older than it (less the start
    grace) were already running."""
    _pidfds: dict[int, int | None] = field(default_factory=dict)
    """pidfd (None without pidfd support) of every node process found in the last observation."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _find(self) -> tuple[tuple[int, ...], str]:
        if self.pid_file is not None:
            return pid_file_node(self.pid_file, self.process_name, self.proc)
        return find_node_pids(self.process_name, None, self.proc), ""

    def _hold(self, pids: tuple[int, ...]) -> tuple[int, ...]:
        """Open and keep a pidfd for every new PID, checking its name after the pidfd exists;
        close the pidfds of processes no longer found. Returns the PIDs held (lock held)."""
        held: list[int] = []
        for pid in pids:
            if pid in self._pidfds:
                held.append(pid)
                continue
            try:
                fd = _pidfd_open(pid)
            except OSError:
                continue  # exited since it was found
            if process_matches(self.proc, pid, self.process_name) and self._alive_fd(pid, fd):
                self._pidfds[pid] = fd
                held.append(pid)
            elif fd is not None:
                os.close(fd)
        for pid in [p for p in self._pidfds if p not in held]:
            fd = self._pidfds.pop(pid)
            if fd is not None:
                os.close(fd)
        return tuple(held)

    def _alive_fd(self, pid: int, fd: int | None) -> bool:
        if fd is None:
            return _alive(self.proc, pid)
        try:
            signal.pidfd_send_signal(fd, 0)
        except OSError:
            return False
        return True

    def observe(self) -> NodeView:
        found, problem = self._find()
        with self._lock:
            pids = self._hold(found)
        up = socket_answers(self.socket_path)
        if pids and pids not in (self._last_pids, self._booted_pids):
            self._booted_pids = None  # a new instance: booting until its socket answers
        self._last_pids = pids
        if up and pids:
            self._booted_pids = pids
        flags = [runs_non_producing(pid, self.proc) for pid in pids]
        if any(f is False for f in flags):
            self._flag_missing_seen = True
        elif pids and all(f is True for f in flags):
            self._flag_missing_seen = False
        booted = bool(pids) and self._booted_pids == pids
        return NodeView(
            pids=pids,
            socket_up=up,
            booted=booted or (up and not pids),
            flag_missing=self._flag_missing_seen,
            lookup_problem=problem,
            fresh=all(self._fresh(pid) for pid in pids),
        )

    def _fresh(self, pid: int) -> bool:
        """Started after the manager (or within the start grace before it); a start time that
        cannot be read counts as not fresh."""
        start = started_at(pid, self.proc)
        return start is not None and start >= self.manager_started - START_GRACE_S

    def _signal_one(self, pid: int, signum: signal.Signals) -> None:
        """Through the pidfd held for ``pid``; raises OSError (ProcessLookupError when the
        instance observed is gone, even when its PID was reused since)."""
        with self._lock:
            fd = self._pidfds.get(pid)
        if fd is not None:
            signal.pidfd_send_signal(fd, signum)
            return
        # No pidfd (no pidfd support, or a PID not observed): check the name right before.
        if not process_matches(self.proc, pid, self.process_name):
            raise ProcessLookupError(errno.ESRCH, f"PID {pid} is not {self.process_name}")
        os.kill(pid, signum)

    def signal(self, pids: tuple[int, ...], signum: signal.Signals) -> None:
        """Send ``signum`` to every process of ``pids``; :class:`SignalError` on any failure."""
        if not pids:
            raise SignalError("not_found", "cardano-node process not found")
        failures: list[str] = []
        for pid in pids:
            try:
                self._signal_one(pid, signum)
            except OSError as exc:
                failures.append(_kill_failure(pid, exc))
        _raise_failures(failures, signum.name)

    def send_sighup(self, pids: tuple[int, ...]) -> None:
        self.signal(pids, signal.SIGHUP)

    def _running(self, pid: int) -> bool:
        """The instance observed as ``pid`` has not exited (zombies have)."""
        with self._lock:
            fd = self._pidfds.get(pid)
        if fd is None:
            return _alive(self.proc, pid) and process_matches(self.proc, pid, self.process_name)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return not poller.poll(0)  # a pidfd becomes readable when its process exits

    def _wait_gone(self, pids: tuple[int, ...], seconds: float) -> tuple[int, ...]:
        """Wait (bounded) until every process has exited; returns those still running."""
        deadline = time.monotonic() + seconds
        while True:
            running = tuple(p for p in pids if self._running(p))
            if not running or time.monotonic() >= deadline:
                return running
            time.sleep(0.02)

    def stop(self, pids: tuple[int, ...], grace: float = STOP_GRACE_S) -> str:
        """Stop the node: SIGTERM, then SIGKILL to whatever still runs after ``grace`` seconds.

        Returns the signal that ended it (``"SIGTERM"`` or ``"SIGKILL"``); raises
        :class:`SignalError` when it could not be signalled or still runs after SIGKILL."""
        self.signal(pids, signal.SIGTERM)
        running = self._wait_gone(pids, grace)
        if not running:
            return "SIGTERM"
        try:
            self.signal(running, signal.SIGKILL)
        except SignalError:
            if any(self._running(p) for p in running):
                raise
        left = self._wait_gone(running, KILL_WAIT_S)
        if left:
            raise SignalError("not_found", f"cardano-node {list(left)} still runs after SIGKILL")
        return "SIGKILL"

    def close(self) -> None:
        with self._lock:
            for fd in self._pidfds.values():
                if fd is not None:
                    os.close(fd)
            self._pidfds.clear()
