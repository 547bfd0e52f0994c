"""Eligibility and plans for ``switchover``, ``pause`` and ``resume`` (pure: no I/O).

Each ``plan_*`` function takes what the CLI read (a :class:`~cardano_forge_cli.model.PoolView`,
the time, which regions were seen alive) and returns a :class:`Plan` of ``spec.override``
changes, or raises :class:`~cardano_forge_cli.errors.Refused` with the reason. Nothing here
decides who may forge: the forge managers do, through the pool-wide Lease. A plan only states
the operator's wish the way the managers read it (``docs/cluster-coordination.md``):

* rank: ``Enabled`` before ``Priority-based``, then the lower effective priority, then the name;
* a live region with a *strictly* better rank takes over from a ``Priority-based`` holder by a
  hand-over (demote, confirm, release); an ``Enabled`` holder is never preempted; ties never
  preempt;
* an override (``forgeState`` and/or ``priority``) applies until ``expiresAt``.

A region switchover therefore gives the target region priority 1 (when something ties with or
beats it) and every other eligible region whose base priority is 1 the priority 2, all with the
same ``expiresAt``. The target stays ``Priority-based``, so its health checks still count: an
unhealthy target (+100) hands forging on to the next region. When the overrides expire, the
spec's priorities apply again.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from forge_manager.cluster.model import ForgeState

from cardano_forge_cli.contract import (
    MAX_REQUEST_SECONDS,
    POD_SWITCHOVER,
    REQUEST_ANNOTATION,
    SWITCHOVER_REASON_PREFIX,
    SwitchoverRequest,
    capabilities,
)
from cardano_forge_cli.durations import format_duration
from cardano_forge_cli.errors import Refused
from cardano_forge_cli.model import LeaseInfo, PodFacts, PoolView, RegionView, Workload, format_time

TARGET_PRIORITY = 1
OTHERS_PRIORITY = 2
MAX_REASON = 256
MAX_OPERATOR_REASON = 200


@dataclass(frozen=True)
class OverrideChange:
    """Set (``override``) or remove (None) one region's ``spec.override``."""

    region: str
    resource_version: str
    override: dict[str, Any] | None
    previous: dict[str, Any] | None
    why: str


@dataclass(frozen=True)
class Plan:
    target: str
    changes: tuple[OverrideChange, ...] = ()
    notes: tuple[str, ...] = ()
    expires_at: datetime | None = None
    from_region: str | None = None
    nothing_to_do: str | None = None
    """Set when the wish already holds; ``changes`` is empty then."""
    extra: dict[str, Any] = field(default_factory=dict)


def _names(pool: PoolView) -> str:
    return ", ".join(sorted(r.name for r in pool.regions)) or "none"


def find_region(pool: PoolView, name: str) -> RegionView:
    if not pool.cluster:
        raise Refused(
            f"pool {pool.name} has no cluster management (no CardanoForgeCluster): it is one "
            "region; use 'switchover --to-pod' to move forging within it"
        )
    region = pool.region(name)
    if region is None:
        raise Refused(
            f"unknown region {name!r} in pool {pool.name} (namespace {pool.namespace}): "
            f"the regions are {_names(pool)}"
        )
    if region.record.spec is None:
        raise Refused(
            f"region {name}'s CardanoForgeCluster is invalid ({region.record.spec_error}): "
            f"fix it with 'kubectl edit cfc {name} -n {pool.namespace}'"
        )
    return region


def is_switchover_override(override: dict[str, Any] | None) -> bool:
    reason = (override or {}).get("reason")
    return isinstance(reason, str) and reason.startswith(SWITCHOVER_REASON_PREFIX)


def _describe_override(ov: dict[str, Any]) -> str:
    parts = [f"{k}={ov[k]}" for k in ("forgeState", "priority") if k in ov]
    return f"{', '.join(parts)} ({ov.get('reason', '')!r}, until {ov.get('expiresAt', 'removed')})"


def base_priority(region: RegionView, now: datetime) -> int:
    """The priority the region competes with, ignoring health and the CLI's switchover
    overrides: an active override's priority set by anyone else, else the spec's."""
    spec = region.record.spec
    assert spec is not None
    ov = spec.override
    if (
        ov is not None
        and ov.active(now)
        and ov.priority is not None
        and not is_switchover_override(region.override())
    ):
        return ov.priority
    return spec.priority


def heartbeat_fresh(region: RegionView, now: datetime, stale_after: float) -> bool:
    """The region's heartbeat Lease was renewed less than ``stale_after`` ago (wall clocks)."""
    hb = region.heartbeat
    if hb is None or hb.renew_time is None:
        return False
    return (now - hb.renew_time).total_seconds() < stale_after


def region_problem(
    region: RegionView, now: datetime, *, live: bool, leader_facts: PodFacts | None
) -> str | None:
    """Why the region cannot take over forging now, or None. Disabled is checked by callers."""
    rec, name = region.record, region.name
    status = rec.status
    if status is None or not rec.status_current:
        return (
            f"region {name} has not published a status for its current spec: its local leader "
            "is not running, or has not caught up with the last edit"
        )
    if not status.active_leader:
        return f"region {name} has no local leader"
    if not live:
        return (
            f"region {name} has no live local leader: its heartbeat Lease has not changed "
            "recently (is its forge manager running and able to reach the coordination API?)"
        )
    if status.healthy is False or status.demoted:
        threshold = region.failure_threshold
        count = f"{status.consecutive_failures}/{threshold}" if threshold else "failing"
        return (
            f"region {name} is not healthy ({count} consecutive health-check failures, effective "
            f"priority {status.effective_priority}): it would hand forging on at once"
        )
    if leader_facts is not None and leader_facts.reachable:
        pod = status.active_leader
        if leader_facts.sources_ok is False:
            return (
                f"region {name}'s local leader {pod} has no usable credentials (its forge "
                "manager reports a missing, empty or unreadable source file)"
            )
        if leader_facts.node_up is False:
            return f"region {name}'s local leader {pod}: its cardano-node is not up"
        if leader_facts.synced is False:
            return f"region {name}'s local leader {pod}: its cardano-node is not synced"
    return None


def _switchover_override(target: str, who: str, priority: int, expires: datetime) -> dict[str, Any]:
    reason = f"{SWITCHOVER_REASON_PREFIX}{target} by {who}"[:MAX_REASON]
    return {"priority": priority, "reason": reason, "expiresAt": format_time(expires)}


def plan_region_switchover(
    pool: PoolView,
    target: str,
    *,
    now: datetime,
    duration: float,
    requested_by: str,
    live: Collection[str],
    leader_facts: PodFacts | None = None,
) -> Plan:
    """Move forging to region ``target`` until ``now + duration`` (see the module docstring)."""
    region = find_region(pool, target)
    eff = region.effective(now)
    assert eff is not None
    if eff.state is ForgeState.DISABLED:
        how = (
            f"resume it first: cardano-forge resume {target}"
            if eff.source.startswith("override")
            else f"set spec.forgeState to Priority-based: kubectl edit cfc {target} "
            f"-n {pool.namespace}"
        )
        raise Refused(f"region {target} is Disabled ({eff.source}): {how}")
    problem = region_problem(region, now, live=target in live, leader_facts=leader_facts)
    if problem:
        raise Refused(problem)
    status = region.record.status
    assert status is not None
    holder = pool.holder_region
    if holder == target and status.forging_enabled:
        return Plan(
            target,
            nothing_to_do=f"region {target} already forges (pool Lease held by {pool.lease.holder})"
            if pool.lease
            else f"region {target} already forges",
            from_region=holder,
        )
    others = [r for r in pool.regions if r.name != target and r.record.spec is not None]
    for other in others:
        other_eff = other.effective(now)
        if other_eff is not None and other_eff.state is ForgeState.ENABLED:
            raise Refused(
                f"region {other.name} is Enabled ({other_eff.source}): an Enabled region keeps "
                "forging regardless of priority; make it Priority-based first "
                f"(kubectl edit cfc {other.name} -n {pool.namespace})"
            )

    expires = now + timedelta(seconds=duration)
    changes: list[OverrideChange] = []
    notes: list[str] = []
    contenders = [
        o
        for o in others
        if (e := o.effective(now)) is not None and e.state is not ForgeState.DISABLED
    ]
    base_target = base_priority(region, now)
    needs = eff.state is not ForgeState.ENABLED and any(
        base_priority(o, now) <= base_target for o in contenders
    )
    target_ov = region.override()
    if needs and base_target != TARGET_PRIORITY:
        if region.override_active(now) and not is_switchover_override(target_ov):
            raise Refused(
                f"region {target} has an override set by someone else: "
                f"{_describe_override(target_ov or {})}; remove it first: cardano-forge resume "
                f"{target}"
            )
        changes.append(
            OverrideChange(
                target,
                region.resource_version,
                _switchover_override(target, requested_by, TARGET_PRIORITY, expires),
                target_ov,
                f"region {target}: priority {base_target} -> {TARGET_PRIORITY} until "
                f"{format_time(expires)}",
            )
        )
    elif is_switchover_override(target_ov):
        changes.append(
            OverrideChange(
                target,
                region.resource_version,
                None,
                target_ov,
                f"region {target}: the earlier switchover's override removed (priority "
                f"{base_target} from its spec ranks first)",
            )
        )
    floor = TARGET_PRIORITY if needs else base_target
    for other in others:
        ov = other.override()
        is_contender = other in contenders
        if is_contender and needs and base_priority(other, now) <= floor:
            if other.override_active(now) and not is_switchover_override(ov):
                raise Refused(
                    f"region {other.name} has an override set by someone else "
                    f"({_describe_override(ov or {})}) and would tie with {target}: remove it "
                    f"first (cardano-forge resume {other.name}) or change priorities in the spec"
                )
            changes.append(
                OverrideChange(
                    other.name,
                    other.resource_version,
                    _switchover_override(target, requested_by, OTHERS_PRIORITY, expires),
                    ov,
                    f"region {other.name}: priority {base_priority(other, now)} -> "
                    f"{OTHERS_PRIORITY} until {format_time(expires)}",
                )
            )
        elif is_switchover_override(ov):
            changes.append(
                OverrideChange(
                    other.name,
                    other.resource_version,
                    None,
                    ov,
                    f"region {other.name}: the earlier switchover's override removed",
                )
            )
    leader = status.active_leader
    source = f"{holder} ({pool.holder_pod})" if holder else "nobody (the pool Lease is free)"
    notes.append(f"forging moves from {source} to region {target} (local leader {leader})")
    if any(c.override is not None for c in changes):
        notes.append(
            f"at {format_time(expires)} (in {format_duration(duration)}) the overrides expire and "
            "the spec's priorities apply again; switch back earlier with "
            "'cardano-forge switchover --to-region <region>'"
        )
    if not changes:
        notes.append(f"region {target} already ranks first; waiting for it to take over")
    return Plan(target, tuple(changes), tuple(notes), expires, from_region=holder)


def plan_pause(
    pool: PoolView,
    name: str,
    *,
    now: datetime,
    duration: float,
    reason: str,
    requested_by: str,
    live: Collection[str],
) -> Plan:
    """``spec.override`` ``forgeState: Disabled`` until ``now + duration``."""
    region = find_region(pool, name)
    text = " ".join(reason.split())
    if not text:
        raise Refused("--reason must not be empty: say why, e.g. --reason 'kernel upgrade'")
    if len(text) > MAX_OPERATOR_REASON:
        raise Refused(f"--reason is {len(text)} characters: keep it within {MAX_OPERATOR_REASON}")
    ov = region.override()
    notes: list[str] = []
    if region.override_active(now):
        assert ov is not None
        if ov.get("forgeState") == ForgeState.DISABLED.value:
            notes.append(f"replaces the current pause: {_describe_override(ov)}")
        elif is_switchover_override(ov):
            notes.append(f"replaces the switchover override: {_describe_override(ov)}")
        else:
            raise Refused(
                f"region {name} has an override set by someone else: {_describe_override(ov)}; "
                f"remove it first: cardano-forge resume {name}"
            )
    expires = now + timedelta(seconds=duration)
    override = {
        "forgeState": ForgeState.DISABLED.value,
        "reason": f"{text} (paused by {requested_by})"[:MAX_REASON],
        "expiresAt": format_time(expires),
    }
    successor = None
    if pool.holder_region == name:
        successor = next_region(pool, now, exclude=name, live=live)
        notes.append(
            f"region {name} forges now: it hands forging over to region {successor}"
            if successor
            else f"region {name} forges now and no other region is eligible: NOTHING FORGES "
            f"until 'cardano-forge resume {name}' or {format_time(expires)}"
        )
    notes.append(
        f"region {name} is Disabled until {format_time(expires)} (in "
        f"{format_duration(duration)}), or until 'cardano-forge resume {name}'"
    )
    change = OverrideChange(
        name,
        region.resource_version,
        override,
        ov,
        f"region {name}: Disabled until {format_time(expires)}",
    )
    return Plan(
        name,
        (change,),
        tuple(notes),
        expires,
        from_region=pool.holder_region,
        extra={"successor": successor},
    )


def plan_resume(pool: PoolView, name: str, *, now: datetime) -> Plan:
    region = find_region(pool, name)
    ov = region.override()
    if ov is None:
        return Plan(name, nothing_to_do=f"region {name} has no override: it follows its spec")
    active = "" if region.override_active(now) else " (already expired)"
    change = OverrideChange(
        name,
        region.resource_version,
        None,
        ov,
        f"region {name}: override removed: {_describe_override(ov)}{active}",
    )
    spec = region.record.spec
    assert spec is not None
    notes = (
        f"region {name} follows its spec again: {spec.forge_state.value}, priority {spec.priority}",
    )
    return Plan(name, (change,), notes, from_region=pool.holder_region)


def next_region(
    pool: PoolView, now: datetime, *, exclude: str, live: Collection[str]
) -> str | None:
    """The region that would take over if ``exclude`` stopped: the best-ranked other region that
    is eligible, live and healthy (by its published status), or None."""
    best: tuple[int, int, str] | None = None
    for region in pool.regions:
        rec = region.record
        if region.name == exclude or region.name not in live or rec.status is None:
            continue
        eff = region.effective(now)
        if eff is None or eff.state is ForgeState.DISABLED or rec.status.effective_priority is None:
            continue
        rank = (
            0 if eff.state is ForgeState.ENABLED else 1,
            rec.status.effective_priority,
            region.name,
        )
        if best is None or rank < best:
            best = rank
    return None if best is None else best[2]


# ---- pod switchover ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PodPlan:
    pod: Workload
    lease: LeaseInfo
    request: SwitchoverRequest | None
    nothing_to_do: str | None = None


def find_pod(pool_pods: Collection[Workload], name: str) -> Workload:
    found = [p for p in pool_pods if name in (p.name, f"{p.namespace}/{p.name}")]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        where = ", ".join(f"{p.namespace}/{p.name}" for p in found)
        raise Refused(f"pod name {name!r} is ambiguous ({where}): pass namespace/pod or -n")
    names = ", ".join(sorted(f"{p.namespace}/{p.name}" for p in pool_pods)) or "none"
    raise Refused(f"unknown pod {name!r}: the block-producer pods are {names}")


def plan_pod_switchover(
    pods: Collection[Workload],
    name: str,
    *,
    lease: LeaseInfo | None,
    facts: PodFacts,
    holder_version: str | None,
    now: datetime,
    timeout: float,
    requested_by: str,
    request_id: str,
) -> PodPlan:
    pod = find_pod(pods, name)
    if lease is None:
        raise Refused(
            f"the Lease {pod.lease_name} in namespace {pod.namespace} does not exist: no pod of "
            "this region has led yet"
        )
    if lease.holder == pod.name:
        return PodPlan(pod, lease, None, nothing_to_do=f"pod {pod.name} already leads its region")
    if not lease.holder:
        raise Refused(
            f"no pod holds the Lease {pod.lease_name} now: a pod switchover needs a leader to hand "
            "over (the forge managers elect the next one by themselves)"
        )
    if POD_SWITCHOVER not in capabilities(lease.annotations):
        runs = f", runs forge-manager {holder_version}" if holder_version else ""
        raise Refused(
            f"the forge manager holding the Lease does not support pod switchover (the holder "
            f"{lease.holder}{runs} and does not advertise {POD_SWITCHOVER!r} on the Lease): "
            "upgrade the release's forge manager"
        )
    pending = lease.annotations.get(REQUEST_ANNOTATION)
    if pending:
        try:
            current = SwitchoverRequest.decode(pending)
        except ValueError:
            current = None
        if current is not None and current.expires_at > now and current.to != pod.name:
            raise Refused(
                f"a switchover to {current.to} requested by {current.requested_by} is pending "
                f"until {format_time(current.expires_at)}"
            )
    if not pod.exists:
        raise Refused(
            f"pod {pod.name} does not exist (its StatefulSet {pod.statefulset} asks for it)"
        )
    if pod.phase not in (None, "Running"):
        raise Refused(f"pod {pod.name} is {pod.phase}, not Running")
    if facts.reachable:
        if facts.sources_ok is False:
            raise Refused(f"pod {pod.name} has no usable credentials (missing or empty source)")
        if facts.node_up is False:
            raise Refused(f"pod {pod.name}: its cardano-node is not up")
        if facts.synced is False:
            raise Refused(f"pod {pod.name}: its cardano-node is not synced")
    seconds = min(timeout, MAX_REQUEST_SECONDS)
    request = SwitchoverRequest(
        pod.name, request_id, requested_by, now, now + timedelta(seconds=seconds)
    )
    return PodPlan(pod, lease, request)
