"""Prometheus metrics. State read at scrape time comes from a custom collector; events are counters.

Tests build their own ``CollectorRegistry``; nothing here touches the global registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from forge_manager import __version__


@dataclass(frozen=True)
class StateSample:
    """What the manager reports at scrape time."""

    leader: bool
    forging: bool
    credentials_present: bool
    sources_ok: bool
    node_socket_up: bool
    node_flag_missing: bool
    seconds_since_cycle: float
    forging_since: float = 0.0
    """Unix time at which this pod last started forging; 0 while it does not forge."""


class _StateCollector(Collector):
    def __init__(self, pod: str, cluster: str, sample: Callable[[], StateSample]) -> None:
        self._pod = pod
        self._cluster = cluster
        self._sample = sample

    def collect(self) -> Iterator[Metric]:
        s = self._sample()
        labels = ["pod", "cluster"]
        values = [self._pod, self._cluster]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(values, value)
            return g

        yield gauge("cardano_leader_status", "1 when this pod holds the lease", float(s.leader))
        yield gauge(
            "cardano_forging_enabled",
            "1 when this pod's node holds the credentials and was signalled to forge",
            float(s.forging),
        )
        yield gauge(
            "cardano_forging_since_timestamp_seconds",
            "Unix time at which this pod last started forging, 0 while it does not forge "
            "(lets an alert tell a real overlap from a hand-over between two scrapes)",
            s.forging_since,
        )
        yield gauge(
            "cardano_forge_credentials_present",
            "1 when any credential file exists in the node's secrets directory",
            float(s.credentials_present),
        )
        yield gauge(
            "cardano_forge_source_credentials_ok",
            "0 when a source credential file is missing or empty (pod out of the election)",
            float(s.sources_ok),
        )
        yield gauge(
            "cardano_node_socket_up",
            "1 when a connect() to the node socket succeeds",
            float(s.node_socket_up),
        )
        yield gauge(
            "cardano_node_non_producing_flag_missing",
            "1 when cardano-node runs without --start-as-non-producing-node",
            float(s.node_flag_missing),
        )
        yield gauge(
            "cardano_forge_manager_seconds_since_last_cycle",
            "seconds since the control loop last completed a cycle",
            s.seconds_since_cycle,
        )


class ForgeMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        pod: str,
        cluster: str,
        sample: Callable[[], StateSample],
    ) -> None:
        self.registry = registry
        registry.register(_StateCollector(pod, cluster, sample))
        self.leadership_changes = Counter(
            "cardano_leadership_changes",
            "Times this pod gained or lost leadership",
            registry=registry,
        )
        self.sighup_signals = Counter(
            "cardano_sighup_signals",
            "SIGHUP signals delivered to cardano-node, by reason",
            ["reason"],
            registry=registry,
        )
        self.signal_failures = Counter(
            "cardano_node_signal_failures",
            "SIGHUPs that could not be delivered (node not found, permission denied)",
            ["reason"],
            registry=registry,
        )
        self.pid_file_mismatches = Counter(
            "cardano_node_pid_file_mismatches",
            "Times CARDANO_NODE_PID_FILE named a live process that is not the node (treated as "
            "node not found)",
            registry=registry,
        )
        self.node_stops = Counter(
            "cardano_node_stops",
            "Times the node was stopped because the credentials could not be removed, by the "
            "signal that ended it (sigterm, sigkill)",
            ["signal"],
            registry=registry,
        )
        self.credential_operations = Counter(
            "cardano_credential_operations",
            "Credential file operations performed (install, remove)",
            ["operation"],
            registry=registry,
        )
        self.credential_failures = Counter(
            "cardano_credential_operation_failures",
            "Credential file operations that failed",
            ["operation"],
            registry=registry,
        )
        self.source_errors = Counter(
            "cardano_source_credential_errors",
            "Cycles in which a source credential file was missing, empty or unreadable",
            registry=registry,
        )
        self.lease_errors = Counter(
            "cardano_lease_api_errors",
            "Lease API calls that failed (timeout, connection, HTTP error), by operation",
            ["operation"],
            registry=registry,
        )
        self.demotions = Counter(
            "cardano_forge_demotions",
            "Times this pod stopped forging, by cause",
            ["cause"],
            registry=registry,
        )
        self.loop_exceptions = Counter(
            "cardano_forge_manager_loop_exceptions",
            "Unexpected exceptions in the control loop (each ends in demotion)",
            registry=registry,
        )
        self.flag_missing_events = Counter(
            "cardano_node_non_producing_flag_missing_detections",
            "Node instances found running without --start-as-non-producing-node",
            registry=registry,
        )
        self.stale_decisions = Counter(
            "cardano_forge_stale_decisions",
            "Decisions to forge dropped right before acting on them (install, enable): the "
            "leadership deadline had passed or the cluster permit was withdrawn meanwhile",
            ["action"],
            registry=registry,
        )
        self.lease_renew_latency = Histogram(
            "cardano_lease_renew_duration_seconds",
            "Latency of lease renew requests (successful or not)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        Info("cardano_forge_manager", "forge-manager build", registry=registry).info(
            {"version": __version__}
        )
