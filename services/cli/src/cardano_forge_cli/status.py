"""``status``: the snapshot as a document (for ``-o json|yaml``) and as tables (pure)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cardano_forge_cli.durations import format_duration
from cardano_forge_cli.model import PoolView, RegionView, Snapshot, Workload, format_time
from cardano_forge_cli.table import render_table, yes_no


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max((now - then).total_seconds(), 0.0)


def region_document(region: RegionView, pool: PoolView, now: datetime) -> dict[str, Any]:
    rec = region.record
    status = rec.status
    eff = region.effective(now)
    condition = region.forging_condition()
    override = region.override()
    return {
        "region": region.name,
        "state": status.effective_state.value
        if status is not None and status.effective_state is not None
        else (eff.state.value if eff else None),
        "stateSource": eff.source if eff else f"invalid spec: {rec.spec_error}",
        "effectivePriority": status.effective_priority if status is not None else None,
        "healthy": status.healthy if status is not None else None,
        "healthFailures": status.consecutive_failures if status is not None else None,
        "healthThreshold": region.failure_threshold,
        "localLeader": (status.active_leader or None) if status is not None else None,
        "forging": status.forging_enabled if status is not None else None,
        "holdsPoolLease": pool.holder_region == region.name,
        "statusCurrent": rec.status_current,
        "heartbeatAgeSeconds": _age(now, region.heartbeat.renew_time) if region.heartbeat else None,
        "override": dict(override) if override else None,
        "overrideActive": region.override_active(now),
        "decision": condition.get("message") if condition else None,
    }


def pod_document(pod: Workload, pool: PoolView) -> dict[str, Any]:
    facts = pool.fact(pod)
    return {
        "namespace": pod.namespace,
        "pod": pod.name,
        "region": pod.region,
        "exists": pod.exists,
        "phase": pod.phase,
        "leader": pool.local_leader(pod),
        "forging": facts.forging,
        "credentialsPresent": facts.credentials_present,
        "sourcesOk": facts.sources_ok,
        "nodeUp": facts.node_up,
        "synced": facts.synced,
        "kesPeriodsLeft": facts.kes_left,
        "forgingSince": facts.forging_since,
        "managerVersion": facts.version,
        "metricsReachable": facts.reachable,
        "metricsError": facts.error,
    }


def status_document(snap: Snapshot) -> dict[str, Any]:
    now = snap.taken_at
    pools = []
    for pool in snap.pools:
        lease = pool.lease
        changed = lease.changed_at() if lease else None
        pools.append(
            {
                "pool": pool.name,
                "clusterManagement": pool.cluster,
                "notRead": pool.unread,
                "namespace": pool.namespace,
                "lease": None
                if lease is None
                else {
                    "name": lease.name,
                    "holder": lease.holder,
                    "region": pool.holder_region,
                    "pod": pool.holder_pod,
                    "changedAt": format_time(changed),
                    "secondsSinceChange": _age(now, changed),
                    "secondsSinceRenew": _age(now, lease.renew_time),
                    "transitions": lease.transitions,
                    "releasedBy": lease.released_by,
                },
                "regions": [region_document(r, pool, now) for r in pool.regions],
                "pods": [pod_document(p, pool) for p in pool.pods],
            }
        )
    return {"time": format_time(now), "pools": pools, "warnings": list(snap.warnings)}


# ---- tables ------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return yes_no(value)
    return str(value)


def _health(r: dict[str, Any]) -> str:
    if r["healthThreshold"] is None:
        return "off"
    if r["healthFailures"] is None:
        return "unknown"
    text = f"{r['healthFailures']}/{r['healthThreshold']}"
    return text if r["healthy"] is not False else f"{text} unhealthy"


def _pool_header(p: dict[str, Any]) -> str:
    kind = "pool" if p["clusterManagement"] else "pool (no cluster management: one region)"
    head = f"{kind} {p['pool']} in namespace {p['namespace']}"
    lease = p["lease"]
    if p.get("notRead"):
        return f"{head}: not read ({p['notRead']})"
    if lease is None:
        return f"{head}: no Lease {p['pool']} (nobody has led yet, or it was deleted)"
    since = format_duration(lease["secondsSinceChange"])
    if lease["holder"] and lease["secondsSinceChange"] is None:
        renewed = format_duration(lease["secondsSinceRenew"])
        return f"{head}: held by {lease['holder']} (since unknown; renewed {renewed} ago)"
    if lease["holder"]:
        return f"{head}: held by {lease['holder']} for {since} ({lease['transitions']} transitions)"
    released = f", released by {lease['releasedBy']}" if lease["releasedBy"] else ""
    return f"{head}: held by nobody for {since}{released}"


def render_status(doc: dict[str, Any]) -> str:
    blocks: list[str] = []
    for p in doc["pools"]:
        lines = [_pool_header(p)]
        notes: list[str] = []
        if p["regions"]:
            rows = []
            for r in p["regions"]:
                state = _cell(r["state"])
                if r["overrideActive"]:
                    state += "*"
                    notes.append(f"* {r['region']}: {r['stateSource']}")
                if not r["statusCurrent"]:
                    state += " (status not current)"
                rows.append(
                    [
                        r["region"],
                        state,
                        _cell(r["effectivePriority"]),
                        _health(r),
                        r["localLeader"] or "none",
                        _cell(r["forging"]),
                    ]
                )
            lines += [
                "",
                render_table(
                    ["region", "state", "priority", "health", "local leader", "forging"], rows
                ),
            ]
        if p["pods"]:
            rows = []
            for pod in p["pods"]:
                node = pod["nodeUp"]
                rows.append(
                    [
                        pod["namespace"],
                        pod["pod"],
                        pod["region"],
                        _cell(pod["leader"]),
                        _cell(pod["forging"]),
                        _cell(pod["credentialsPresent"]),
                        "unknown" if node is None else ("up" if node else "down"),
                        _cell(pod["synced"]),
                        _cell(pod["kesPeriodsLeft"]),
                    ]
                )
            lines += [
                "",
                render_table(
                    [
                        "namespace",
                        "pod",
                        "region",
                        "leader",
                        "forging",
                        "credentials",
                        "node",
                        "synced",
                        "kes left",
                    ],
                    rows,
                ),
            ]
            unknown = [pod for pod in p["pods"] if not pod["metricsReachable"]]
            if unknown:
                why = sorted({pod["metricsError"] or "unreachable" for pod in unknown})
                notes.append(
                    f"unknown: the forge managers' /metrics of {len(unknown)} pod(s) could not be "
                    f"read ({'; '.join(why)})"
                )
        lines += ["", *notes] if notes else []
        blocks.append("\n".join(lines))
    if doc["warnings"]:
        blocks.append("\n".join(f"warning: {w}" for w in doc["warnings"]))
    return "\n\n".join(blocks) if blocks else "no pools found"
