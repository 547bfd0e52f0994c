"""``history``: who forged when and why, merged from what the API keeps (pure, but the reading).

Sources, oldest first in the output:

* Events whose reporting component is the forge manager (``cardano-forge-manager``) or this CLI
  (``cardano-forge-cli``), on the block-producer pods and on the CardanoForgeClusters;
* each region's status conditions (``Forging``: the last decision's reason and when it changed);
* the pool-wide Lease and the local Leases: who holds each since when (``acquireTime``), the
  number of transitions, and who released a free one;
* the forge managers' ``cardano_forging_since_timestamp_seconds`` (when the forger started).

Leases keep only their current holder, and the Events API keeps Events for an hour by default
(kube-apiserver ``--event-ttl``): older history lives in the forge managers' logs and metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cardano_forge_cli.contract import MANAGER_COMPONENT, REPORTING_COMPONENT
from cardano_forge_cli.model import Snapshot, format_time, parse_time
from cardano_forge_cli.table import render_table

COMPONENTS = (MANAGER_COMPONENT, REPORTING_COMPONENT)


@dataclass(frozen=True)
class Entry:
    time: datetime
    source: str
    """``event``, ``condition``, ``pool-lease``, ``lease`` or ``metrics``."""
    region: str
    subject: str
    what: str
    why: str = ""

    def document(self) -> dict[str, str]:
        return {
            "time": format_time(self.time) or "",
            "source": self.source,
            "region": self.region,
            "subject": self.subject,
            "what": self.what,
            "why": self.why,
        }


def _event_time(event: Mapping[str, Any]) -> datetime | None:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        found = parse_time(event.get(key))
        if found is not None:
            return found
    return parse_time((event.get("metadata") or {}).get("creationTimestamp"))


def relevant_event(event: Mapping[str, Any]) -> bool:
    component = event.get("reportingComponent") or (event.get("source") or {}).get("component")
    return component in COMPONENTS


def history_entries(snap: Snapshot, events: Iterable[Mapping[str, Any]] = ()) -> list[Entry]:
    entries: list[Entry] = []
    pod_region = {(w.namespace, w.name): w.region for p in snap.pools for w in p.pods}
    regions = {r.name for p in snap.pools for r in p.regions}
    for event in events:
        if not relevant_event(event):
            continue
        when = _event_time(event)
        obj = event.get("involvedObject") or {}
        if when is None or not isinstance(obj, dict):
            continue
        name, kind = str(obj.get("name") or ""), str(obj.get("kind") or "")
        region = pod_region.get((str(obj.get("namespace") or ""), name), "")
        if kind == "CardanoForgeCluster":
            region = name
        if kind == "Pod" and not region:
            continue  # another release's pod
        if kind == "CardanoForgeCluster" and regions and name not in regions:
            continue
        count = event.get("count")
        times = f" (x{count})" if isinstance(count, int) and count > 1 else ""
        entries.append(
            Entry(
                when,
                "event",
                region,
                f"{kind.lower()}/{name}",
                f"{event.get('reason', '')}{times}",
                str(event.get("message") or ""),
            )
        )
    for pool in snap.pools:
        for rv in pool.regions:
            for cond in rv.status.get("conditions") or []:
                when = (
                    parse_time(cond.get("lastTransitionTime")) if isinstance(cond, dict) else None
                )
                if when is None:
                    continue
                state = "forging" if cond.get("status") == "True" else "not forging"
                what = (
                    state
                    if cond.get("type") == "Forging"
                    else f"{cond.get('type')}={cond.get('status')}"
                )
                entries.append(
                    Entry(
                        when,
                        "condition",
                        rv.name,
                        f"cfc/{rv.name}",
                        f"{what} ({cond.get('reason', '')})",
                        str(cond.get("message") or ""),
                    )
                )
        lease = pool.lease
        if pool.cluster and lease is not None:
            subject = f"lease/{lease.name}"
            if lease.holder and lease.acquire_time:
                entries.append(
                    Entry(
                        lease.acquire_time,
                        "pool-lease",
                        pool.holder_region or "",
                        subject,
                        f"acquired by {lease.holder}",
                        f"pool-wide Lease, transition {lease.transitions}",
                    )
                )
            elif lease.holder and lease.renew_time:
                entries.append(
                    Entry(
                        lease.renew_time,
                        "pool-lease",
                        pool.holder_region or "",
                        subject,
                        f"held by {lease.holder} (last renewed)",
                        "the record keeps no acquireTime",
                    )
                )
            elif not lease.holder and lease.renew_time:
                who = lease.released_by or "someone"
                entries.append(
                    Entry(
                        lease.renew_time,
                        "pool-lease",
                        "",
                        subject,
                        f"released by {who}",
                        "nobody holds the pool-wide Lease",
                    )
                )
        for (ns, name), local in pool.local_leases.items():
            if local is None or not local.holder:
                continue
            region = pod_region.get((ns, local.holder), "")
            if local.acquire_time is not None:
                when, what = local.acquire_time, f"became local leader ({name})"
                why = f"local Lease, transition {local.transitions}"
            elif local.renew_time is not None:
                when, what = local.renew_time, f"local leader ({name}, last renewed)"
                why = "the record keeps no acquireTime"
            else:
                continue
            entries.append(Entry(when, "lease", region, f"pod/{local.holder}", what, why))
        for pod in pool.pods:
            facts = pool.facts.get(pod.key)
            if facts is not None and facts.forging_since:
                when = datetime.fromtimestamp(facts.forging_since, UTC)
                entries.append(
                    Entry(
                        when,
                        "metrics",
                        pod.region,
                        f"pod/{pod.name}",
                        "started forging",
                        "cardano_forging_since_timestamp_seconds",
                    )
                )
    entries.sort(key=lambda e: (e.time, e.source, e.subject))
    return entries


def pending_overrides(snap: Snapshot) -> list[str]:
    out = []
    for pool in snap.pools:
        for region in pool.regions:
            ov = region.override()
            if ov and region.override_active(snap.taken_at):
                parts = ", ".join(f"{k}={ov[k]}" for k in ("forgeState", "priority") if k in ov)
                out.append(
                    f"region {region.name}: override {parts} ({ov.get('reason', '')!r}) "
                    f"until {ov.get('expiresAt', '?')}"
                )
    return out


def render_history(entries: list[Entry], pending: list[str]) -> str:
    if not entries:
        text = "no history found (no Events, conditions or Lease records yet)"
    else:
        rows = [
            [format_time(e.time) or "", e.region or "-", e.subject, e.what, e.why] for e in entries
        ]
        text = render_table(["time", "region", "object", "what", "why"], rows)
    if pending:
        text += "\n\nin force now:\n" + "\n".join(f"  {p}" for p in pending)
    return text
