"""Carrying out plans: ``spec.override`` patches, the CLI's Events, and watching the hand-over.

Every write carries the resourceVersion the plan was made from (a JSON merge patch with
``metadata.resourceVersion``): when a region's object changed in between (its local leader
writes its status), the write fails with 409 and the caller reads again and plans again.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cardano_forge_cli.contract import REPORTING_COMPONENT
from cardano_forge_cli.errors import CliError
from cardano_forge_cli.inventory import read_facts, read_lease
from cardano_forge_cli.kube import Conflict, Kube, core_path, region_path
from cardano_forge_cli.model import PodFacts, Workload, format_time
from cardano_forge_cli.plan import OverrideChange

CONFLICT_RETRIES = 5


def apply_change(kube: Kube, namespace: str, change: OverrideChange) -> None:
    """Write one override against the version read. A conflict caused by something other than
    a change of ``spec.override`` (the region's leader wrote its status) is retried against the
    new version; a changed override raises :class:`Conflict`: the plan must be made again."""
    version = change.resource_version
    what = f"update CardanoForgeCluster {change.region} in namespace {namespace}"
    for _ in range(CONFLICT_RETRIES):
        body = {"metadata": {"resourceVersion": version}, "spec": {"override": change.override}}
        try:
            kube.merge_patch(what, region_path(namespace, change.region), body)
            return
        except Conflict:
            current = kube.get(
                f"read CardanoForgeCluster {change.region} in namespace {namespace}",
                region_path(namespace, change.region),
            )
            if (current.get("spec") or {}).get("override") != change.previous:
                raise
            version = str((current.get("metadata") or {}).get("resourceVersion") or "")
    raise Conflict(f"cannot {what}: it keeps changing while being written")


def record_event(
    kube: Kube,
    namespace: str,
    involved: dict[str, str],
    reason: str,
    message: str,
) -> str | None:
    """A Normal Event on ``involved`` (kind, name, apiVersion) by the CLI; returns a warning line
    instead of failing the command when the Event cannot be written."""
    now = datetime.now(UTC)
    stamp = format_time(now)
    body = {
        "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
        "involvedObject": {**involved, "namespace": namespace},
        "reason": reason,
        "message": message[:1024],
        "type": "Normal",
        "source": {"component": REPORTING_COMPONENT},
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        kube.create(
            f"create an Event in namespace {namespace}", core_path(namespace, "events"), body
        )
    except CliError as exc:
        return f"the change is made, but no Event was recorded: {exc.message}"
    return None


def new_request_id() -> str:
    return uuid.uuid4().hex[:12]


# ---- watching a hand-over ----------------------------------------------------------------------
@dataclass
class ForgerTrace:
    """What polling a pod's metrics showed: when it was last seen forging and first seen not."""

    pod: Workload
    last_forging: float | None = None
    """Unix time of the last sample that said forging."""
    first_stopped: float | None = None
    """Unix time of the first sample, after one that said forging, that said not forging."""
    since: float | None = None
    """``cardano_forging_since_timestamp_seconds`` (the pod's own clock) while forging."""

    def observe(self, facts: PodFacts, at: float) -> None:
        if not facts.reachable or facts.forging is None:
            return
        if facts.forging:
            self.last_forging = at
            self.first_stopped = None
            self.since = facts.forging_since or self.since
        elif self.last_forging is not None and self.first_stopped is None:
            self.first_stopped = at


@dataclass(frozen=True)
class Gap:
    """The time without a forger between an old and a new forger, from sampled metrics."""

    at_most: float | None
    """New forger's start minus the last sample in which the old one still forged."""
    at_least: float | None
    """New forger's start minus the first sample in which the old one had stopped."""
    overlap: bool
    """The new forger started before a sample in which the old one still forged."""


def handover_gap(old: ForgerTrace | None, new_since: float | None) -> Gap:
    if old is None or new_since is None or old.last_forging is None:
        return Gap(None, None, False)
    at_most = new_since - old.last_forging
    at_least = None if old.first_stopped is None else max(new_since - old.first_stopped, 0.0)
    return Gap(max(at_most, 0.0), at_least, at_most < 0)


@dataclass
class Handover:
    done: bool
    seconds: float
    holder: str | None
    new_pod: str | None
    gap: Gap = field(default_factory=lambda: Gap(None, None, False))
    note: str = ""


def watch_handover(
    kube: Kube,
    *,
    holder: Callable[[], str | None],
    arrived: Callable[[str | None], bool],
    old: Workload | None,
    candidates: list[Workload],
    pod_of_holder: Callable[[str | None], str | None],
    timeout: float,
    interval: float = 0.2,
    facts_timeout: float = 1.0,
    confirmed: Callable[[], bool] | None = None,
) -> Handover:
    """Poll until ``arrived(holder())`` (and ``confirmed()``), measuring the gap from the old
    forger's and the candidates' metrics. Bounded by ``timeout``."""
    start = time.monotonic()
    old_trace = ForgerTrace(old) if old is not None else None
    traces = {p.key: ForgerTrace(p) for p in candidates}
    current: str | None = None
    while True:
        now_wall = time.time()
        if old_trace is not None:
            old_trace.observe(read_facts(kube, old_trace.pod, facts_timeout), now_wall)
        try:
            current = holder()
        except CliError:
            current = None
        new_pod = pod_of_holder(current)
        for key, trace in traces.items():
            if new_pod is None or key[1] == new_pod:
                trace.observe(read_facts(kube, trace.pod, facts_timeout), time.time())
        done = arrived(current) and (confirmed is None or confirmed())
        if done:
            winner = next((t for k, t in traces.items() if k[1] == new_pod), None)
            if winner is not None and winner.since is None:
                # Wait a little for the new forger's own metric, when it is readable at all.
                extra = time.monotonic() + 3 * interval + facts_timeout
                while time.monotonic() < extra and winner.since is None:
                    winner.observe(read_facts(kube, winner.pod, facts_timeout), time.time())
                    time.sleep(interval)
            since = winner.since if winner is not None else None
            note = "" if since is not None else "per-pod metrics unreadable: gap unknown"
            return Handover(
                True,
                time.monotonic() - start,
                current,
                new_pod,
                handover_gap(old_trace, since),
                note,
            )
        if time.monotonic() - start > timeout:
            return Handover(False, time.monotonic() - start, current, new_pod)
        time.sleep(interval)


def lease_holder(kube: Kube, namespace: str, name: str) -> Callable[[], str | None]:
    def read() -> str | None:
        lease = read_lease(kube, namespace, name)
        return lease.holder if lease is not None else None

    return read


def region_status(kube: Kube, namespace: str, region: str) -> dict[str, Any]:
    obj = kube.get(
        f"read CardanoForgeCluster {region} in namespace {namespace}",
        region_path(namespace, region),
    )
    status = obj.get("status") if isinstance(obj, dict) else None
    return status if isinstance(status, dict) else {}
