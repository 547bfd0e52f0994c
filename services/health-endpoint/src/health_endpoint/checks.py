"""What "healthy" means: the checks, their defaults, and the pure evaluation of query results.

A *check* is one entry of the response's ``checks`` object (``cardano_node``, ``storage``...). It
is made of one or more *rules*: a PromQL query that yields one number, thresholds that turn the
number into ``healthy``/``degraded``/``unhealthy``, and the sentence that explains a bad value. A
check is as bad as its worst rule; the cluster is as bad as its worst check.

Nothing here talks to Prometheus: :func:`evaluate` takes the values (or the reason there is none)
and returns a :class:`HealthReport`, so every decision can be tested with plain data.
"""

from __future__ import annotations

import enum
import math
import re
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from health_endpoint.networks import Network
from health_endpoint.units import Unit, document_value, format_value


class Status(enum.StrEnum):
    """Status of one check, or of the whole cluster (``unknown`` only for the cluster)."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


_SEVERITY = {Status.HEALTHY: 0, Status.DEGRADED: 1, Status.UNHEALTHY: 2, Status.UNKNOWN: 3}


def worst(statuses: Sequence[Status]) -> Status:
    """The most severe of ``statuses`` (``healthy`` for none)."""
    return max(statuses, key=_SEVERITY.__getitem__, default=Status.HEALTHY)


class Direction(enum.StrEnum):
    """Which side of a threshold is bad."""

    ABOVE = "above"
    """Bad when the value is at or above the threshold (usage, lag)."""
    BELOW = "below"
    """Bad when the value is at or below the threshold (``up``, KES periods left, peers)."""


# Placeholders a query may use; see ``render_query``.
QUERY_VARIABLES = (
    "selector",
    "host_selector",
    "cluster",
    "node_job",
    "wallclock_slot",
    "slot_length_seconds",
    "rate_window",
)

CHECK_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Rule:
    """One PromQL query with thresholds; part of the check named ``check``."""

    check: str
    """Key in the response's ``checks`` object."""
    name: str
    """Name of the rule inside its check (unique per check)."""
    query: str
    """PromQL template; ``$selector``, ``$host_selector`` (the node_exporter series),
    ``$cluster``, ``$node_job``, ``$wallclock_slot``, ``$slot_length_seconds`` and
    ``$rate_window`` are substituted (``$$`` is a literal ``$``).
    Should yield one number; when it yields several series the worst value counts."""
    description: str
    """What the value is, for sentences such as "<description>: no data in Prometheus"."""
    message: str = ""
    """Sentence for a value past a threshold; ``{value}`` is replaced by the formatted value."""
    unhealthy_message: str = ""
    """Sentence for a value past the unhealthy threshold, if it should differ from ``message``."""
    unit: Unit = Unit.NUMBER
    """How the value is written in sentences and in ``metrics``."""
    direction: Direction = Direction.ABOVE
    """Which side of the thresholds is bad."""
    degraded: float | None = None
    """Threshold (inclusive) from which the check is ``degraded``; ``None`` for none."""
    unhealthy: float | None = None
    """Threshold (inclusive) from which the check is ``unhealthy``; ``None`` for none."""
    no_data: Status = Status.UNHEALTHY
    """Status when the query returns nothing (or Prometheus rejects it)."""
    metric: str | None = None
    """Key in the response's ``metrics`` object that receives the value, if any."""

    @property
    def has_thresholds(self) -> bool:
        return self.degraded is not None or self.unhealthy is not None

    @property
    def rule_id(self) -> str:
        return f"{self.check}/{self.name}"


_FILESYSTEMS = 'fstype!~"tmpfs|ramfs|overlay|squashfs|nsfs|autofs",'

DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        check="cardano_node",
        name="up",
        query='max(up{job="$node_job",$selector})',
        description="Cardano node scrape status",
        unhealthy_message="Cardano node is down: none of its targets answers Prometheus scrapes",
        direction=Direction.BELOW,
        unhealthy=0,
    ),
    Rule(
        check="cardano_node",
        name="targets_down",
        query='count(up{job="$node_job",$selector} == 0) or vector(0)',
        description="Cardano node targets not answering scrapes",
        message="Cardano node targets not answering Prometheus scrapes: {value}",
        degraded=1,
    ),
    Rule(
        check="cardano_node",
        name="sync_lag",
        query=(
            "($wallclock_slot - max(cardano_node_metrics_slotNum_int{$selector}))"
            " * $slot_length_seconds"
        ),
        description="Cardano node sync lag",
        message="Cardano node sync lag: {value} behind",
        unit=Unit.SECONDS,
        degraded=180,
        unhealthy=600,
    ),
    Rule(
        check="cardano_node",
        name="kes_periods_remaining",
        query="max(cardano_node_metrics_remainingKESPeriods_int{$selector})",
        description="KES periods remaining",
        message="KES key expires soon: {value} left",
        unhealthy_message="KES key has expired: the operational certificate must be renewed",
        unit=Unit.KES_PERIODS,
        direction=Direction.BELOW,
        degraded=7,
        unhealthy=0,
        no_data=Status.DEGRADED,
    ),
    Rule(
        check="networking",
        name="peers",
        query=(
            "max(cardano_node_metrics_connectedPeers_int{$selector}"
            " or cardano_node_metrics_peerSelection_hot{$selector}"
            " or cardano_node_metrics_peerSelection_Hot_int{$selector})"
        ),
        description="Cardano node peers",
        message="Cardano node has few peers: {value} connected",
        unhealthy_message="Cardano node has no connected peers",
        direction=Direction.BELOW,
        degraded=1,
        unhealthy=0,
        no_data=Status.DEGRADED,
    ),
    Rule(
        check="storage",
        name="disk_usage",
        query=(
            f"max(100 * (1 - node_filesystem_avail_bytes{{{_FILESYSTEMS}$host_selector}}"
            f" / node_filesystem_size_bytes{{{_FILESYSTEMS}$host_selector}}))"
        ),
        description="Disk usage",
        message="High disk usage: {value} on the fullest filesystem",
        unit=Unit.PERCENT,
        degraded=80,
        unhealthy=90,
        no_data=Status.DEGRADED,
        metric="disk_usage",
    ),
    Rule(
        check="system",
        name="cpu_usage",
        # Idle time over all CPU time, both rates over the same window: a young series (a
        # restarted exporter) has the same few samples in both, so the ratio is right from the
        # second scrape on. (`1 - rate(idle)` alone divides the few seconds of samples by the
        # whole window and reads an exporter at 30 % as 99 % busy for minutes.)
        query=(
            "max(100 * (1 - sum by (instance)"
            ' (rate(node_cpu_seconds_total{mode="idle",$host_selector}[$rate_window]))'
            " / sum by (instance) (rate(node_cpu_seconds_total{$host_selector}[$rate_window]))))"
        ),
        description="CPU usage",
        message="High CPU usage: {value}",
        unit=Unit.PERCENT,
        degraded=80,
        no_data=Status.DEGRADED,
        metric="cpu_usage",
    ),
    Rule(
        check="system",
        name="memory_usage",
        query=(
            "max(100 * (1 - node_memory_MemAvailable_bytes{$host_selector}"
            " / node_memory_MemTotal_bytes{$host_selector}))"
        ),
        description="Memory usage",
        message="High memory usage: {value}",
        unit=Unit.PERCENT,
        degraded=85,
        unhealthy=95,
        no_data=Status.DEGRADED,
        metric="memory_usage",
    ),
)


@dataclass(frozen=True)
class QueryContext:
    """What a query template is filled with."""

    cluster: str
    cluster_label: str | None
    node_job: str
    network: Network
    rate_window: str = "5m"
    node_exporter_selector: str | None = None
    """Label matchers of the node_exporter series (``$selector`` in it is substituted); ``None``:
    ``$selector``, the same as the cardano-node series."""

    @property
    def selector(self) -> str:
        if self.cluster_label is None:
            return ""
        return f'{self.cluster_label}="{_promql_string(self.cluster)}"'

    @property
    def host_selector(self) -> str:
        if self.node_exporter_selector is None:
            return self.selector
        return string.Template(self.node_exporter_selector).substitute(selector=self.selector)


def render_query(template: str, ctx: QueryContext) -> str:
    """Fill a query template; raises ``KeyError``/``ValueError`` for a bad placeholder."""
    return string.Template(template).substitute(
        selector=ctx.selector,
        host_selector=ctx.host_selector,
        cluster=_promql_string(ctx.cluster),
        node_job=_promql_string(ctx.node_job),
        wallclock_slot=ctx.network.promql_wallclock_slot(),
        slot_length_seconds=f"{ctx.network.slot_length_seconds:g}",
        rate_window=ctx.rate_window,
    )


def cluster_probe_query(ctx: QueryContext) -> str | None:
    """A query that counts the cluster's scrape targets (``None`` without a cluster label)."""
    if ctx.cluster_label is None:
        return None
    return f"count(up{{{ctx.selector}}})"


def _promql_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


@dataclass(frozen=True)
class NoData:
    """A query answered without a usable value; ``reason`` says why for the error sentence."""

    reason: str = "no data in Prometheus"


QueryValue = Sequence[float] | NoData
"""What a query gave: the values of its series (NaN removed), or why there is none."""


@dataclass(frozen=True)
class RuleResult:
    rule: Rule
    status: Status
    value: float | None
    error: str | None


def evaluate_rule(
    rule: Rule, outcome: QueryValue, network: Network, cluster_note: str
) -> RuleResult:
    """Turn one query's values into the rule's status and, when not healthy, its sentence."""
    values = [] if isinstance(outcome, NoData) else [v for v in outcome if not math.isnan(v)]
    if not values:
        reason = outcome.reason if isinstance(outcome, NoData) else "no data in Prometheus"
        if not rule.has_thresholds:  # only feeds ``metrics``: nothing to report
            return RuleResult(rule, Status.HEALTHY, None, None)
        return RuleResult(rule, rule.no_data, None, f"{rule.description}: {reason}{cluster_note}")
    value = max(values) if rule.direction is Direction.ABOVE else min(values)
    status = Status.HEALTHY
    if _crossed(value, rule.unhealthy, rule.direction):
        status = Status.UNHEALTHY
    elif _crossed(value, rule.degraded, rule.direction):
        status = Status.DEGRADED
    error = None
    if status is not Status.HEALTHY:
        template = (
            rule.unhealthy_message
            if status is Status.UNHEALTHY and rule.unhealthy_message
            else rule.message or f"{rule.description}: {{value}}"
        )
        text = format_value(value, rule.unit, kes_period_seconds=network.kes_period_seconds)
        error = template.replace("{value}", text)
    return RuleResult(rule, status, value, error)


def _crossed(value: float, threshold: float | None, direction: Direction) -> bool:
    if threshold is None:
        return False
    return value >= threshold if direction is Direction.ABOVE else value <= threshold


@dataclass(frozen=True)
class HealthReport:
    """The answer for one cluster; :meth:`document` is the JSON body."""

    cluster: str
    status: Status
    timestamp: float
    checks: Mapping[str, Status] = field(default_factory=dict)
    metrics: Mapping[str, float | int] = field(default_factory=dict)
    errors: Sequence[str] = ()

    @property
    def http_status(self) -> int:
        return 200 if self.status in (Status.HEALTHY, Status.DEGRADED) else 503

    def document(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "status": self.status.value,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.timestamp)),
            "cluster": self.cluster,
        }
        if self.status is not Status.UNKNOWN:
            doc["checks"] = {name: status.value for name, status in self.checks.items()}
            doc["metrics"] = dict(self.metrics)
        if self.errors:
            doc["errors"] = list(self.errors)
        return doc


def unknown_report(cluster: str, error: str, now: float) -> HealthReport:
    """Status ``unknown``: nothing can be said about the cluster (HTTP 503)."""
    return HealthReport(cluster=cluster, status=Status.UNKNOWN, timestamp=now, errors=(error,))


def evaluate(
    rules: Sequence[Rule],
    outcomes: Mapping[str, QueryValue],
    ctx: QueryContext,
    now: float,
    cluster_targets: QueryValue | None = None,
) -> HealthReport:
    """Build the report from each rule's query outcome (keyed by ``Rule.rule_id``).

    ``cluster_targets`` is the outcome of :func:`cluster_probe_query`; when the cluster has no
    scrape target at all the answer is ``unknown`` rather than a list of missing data.
    """
    if cluster_targets is not None and not _positive(cluster_targets):
        return unknown_report(
            ctx.cluster,
            f"Unknown cluster: Prometheus has no scrape targets labelled {ctx.selector}",
            now,
        )
    note = f" for cluster {ctx.cluster}" if ctx.cluster_label is not None else ""
    results = [
        evaluate_rule(rule, outcomes.get(rule.rule_id, NoData()), ctx.network, note)
        for rule in rules
    ]
    by_check: dict[str, list[Status]] = {}
    metrics: dict[str, float | int] = {}
    for result in results:
        if result.rule.has_thresholds:  # a rule without thresholds only feeds ``metrics``
            by_check.setdefault(result.rule.check, []).append(result.status)
        if result.rule.metric and result.value is not None and math.isfinite(result.value):
            metrics[result.rule.metric] = document_value(result.value, result.rule.unit)
    checks = {name: worst(statuses) for name, statuses in by_check.items()}
    errors = [r.error for r in results if r.error]
    return HealthReport(
        cluster=ctx.cluster,
        status=worst(list(checks.values())),
        timestamp=now,
        checks=checks,
        metrics=metrics,
        errors=errors,
    )


def _positive(outcome: QueryValue) -> bool:
    return not isinstance(outcome, NoData) and any(v > 0 for v in outcome)
