"""Finding cardano-node, telling whether it is up, and sending it SIGHUP.

* The node is found by its **exact** process name in the shared process namespace: the kernel's
  ``comm`` (``/proc/PID/comm``, at most 15 characters) or the base name of ``argv[0]``; never a
  substring of the command line (a shell running ``tail cardano-node.log`` is not the node). When
  ``CARDANO_NODE_PID_FILE`` is set, the PID in that file is used instead.
* "Up" means a ``connect()`` to its socket succeeds: a crashed node leaves a stale socket file.
* :class:`NodeWatcher` remembers, per node instance (its PIDs), whether the socket has answered
  while it ran. A new PID is a restart; the new instance is "booting" until its socket answers,
  and then it is signalled again (the node ignores a SIGHUP before its consensus layer is up).
* A node running without ``--start-as-non-producing-node`` boots forging whenever the credential
  files are present; the watcher reports it so the manager can log and count it loudly.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from forge_manager.decision import NodeView

NON_PRODUCING_FLAG = "--start-as-non-producing-node"
# Both spellings: cardano-node 8.7.2 to 10.5.0 know only --non-producing-node (an alias later).
NON_PRODUCING_FLAGS = (NON_PRODUCING_FLAG, "--non-producing-node")
COMM_MAX = 15  # TASK_COMM_LEN - 1


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


def find_node_pids(name: str, pid_file: Path | None, proc: Path = Path("/proc")) -> tuple[int, ...]:
    """PIDs of cardano-node (sorted); empty when none is found."""
    own = os.getpid()
    if pid_file is not None:
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return ()
        return (pid,) if pid > 0 and pid != own and _alive(proc, pid) else ()
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


def send_sighup(pids: tuple[int, ...]) -> None:
    """SIGHUP every node process; :class:`SignalError` when none can be signalled."""
    if not pids:
        raise SignalError("not_found", "cardano-node process not found")
    failures: list[str] = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            failures.append(f"{pid}: gone")
        except PermissionError:
            failures.append(f"{pid}: permission denied (run as the node's UID)")
        except OSError as exc:
            failures.append(f"{pid}: {errno.errorcode.get(exc.errno or 0, str(exc))}")
    if failures:
        reason = "permission_denied" if any("permission" in f for f in failures) else "not_found"
        raise SignalError(reason, "SIGHUP to cardano-node failed: " + ", ".join(failures))


@dataclass
class NodeWatcher:
    """Observes the node; remembers which instance has booted and whether the flag is missing."""

    process_name: str
    pid_file: Path | None
    socket_path: Path
    proc: Path = Path("/proc")
    _booted_pids: tuple[int, ...] | None = None
    _flag_missing_seen: bool = False
    _last_pids: tuple[int, ...] = ()

    def observe(self) -> NodeView:
        pids = find_node_pids(self.process_name, self.pid_file, self.proc)
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
        )
