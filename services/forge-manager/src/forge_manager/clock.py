"""The one clock of every safety deadline: ``CLOCK_BOOTTIME``.

Leadership deadlines (the local Lease's and the pool-wide Lease's), a follower's "unchanged since
I saw it" timers, the liveness of other regions and the forge permit that ``forge-guard`` enforces
are all instants of this clock. Like ``CLOCK_MONOTONIC`` (``time.monotonic()``) it never jumps
with the wall clock and is system-wide on Linux, so the manager's and forge-guard's readings
compare across the containers of a pod. Unlike it, it keeps counting while the host is
suspended: a leader resumed after a suspend finds its deadline passed, as the other pods found
its Lease expired, instead of believing a deadline that stood still with it.

Waits (``threading.Event.wait``, ``time.sleep``) still time out on ``CLOCK_MONOTONIC``; they are
bounded (at most a retry period) and every decision re-reads this clock when they return.
"""

from __future__ import annotations

import time
from pathlib import Path

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def now() -> float:
    """Seconds of ``CLOCK_BOOTTIME``."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def boot_id() -> str:
    """This boot's id: a ``CLOCK_BOOTTIME`` instant means something only within one boot.

    Raises ``OSError`` when it cannot be read."""
    value = BOOT_ID_PATH.read_text().strip()
    if not value:
        raise OSError(f"{BOOT_ID_PATH} is empty")
    return value
