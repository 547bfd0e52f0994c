"""The pure cluster-wide decision core: an immutable view in, one action and a reason out.

Run by a region's local leader every cycle, after it has read every CardanoForgeCluster and the
pool-wide Lease from the coordination API (in the manner of Patroni's ``Ha.run_cycle``; nothing
here does I/O, and tests assert on the reason strings). The pool-wide Lease is the mutex: a pod
forges only while it holds its local Lease *and* the pool-wide Lease, both renewed within their
deadlines. This module decides whether to compete for the pool-wide Lease, keep it, or give it up.

Rules, in the order :func:`decide` applies them (the first that matches wins):

1. Only the local leader takes part. Anything else releases the pool-wide Lease if it holds it.
2. Fail closed: this region's resource missing or invalid, the pool-wide Lease held but not
   renewed within the renew deadline, no successful read of the resources within the renew
   deadline, or an unreadable pool-wide Lease -> not forging. Such a decision also marks this
   region *ineligible* (``ClusterDecision.ineligible``): it publishes ``Eligible=False`` with
   the reason, and other regions stop deferring to it (a region that heartbeats but cannot act
   would otherwise block everyone).
3. ``Disabled`` (from the spec, or from an override that has not expired) -> never forges.
4. Holding the pool-wide Lease, hand over when a *confirmed live* region outranks this one:
   a region in the ``Enabled`` state outranks a ``Priority-based`` holder; between
   ``Priority-based`` regions a strictly lower effective priority outranks. An ``Enabled`` holder
   is never preempted, and a tie never preempts: the holder keeps it (no ping-pong).
5. Not holding it: while the Lease has not expired in *this* pod's observation, wait. A Lease
   held by someone else and a Lease whose holder was cleared by anyone but that holder count
   alike: the same record unchanged for the lease duration, or nothing (a clear or a restore says
   nothing about whether the old holder stopped forging). A Lease that does not exist never
   expires: the coordinator creates it vacant, and that record then counts like any other. Only
   a release by the holder this pod saw last frees it at once. When it is free, acquire it only
   if this region ranks first among this region and every other region that may be alive;
   otherwise defer to the better region.

Liveness of another region is judged on this pod's monotonic clock (see :mod:`.liveness`): a
region is *possibly alive* while its heartbeat Lease changed less than ``stale_after`` seconds ago
in our observation (one seen for the first time counts as possibly alive: deferring to it is the
safe side), and *confirmed alive* when, in addition, we have seen its heartbeat change at least
once since we started watching. Deferring needs only "possibly alive"; giving the Lease away needs
"confirmed alive", so a holder never hands over to a region that died before we started watching.
A dead region blocks nobody for longer than ``stale_after``.

A region is a candidate only with a live heartbeat *and* a published status that is current and
eligible; a region renews its heartbeat only once its status for this cycle is written (the
heartbeat vouches for the status), so a region that cannot publish stops counting after
``stale_after``.

A region's rank: ``Enabled`` before ``Priority-based``, then lower effective priority, then name.
Effective priority = override or spec priority, + :data:`~.model.HEALTH_PENALTY` from the moment
the consecutive health-check failures reach the threshold until they walk back to 0.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from forge_manager.cluster.model import (
    Effective,
    ForgeState,
    RegionRecord,
    effective,
    holder_region,
)

ELIGIBLE = (ForgeState.ENABLED, ForgeState.PRIORITY_BASED)


class ClusterAction(enum.StrEnum):
    ACQUIRE = "acquire_pool_lease"
    """Take the free or expired pool-wide Lease; forge once the write succeeded."""
    KEEP = "keep"
    """Renew the pool-wide Lease and keep forging."""
    HAND_OVER = "hand_over"
    """Remove credentials, signal the node, then release the Lease for a better region."""
    STEP_DOWN = "step_down"
    """As ``hand_over``, for a reason of this region's own (disabled, errors, lost leadership)."""
    STAND_BY = "stand_by"
    """Not forging; leave the pool-wide Lease alone."""


@dataclass(frozen=True)
class PeerView:
    """Another region as this pod sees it."""

    record: RegionRecord
    changed_at: float
    """Monotonic time at which this pod saw its heartbeat change (or first saw it); -inf when
    it has no heartbeat."""
    confirmed: bool
    """This pod has seen its heartbeat change at least once since it started watching."""


@dataclass(frozen=True)
class PoolLeaseView:
    """The pool-wide Lease in this pod's observation."""

    holder: str | None
    """``<region>/<pod>``; None when nobody holds it (released, cleared, deleted, never created)."""
    expired: bool
    """May be taken: released by the holder this pod saw last, or the same record (held or
    vacant) unchanged for its duration on this pod's monotonic clock. Never while absent."""
    mine: bool
    """Written by this process and carrying this pod's identity."""
    leading: bool
    """``mine`` and the last successful renewal was sent less than the renew deadline ago."""
    error: str | None = None
    """The last read failed; the other fields describe the last good read."""
    absent: bool = False
    """The Lease does not exist (deleted, or never created): a local leader creates it vacant
    (the coordinator does, on ``stand_by``), then waits for that record like any other."""
    released: bool = False
    """Vacated by a release of the holder this pod saw last: free at once."""
    duration: float = 0.0
    """Seconds the record must stay unchanged in this pod's observation before it expires."""
    expires_at: float | None = None
    """This pod's clock at which it expires if it stays unchanged (when it was released: the
    moment that was seen); None when it is ours or does not exist."""


@dataclass(frozen=True)
class HealthView:
    consecutive_failures: int
    threshold: int
    demoted: bool
    """The penalty is in force: failures reached the threshold and have not walked back to 0."""


@dataclass(frozen=True)
class ClusterView:
    now: float
    """Monotonic seconds."""
    now_wall: datetime
    """UTC wall clock, used only against an operator's ``override.expiresAt``."""
    region: str
    pod: str
    local_leader: bool
    own: RegionRecord | None
    own_error: str | None
    """Why ``own`` is missing (not found, could not be created...)."""
    peers: tuple[PeerView, ...]
    read_ok: bool
    """This cycle's read of the resources succeeded."""
    read_error: str | None
    view_age: float
    """Seconds since the last successful read of the resources (0 when ``read_ok``)."""
    max_view_age: float
    """The renew deadline: a holder keeps forging on an older view at most this long."""
    stale_after: float
    health: HealthView
    lease: PoolLeaseView


@dataclass(frozen=True)
class ClusterDecision:
    action: ClusterAction
    reason: str
    effective: Effective | None = None
    """This region's effective state and priority, to publish; None when unknown."""
    hand_over_to: str | None = None
    ineligible: str | None = None
    """Set when this region stopped on a fail-closed path (or is Disabled): the reason code of
    the ``Eligible=False`` status condition, so that other regions do not defer to a region
    that cannot act. None while it competes for, or holds, the pool-wide Lease."""

    @property
    def may_forge(self) -> bool:
        """Forging is permitted (for ``acquire``: once the acquisition has succeeded)."""
        return self.action in (ClusterAction.KEEP, ClusterAction.ACQUIRE)

    @property
    def releases(self) -> bool:
        return self.action in (ClusterAction.HAND_OVER, ClusterAction.STEP_DOWN)


@dataclass(frozen=True)
class Candidate:
    name: str
    state: ForgeState
    priority: int

    @property
    def rank(self) -> tuple[int, int, str]:
        return (0 if self.state is ForgeState.ENABLED else 1, self.priority, self.name)

    def describe(self) -> str:
        return f"{self.name} ({self.state.value}, effective priority {self.priority})"


def outranks(challenger: Candidate, holder: Candidate) -> bool:
    """Whether ``challenger`` may take the Lease from a live ``holder`` by a handover."""
    if holder.state is ForgeState.ENABLED:
        return False
    if challenger.state is ForgeState.ENABLED:
        return True
    return challenger.priority < holder.priority


def peer_candidate(peer: PeerView) -> Candidate | None:
    """The region as a candidate from its published status, or None if it is not one (among
    others: it says it is not eligible, having stopped on a fail-closed path)."""
    rec, status = peer.record, peer.record.status
    if rec.spec is None or status is None or not rec.status_current or not status.eligible:
        return None
    if status.effective_state not in ELIGIBLE or status.effective_priority is None:
        return None
    return Candidate(rec.name, status.effective_state, status.effective_priority)


def decide(v: ClusterView) -> ClusterDecision:
    """One cycle of the cluster-wide decision for this pod."""
    lease = v.lease

    def stop(reason: str, ineligible: str, eff: Effective | None = None) -> ClusterDecision:
        if lease.mine:
            return ClusterDecision(
                ClusterAction.STEP_DOWN,
                f"{reason}; releasing the pool lease",
                eff,
                ineligible=ineligible,
            )
        return ClusterDecision(ClusterAction.STAND_BY, reason, eff, ineligible=ineligible)

    if not v.local_leader:
        return stop("not the local leader", "NotLocalLeader")

    # ---- this region: fail closed on anything unknown -----------------------------------------
    if v.own is None:
        return stop(
            f"not forging: CardanoForgeCluster {v.region!r} unavailable ({v.own_error})",
            "RegionUnavailable",
        )
    if v.own.spec is None:
        return stop(
            f"not forging: CardanoForgeCluster {v.region!r} is invalid: {v.own.spec_error}",
            "RegionInvalid",
        )
    eff = effective(v.own.spec, demoted=v.health.demoted, now_wall=v.now_wall)
    if lease.mine and not lease.leading:
        why = f" ({lease.error})" if lease.error else ""
        return stop(
            f"pool lease not renewed within the renew deadline{why}", "PoolLeaseNotRenewed", eff
        )
    if not v.read_ok and not (lease.mine and v.view_age <= v.max_view_age):
        return stop(
            f"not forging: cannot read the CardanoForgeClusters ({v.read_error}) for "
            f"{v.view_age:.1f} s",
            "CannotReadRegions",
            eff,
        )
    if lease.error is not None and not lease.leading:
        return stop(
            f"not forging: cannot read the pool lease ({lease.error})", "PoolLeaseUnreadable", eff
        )
    if eff.state is ForgeState.DISABLED:
        return stop(f"region {v.region} is Disabled ({eff.source})", "Disabled", eff)

    me = Candidate(v.region, eff.state, eff.priority)
    live = [
        p for p in v.peers if p.record.name != v.region and v.now - p.changed_at < v.stale_after
    ]

    # ---- holding the pool-wide Lease ------------------------------------------------------------
    if lease.mine:
        better = sorted(
            (c for p in live if p.confirmed for c in [peer_candidate(p)] if c is not None),
            key=lambda c: c.rank,
        )
        better = [c for c in better if outranks(c, me)]
        if better:
            target = better[0]
            return ClusterDecision(
                ClusterAction.HAND_OVER,
                f"handing over to region {target.describe()}: it outranks {me.describe()}",
                eff,
                hand_over_to=target.name,
            )
        stale = "" if v.read_ok else f" (resources unreadable for {v.view_age:.1f} s)"
        return ClusterDecision(
            ClusterAction.KEEP, f"holding the pool lease as region {me.describe()}{stale}", eff
        )

    # ---- not holding it -------------------------------------------------------------------------
    if not lease.expired:
        if lease.holder is not None:
            owner = holder_region(lease.holder)
            who = f"region {owner}" if owner else "an unknown holder"
            why = f"{who} holds the pool lease ({lease.holder})"
        elif lease.absent:
            why = (
                "the pool lease does not exist (deleted or not yet created); creating it vacant "
                f"and taking it only once that record has stayed unchanged for {lease.duration:g} "
                "s, in case a holder that did not see the deletion still forges"
            )
        else:
            why = (
                "the pool lease is vacant but was not released by the holder last seen (cleared "
                "by someone else, or created vacant after a deletion); taking it only once it "
                f"has stayed unchanged for {lease.duration:g} s, in case a holder that did not "
                "see it still forges"
            )
        return ClusterDecision(ClusterAction.STAND_BY, f"standing by: {why}", eff)
    contenders = [c for p in live for c in [peer_candidate(p)] if c is not None]
    best = min([me, *contenders], key=lambda c: c.rank)
    free = "expired" if lease.holder is not None else "missing" if lease.absent else "free"
    if best is not me:
        return ClusterDecision(
            ClusterAction.STAND_BY,
            f"standing by: pool lease is {free} but region {best.describe()} ranks before "
            f"{me.describe()}",
            eff,
        )
    return ClusterDecision(
        ClusterAction.ACQUIRE,
        f"acquiring the {free} pool lease: region {me.describe()} is the best candidate",
        eff,
    )


def wake_at(v: ClusterView) -> float | None:
    """The next instant after ``v.now`` at which :func:`decide` may decide otherwise with
    nothing but time passing: the pool-wide Lease expiring in this pod's observation, or a
    live region going stale. The loop wakes then instead of at its next retry tick. None for a
    pod that is not the local leader."""
    if not v.local_leader:
        return None
    instants = [
        p.changed_at + v.stale_after
        for p in v.peers
        if p.record.name != v.region and p.changed_at + v.stale_after > v.now
    ]
    lease = v.lease
    if not lease.mine and lease.expires_at is not None and lease.expires_at > v.now:
        instants.append(lease.expires_at)
    return min(instants, default=None)
