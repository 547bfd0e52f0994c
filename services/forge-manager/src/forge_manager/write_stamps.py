"""Recognising this process's own Lease writes whose answers were lost.

Every acquire or renew writes a stamp of its own into the Lease (the ``renewTime``, to the
microsecond) and is remembered here with the monotonic time at which it was *sent*. A write can
be applied by the API server while its answer never arrives (a timeout, a reset connection). When
a later read finds the Lease held under this process's identity and carrying one of these stamps,
that write was applied and nobody has written since: the record is ours, and the leadership
deadline counts from when that write was sent, as if its answer had come. A record that carries
our identity but none of our stamps was written by someone else (a previous incarnation of the
pod) and is not ours.

Used by the pool-wide Lease (:mod:`forge_manager.cluster.pool_lease`). The local Lease's manager
keeps the same bookkeeping inline (``ForgeManager._sent``) and can adopt this class unchanged.
Not thread-safe: the owner holds its own lock.
"""

from __future__ import annotations

import collections

from forge_manager.lease import LeaseRecord

KEEP = 8
"""Stamps remembered: every cycle reads the Lease before it writes, so the last few suffice."""


class SentWrites:
    """The stamps of this process's recent writes and when each was sent."""

    def __init__(self, keep: int = KEEP) -> None:
        self._sent: collections.deque[tuple[str, float]] = collections.deque(maxlen=keep)

    def sent(self, stamp: str, at: float) -> None:
        """Remember a write about to be sent at monotonic time ``at``."""
        self._sent.append((stamp, at))

    def sent_at(self, rec: LeaseRecord | None, identity: str) -> float | None:
        """When this process sent the write that produced ``rec``; None if it did not."""
        if rec is None or rec.holder != identity or rec.renew_time is None:
            return None
        for stamp, at in reversed(self._sent):
            if stamp == rec.renew_time:
                return at
        return None
