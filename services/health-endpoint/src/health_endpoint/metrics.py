"""The service's own metrics, and their exposition under one or several gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn.conf.py sets it when it starts several workers)
every worker writes its samples to files in that directory and ``/metrics`` aggregates them all
with a per-request ``MultiProcessCollector``: whichever worker answers the scrape, the counts are
the whole server's. Without it, the app's own registry is exposed.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """All metrics of one app, registered in ``registry`` (tests pass their own)."""

    def __init__(self, registry: CollectorRegistry, multiproc_dir: Path | None = None) -> None:
        self.registry = registry
        self.multiproc_dir = multiproc_dir
        self.http_requests = Counter(
            "health_endpoint_http_requests_total",
            "HTTP requests answered, by route and status code.",
            ["handler", "code"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "health_endpoint_http_request_duration_seconds",
            "Time to answer an HTTP request, by route.",
            ["handler"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.cache_lookups = Counter(
            "health_endpoint_cache_lookups_total",
            "Cluster health lookups: hit (cached), miss (computed), shared (waited for a "
            "computation in flight).",
            ["result"],
            registry=registry,
        )
        self.evaluations = Counter(
            "health_endpoint_evaluations_total",
            "Upstream rounds (all queries for one cluster), by resulting status.",
            ["status"],
            registry=registry,
        )
        self.evaluation_duration = Histogram(
            "health_endpoint_evaluation_duration_seconds",
            "Time of one upstream round.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.prometheus_queries = Counter(
            "health_endpoint_prometheus_queries_total",
            "PromQL queries sent, by outcome (success, rejected, unavailable).",
            ["outcome"],
            registry=registry,
        )
        self.prometheus_query_duration = Histogram(
            "health_endpoint_prometheus_query_duration_seconds",
            "Time of one PromQL query, including the HTTP round trip.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.auth_failures = Counter(
            "health_endpoint_auth_failures_total",
            "Requests refused by bearer-token authentication, by reason.",
            ["reason"],
            registry=registry,
        )

    def exposition(self) -> tuple[bytes, str]:
        """Body and content type of ``/metrics``."""
        if self.multiproc_dir is not None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(self.multiproc_dir))  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
