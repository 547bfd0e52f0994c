"""Judging whether another region is alive, on this pod's own monotonic clock.

A region's local leader renews a *heartbeat Lease* of its own in the coordination API at least
every heartbeat interval (``<POOL_LEASE_NAME>-<region>``, the way kubelets heartbeat through
``kube-node-lease``; it keeps the CardanoForgeCluster itself free of a write every few seconds).
This pod never compares the written ``renewTime`` with its own clock: it notes *when it saw the
record change* (its resourceVersion, on this pod's monotonic clock), as a Lease follower does, so
clock skew between regions does not matter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from forge_manager.cluster.model import RegionRecord
from forge_manager.cluster.policy import PeerView

NEVER = float("-inf")


@dataclass
class _Seen:
    token: str
    changed_at: float
    confirmed: bool


class LivenessTracker:
    """Remembers, per region, the last heartbeat seen and when it changed. Not thread-safe:
    owned by the coordination loop."""

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}

    def observe(
        self,
        records: Iterable[RegionRecord],
        heartbeats: Mapping[str, str],
        now: float,
        seen_at: Mapping[str, float] | None = None,
    ) -> tuple[PeerView, ...]:
        """One successful read: every region's resource, and each heartbeat Lease's
        resourceVersion by region. A region without a heartbeat Lease has never been alive.

        ``seen_at``: when a watch first saw each region's current heartbeat (it can be late,
        never early); a change is timed from then instead of from ``now``, so a region goes
        stale ``stale_after`` after its last heartbeat was written, not after a poll saw it.
        A heartbeat seen for the first time is still timed from ``now`` (possibly alive:
        deferring to it is the safe side)."""
        for region, token in heartbeats.items():
            seen = self._seen.get(region)
            if seen is None:
                self._seen[region] = _Seen(token, now, confirmed=False)
            elif seen.token != token:
                at = now if seen_at is None else min(now, seen_at.get(region, now))
                seen.token, seen.confirmed = token, True
                seen.changed_at = max(at, seen.changed_at)
        for gone in set(self._seen) - set(heartbeats):
            del self._seen[gone]
        views: list[PeerView] = []
        for rec in records:
            seen = self._seen.get(rec.name)
            if seen is None:
                views.append(PeerView(rec, NEVER, confirmed=False))
            else:
                views.append(PeerView(rec, seen.changed_at, seen.confirmed))
        return tuple(views)

    def forget(self) -> None:
        """Start over (after losing local leadership old observations are no evidence)."""
        self._seen.clear()
