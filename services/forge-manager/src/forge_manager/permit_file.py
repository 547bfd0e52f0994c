"""The forge permit: the deadline until which this pod's node may forge, for ``forge-guard``.

``forge-guard`` (``services/forge-guard``) runs cardano-node as its child in the node's own
container, outside the manager's failure domain. The manager writes here, before it installs the
credentials and on every successful renewal, the instant at which its leadership ends unless
renewed: the same deadline at which the manager would demote itself (capped by the pool-wide
Lease's). If the manager stalls, crashes or is frozen, the permit passes and the guard removes the
credentials and stops the node forging, before any other pod may acquire the Lease.

Format, one line: ``boottime <ns> <boot id>``: integer nanoseconds of ``CLOCK_BOOTTIME``
(:mod:`forge_manager.clock`; system-wide, and it counts a host suspend) and the kernel's boot id,
so that a file kept across a reboot (the clock restarted) is not believed. The first word names
the clock and versions the format: the older format was a bare ``CLOCK_MONOTONIC`` integer. A
guard of either version reads the other's file as invalid and removes the credentials whenever
they appear under it, so a mixed pair fails closed (its node forges at most one guard interval
at a time, never unguarded) rather than misreading a deadline.

Every write is a new file renamed into place. forge-guard never writes this file; it remembers
which file (identity and content) it revoked and acts on each once. So the manager writes a new
file whenever it installs credentials, even under an unchanged deadline (``rewrite``): credentials
installed after a revocation must come with a permit the guard has not revoked yet.

The file is withdrawn (deleted) only after a completed demotion (credentials gone, node
signalled); while it exists, a passed deadline makes the guard act. A file found at start (left
by this pod's previous manager) is adopted: withdrawn once demotion is complete, enforced by the
guard until then.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from forge_manager import clock


class PermitError(Exception):
    """The permit could not be written; the manager must not forge."""


class PermitFile:
    def __init__(self, path: Path, boot_id: Callable[[], str] = clock.boot_id) -> None:
        self.path = path
        self._boot_id = boot_id
        self._written: int | None = None
        self._left_behind = os.path.lexists(path)

    @property
    def granted_until_ns(self) -> int | None:
        """The deadline last written by this process (None after a withdrawal)."""
        return self._written

    @property
    def outstanding(self) -> bool:
        """A permit file exists that this process wrote or found at start: withdraw it once
        demotion is complete."""
        return self._written is not None or self._left_behind

    def grant(self, deadline: float, *, rewrite: bool = False) -> None:
        """Atomically write ``deadline`` (seconds of :func:`forge_manager.clock.now`).

        An unchanged deadline is not written again unless ``rewrite``."""
        ns = int(deadline * 1_000_000_000)
        if ns == self._written and not rewrite:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            line = f"boottime {ns} {self._boot_id()}\n"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.replace(self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise PermitError(f"cannot write the forge permit {self.path}: {exc}") from exc
        self._written = ns
        self._left_behind = False

    def withdraw(self) -> None:
        """Delete the permit (after the credentials are gone and the node was signalled)."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise PermitError(f"cannot remove the forge permit {self.path}: {exc}") from exc
        self._written = None
        self._left_behind = False
