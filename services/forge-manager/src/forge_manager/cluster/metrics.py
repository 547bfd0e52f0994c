"""Cluster-wide metrics, registered on a registry passed in (tests build their own).

Names are the seed's; every series carries the ``cluster`` label (this region's CLUSTER_NAME).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ClusterMetrics:
    def __init__(self, registry: CollectorRegistry, cluster: str) -> None:
        self.cluster = cluster
        labels = ["cluster"]
        self._success = Gauge(
            "cardano_cluster_health_check_success",
            "1 when the last health check of this region answered 200, else 0",
            labels,
            registry=registry,
        )
        self._failures = Gauge(
            "cardano_cluster_health_check_consecutive_failures",
            "Consecutive failure count (a failure adds one, a success removes one)",
            labels,
            registry=registry,
        )
        self._last_success = Gauge(
            "cardano_cluster_health_check_last_success_timestamp",
            "Unix time of the last successful health check",
            labels,
            registry=registry,
        )
        self._duration = Gauge(
            "cardano_cluster_health_check_duration_seconds",
            "Duration of the last health check request",
            labels,
            registry=registry,
        )
        self._forge_enabled = Gauge(
            "cardano_cluster_forge_enabled",
            "1 while this pod holds the pool-wide lease and its region forges",
            labels,
            registry=registry,
        )
        self._priority = Gauge(
            "cardano_cluster_effective_priority",
            "This region's effective priority (override or spec, +100 while health-demoted)",
            labels,
            registry=registry,
        )
        self._write_seconds = Histogram(
            "cardano_cluster_pool_lease_write_duration_seconds",
            "Round trip of pool-lease writes (acquire, renew, release), failed ones included",
            labels,
            buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0),
            registry=registry,
        )
        self._api_slow = Gauge(
            "cardano_cluster_coordination_api_slow",
            "1 while pool-lease writes approach KUBE_REQUEST_TIMEOUT (see the status condition "
            "CoordinationAPIResponsive)",
            labels,
            registry=registry,
        )
        self._decisions = Counter(
            "cardano_cluster_decisions_total",
            "Cluster-wide decisions taken by this pod, by action",
            ["cluster", "action"],
            registry=registry,
        )

    def health_probe(
        self, *, success: bool, failures: int, duration: float, success_time: float | None
    ) -> None:
        self._success.labels(self.cluster).set(1 if success else 0)
        self._failures.labels(self.cluster).set(failures)
        self._duration.labels(self.cluster).set(duration)
        if success_time is not None:
            self._last_success.labels(self.cluster).set(success_time)

    def health_failures(self, failures: int) -> None:
        self._failures.labels(self.cluster).set(failures)

    def forge_enabled(self, enabled: bool) -> None:
        self._forge_enabled.labels(self.cluster).set(1 if enabled else 0)

    def effective_priority(self, priority: int) -> None:
        self._priority.labels(self.cluster).set(priority)

    def pool_lease_write(self, seconds: float) -> None:
        self._write_seconds.labels(self.cluster).observe(seconds)

    def coordination_api_slow(self, slow: bool) -> None:
        self._api_slow.labels(self.cluster).set(1 if slow else 0)

    def decision(self, action: str) -> None:
        self._decisions.labels(self.cluster, action).inc()
