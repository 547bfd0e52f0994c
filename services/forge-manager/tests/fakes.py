"""Test doubles at the project's own seams (LeaseBackend, NodeObserver, signalling)."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from forge_manager.credentials import CredentialError, CredentialFiles
from forge_manager.decision import NodeView
from forge_manager.lease import LeaseError, LeaseLost, LeaseRecord
from forge_manager.node_signal import SignalError
from forge_manager.switchover import Edits
from forge_manager.watch import LeaseObservation


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class LeaseStore:
    """One Lease with optimistic concurrency, shared by several FakeLease clients."""

    record: LeaseRecord | None = None
    _versions: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    down: bool = False

    def write(
        self,
        expected_rv: str | None,
        holder: str | None,
        stamp: str,
        released_by: str | None = None,
        transitions: int | None = None,
        edits: Mapping[str, str | None] | None = None,
    ) -> LeaseRecord:
        if self.down:
            raise LeaseError("ConnectionRefusedError: connection refused")
        current_rv = self.record.resource_version if self.record else None
        if expected_rv is not None and current_rv is None:
            raise LeaseLost("lease was deleted since it was read (404)")
        if expected_rv != current_rv:
            raise LeaseLost("lease changed since it was read (409)")
        if transitions is None:
            transitions = self.record.transitions if self.record else 0
        self.record = LeaseRecord(
            holder=holder,
            resource_version=str(next(self._versions)),
            duration_seconds=15,
            renew_time=stamp,
            transitions=transitions,
            released_by=released_by,
            uid="uid-1",
            annotations=self._edited(edits),
        )
        return self.record

    def _edited(self, edits: Mapping[str, str | None] | None) -> dict[str, str]:
        annotations = dict(self.record.annotations) if self.record else {}
        for key, value in (edits or {}).items():
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        return annotations

    def annotate(self, expected_rv: str | None, edits: Mapping[str, str | None]) -> LeaseRecord:
        """Someone (the CLI, a follower) changes only annotations, against ``expected_rv``
        (None: whatever the current version is, like an unconditional merge patch)."""
        if self.down:
            raise LeaseError("ConnectionRefusedError: connection refused")
        if self.record is None:
            raise LeaseLost("lease was deleted since it was read (404)")
        if expected_rv is not None and expected_rv != self.record.resource_version:
            raise LeaseLost("lease changed since it was read (409)")
        self.record = dataclasses.replace(
            self.record,
            resource_version=str(next(self._versions)),
            annotations=self._edited(edits),
        )
        return self.record


class FakeLease:
    def __init__(self, store: LeaseStore, identity: str) -> None:
        self.store = store
        self.identity = identity
        self.calls: list[str] = []
        self._stamps = itertools.count()
        self.apply_but_fail = False
        self.lose_writes = 0
        """The next this many writes time out without reaching the API server (not applied)."""
        self.hang: threading.Event | None = None
        """When set, a write waits (bounded) for this event first: a call blocked where no
        request timeout reaches, e.g. in the host name lookup."""
        self.hanging = threading.Event()

    def read(self) -> LeaseRecord | None:
        self.calls.append("read")
        if self.store.down:
            raise LeaseError("ConnectionRefusedError: connection refused")
        return self.store.record

    def _write(
        self,
        current: LeaseRecord | None,
        holder: str | None,
        stamp: str,
        transitions: int | None = None,
        edits: Mapping[str, str | None] | None = None,
    ) -> LeaseRecord:
        if self.hang is not None:
            self.hanging.set()
            self.hang.wait(30)
        if self.lose_writes > 0:
            self.lose_writes -= 1
            raise LeaseError("ReadTimeoutError: read timed out")
        released_by = current.holder if holder is None and current is not None else None
        rec = self.store.write(
            current.resource_version if current else None,
            holder,
            stamp,
            released_by,
            transitions,
            edits,
        )
        if self.apply_but_fail:
            raise LeaseError("ReadTimeoutError: read timed out")
        return rec

    def create_vacant(self) -> LeaseRecord:
        self.calls.append("create")
        if self.store.record is not None:
            raise LeaseLost("lease exists already (409)")
        return self._write(None, None, "")

    def acquire(
        self, current: LeaseRecord | None, stamp: str, edits: Edits | None = None
    ) -> LeaseRecord:
        self.calls.append("acquire")
        # client-go: every acquisition of an existing record is a transition, after a release too
        transitions = current.transitions + 1 if current is not None else 0
        return self._write(current, self.identity, stamp, transitions, edits)

    def renew(self, current: LeaseRecord, stamp: str, edits: Edits | None = None) -> LeaseRecord:
        self.calls.append("renew")
        return self._write(current, self.identity, stamp, edits=edits)

    def release(self, current: LeaseRecord, edits: Edits | None = None) -> LeaseRecord:
        self.calls.append("release")
        return self._write(current, None, self.new_renew_stamp(), edits=edits)

    def annotate(self, current: LeaseRecord, edits: Edits) -> LeaseRecord:
        self.calls.append("annotate")
        return self.store.annotate(current.resource_version, edits)

    def new_renew_stamp(self) -> str:
        return f"{self.identity}-{next(self._stamps)}"


@dataclass
class FakeNode:
    view: NodeView = field(
        default_factory=lambda: NodeView(
            pids=(42,), socket_up=True, booted=True, flag_missing=False
        )
    )

    def observe(self) -> NodeView:
        return self.view


@dataclass
class Signals:
    sent: list[tuple[int, ...]] = field(default_factory=list)
    fail: bool = False

    def __call__(self, pids: tuple[int, ...]) -> None:
        if not pids or self.fail:
            raise SignalError("not_found", "cardano-node process not found")
        self.sent.append(pids)


class FreezingFiles:
    """Real credential files with freeze points, for a manager frozen between its decision and
    its action (SIGSTOP, CPU throttling, a long GC pause).

    :meth:`freeze_at` arms a point once; when the manager reaches it, ``action`` runs (advance the
    clock, let another pod act) before the manager goes on. Points: ``any_present`` (read while
    the forging snapshot is taken, after its ``now``), ``install`` (before the files are written)
    and ``installed`` (after they were written, before any signal)."""

    def __init__(self, files: CredentialFiles) -> None:
        self.files = files
        self.sources = files.sources
        self.targets = files.targets
        self._armed: dict[str, Callable[[], None]] = {}
        self.fail_remove: str | None = None
        """When set (an error text such as "Permission denied"), :meth:`remove` leaves every file
        in place and raises, like an unlink that fails with EACCES or EROFS."""

    def freeze_at(self, point: str, action: Callable[[], None]) -> None:
        assert point in ("any_present", "install", "installed")
        self._armed[point] = action

    def _reach(self, point: str) -> None:
        action = self._armed.pop(point, None)
        if action is not None:
            action()

    def read_sources(self) -> tuple[bytes, bytes, bytes]:
        return self.files.read_sources()

    def any_present(self) -> bool:
        self._reach("any_present")
        return self.files.any_present()

    def all_present(self) -> bool:
        return self.files.all_present()

    def install(self) -> bool:
        self._reach("install")
        wrote = self.files.install()
        self._reach("installed")
        return wrote

    def remove(self) -> bool:
        if self.fail_remove is not None and self.files.any_present():
            raise CredentialError(
                "removing credentials failed: "
                + "; ".join(f"{t}: {self.fail_remove}" for t in self.targets if t.exists())
            )
        return self.files.remove()


@dataclass
class Stops:
    """The node-stopping seam: records what it was asked to stop and, like the real one, leaves
    ``node`` (when given) without a running process; ``fail`` makes it fail."""

    node: FakeNode | None = None
    stopped: list[tuple[int, ...]] = field(default_factory=list)
    how: str = "SIGTERM"
    fail: bool = False

    def __call__(self, pids: tuple[int, ...]) -> str:
        if not pids or self.fail:
            raise SignalError("not_found", "cardano-node process not found")
        self.stopped.append(pids)
        if self.node is not None:
            self.node.view = NodeView(pids=(), socket_up=False, booted=False, flag_missing=False)
        return self.how


# A node-like process: renames itself (comm) and writes "hup" for every SIGHUP into a file.
CHILD = """
import ctypes, signal, sys, time
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
out = open(sys.argv[2], "a")
def hup(*_):
    out.write("hup\\n"); out.flush()
signal.signal(signal.SIGHUP, hup)
if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
out.write("ready\\n"); out.flush()
while True:
    time.sleep(0.05)
"""


def spawn(tmp: Path, name: str, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Start a node-like process named ``name``; returns it and its SIGHUP log (bounded wait)."""
    out = tmp / f"{name}.out"
    out.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, name, str(out), *extra])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "ready" not in (out.read_text() if out.exists() else ""):
        time.sleep(0.02)
    return proc, out


class FakeWatch:
    """The watched Lease (``watch.WatchedLease``'s seam): what the test says the watch has seen,
    and when; ``observation`` None is a watch that is not live."""

    def __init__(self) -> None:
        self.observation: LeaseObservation | None = None
        self.resyncs = 0

    def see(self, record: LeaseRecord | None, at: float, version: str | None = None) -> None:
        """The watch delivers ``record`` (None: the Lease is gone) at ``at``."""
        if version is None:
            assert record is not None, "a missing Lease is seen at a version"
            version = record.resource_version
        self.observation = LeaseObservation(record, version, at)

    def observed(self) -> LeaseObservation | None:
        return self.observation

    def resync(self) -> None:
        self.resyncs += 1
