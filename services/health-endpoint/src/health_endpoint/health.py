"""One cluster's health: run every query concurrently, evaluate, cache, count.

Each upstream round submits all of a cluster's queries at once to a thread pool, so a request
costs about the slowest query, not the sum. The round is bounded by the client timeout: whatever
has not answered by then makes the answer ``unknown`` (Prometheus could not be asked in time).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import threading
import time
from collections.abc import Callable

from health_endpoint.cache import SingleFlightCache
from health_endpoint.checks import (
    HealthReport,
    NoData,
    QueryContext,
    QueryValue,
    cluster_probe_query,
    evaluate,
    render_query,
    unknown_report,
)
from health_endpoint.config import ServiceConfig
from health_endpoint.metrics import ServiceMetrics
from health_endpoint.prometheus import PrometheusUnavailable, QueryClient, QueryRejected

log = logging.getLogger(__name__)

_PROBE = "__cluster_targets__"


class HealthService:
    """Answers "how healthy is cluster X" for one worker process."""

    def __init__(
        self,
        config: ServiceConfig,
        client: QueryClient,
        metrics: ServiceMetrics,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.client = client
        self.metrics = metrics
        self._clock = clock
        self._monotonic = monotonic
        settings = config.settings
        self.round_timeout = settings.prometheus_client_timeout_seconds + 0.5
        self.cache: SingleFlightCache[str, HealthReport] = SingleFlightCache(
            settings.cache_ttl_seconds, clock=monotonic
        )
        self._pool_lock = threading.Lock()
        self._pool: cf.ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._last_answer: float | None = None  # monotonic time Prometheus last answered

    # -- thread pool, created lazily per process so a forked worker never inherits threads
    def _executor(self) -> cf.ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = cf.ThreadPoolExecutor(
                    max_workers=self.config.settings.query_concurrency,
                    thread_name_prefix="promql",
                )
                self._pool_pid = os.getpid()
            return self._pool

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None

    def cluster_health(self, cluster: str) -> HealthReport:
        """The (possibly cached) report for ``cluster``."""
        try:
            report, lookup = self.cache.get(
                cluster, lambda: self._evaluate(cluster), wait_timeout=self.round_timeout + 1.0
            )
        except TimeoutError:
            return unknown_report(
                cluster,
                "Cannot reach Prometheus: the round of queries in flight for this cluster "
                f"did not finish within {self.round_timeout + 1.0:g} s",
                self._clock(),
            )
        self.metrics.cache_lookups.labels(lookup.value).inc()
        return report

    def _query(self, promql: str) -> QueryValue:
        started = self._monotonic()
        try:
            samples = self.client.query(promql)
        except QueryRejected as exc:
            self.metrics.prometheus_queries.labels("rejected").inc()
            self._answered()
            return NoData(str(exc))
        except PrometheusUnavailable:
            self.metrics.prometheus_queries.labels("unavailable").inc()
            raise
        finally:
            self.metrics.prometheus_query_duration.observe(self._monotonic() - started)
        self.metrics.prometheus_queries.labels("success").inc()
        self._answered()
        return [s.value for s in samples]

    def _answered(self) -> None:
        self._last_answer = self._monotonic()

    def _evaluate(self, cluster: str) -> HealthReport:
        started = self._monotonic()
        ctx = QueryContext(
            cluster=cluster,
            cluster_label=self.config.settings.cluster_label,
            node_job=self.config.node_job,
            network=self.config.network,
            rate_window=self.config.rate_window,
            node_exporter_selector=self.config.settings.node_exporter_selector,
        )
        queries = {rule.rule_id: render_query(rule.query, ctx) for rule in self.config.rules}
        probe = cluster_probe_query(ctx)
        if probe is not None:
            queries[_PROBE] = probe
        try:
            outcomes = self._run_all(queries)
        except PrometheusUnavailable as exc:
            report = unknown_report(cluster, f"Cannot reach Prometheus: {exc}", self._clock())
            log.warning("cluster %s: %s", cluster, exc)
        else:
            report = evaluate(
                self.config.rules,
                outcomes,
                ctx,
                self._clock(),
                cluster_targets=outcomes.get(_PROBE) if probe is not None else None,
            )
        self.metrics.evaluations.labels(report.status.value).inc()
        self.metrics.evaluation_duration.observe(self._monotonic() - started)
        return report

    def _run_all(self, queries: dict[str, str]) -> dict[str, QueryValue]:
        pool = self._executor()
        futures = {key: pool.submit(self._query, promql) for key, promql in queries.items()}
        done, pending = cf.wait(futures.values(), timeout=self.round_timeout)
        for future in pending:
            future.cancel()
        if pending:
            raise PrometheusUnavailable(
                f"{len(pending)} of {len(futures)} queries got no answer within "
                f"{self.round_timeout:g} s"
            )
        for future in done:
            error = future.exception()
            if isinstance(error, PrometheusUnavailable):
                raise error
        return {key: future.result() for key, future in futures.items()}

    def readiness(self) -> tuple[bool, str]:
        """Ready when Prometheus answered within ``READY_MAX_AGE_SECONDS`` (asking it if not)."""
        max_age = self.config.settings.ready_max_age_seconds
        last = self._last_answer
        if last is not None and self._monotonic() - last < max_age:
            return True, "Prometheus answered recently"
        try:
            self._query("vector(1)")
        except PrometheusUnavailable as exc:
            return False, f"Cannot reach Prometheus: {exc}"
        return True, "Prometheus answered"
