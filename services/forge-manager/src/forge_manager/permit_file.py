"""The forge permit: the deadline until which this pod's node may forge, for ``forge-guard``.

``forge-guard`` (``services/forge-guard``) runs cardano-node as its child in the node's own
container, outside the manager's failure domain. The manager writes here, before it installs the
credentials and on every successful renewal, the ``CLOCK_MONOTONIC`` instant (integer nanoseconds)
at which its leadership ends unless renewed: the same deadline at which the manager would demote
itself. CLOCK_MONOTONIC is system-wide on Linux, so both containers of a pod read the same clock.
If the manager stalls, crashes or is frozen, the permit passes and the guard removes the
credentials and signals the node, before any other pod may acquire the Lease.

The file is withdrawn (deleted) only after a completed demotion (credentials gone, node
signalled); while it exists, an expired deadline makes the guard act.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class PermitError(Exception):
    """The permit could not be written; the manager must not forge."""


class PermitFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._written: int | None = None

    @property
    def granted_until_ns(self) -> int | None:
        """The deadline last written by this process (None after a withdrawal)."""
        return self._written

    def grant(self, deadline_monotonic: float) -> None:
        """Atomically write ``deadline_monotonic`` (seconds of ``time.monotonic()``)."""
        ns = int(deadline_monotonic * 1_000_000_000)
        if ns == self._written:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, f"{ns}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.replace(self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise PermitError(f"cannot write the forge permit {self.path}: {exc}") from exc
        self._written = ns

    def withdraw(self) -> None:
        """Delete the permit (after the credentials are gone and the node was signalled)."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise PermitError(f"cannot remove the forge permit {self.path}: {exc}") from exc
        self._written = None
