"""The Flask app end to end with a scripted Prometheus at the client seam."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from health_endpoint import ConfigError, create_app
from health_endpoint.checks import HealthReport, unknown_report
from health_endpoint.health import HealthService
from health_endpoint.prometheus import PrometheusUnavailable, QueryRejected
from prometheus_client import CollectorRegistry
from scripted_prometheus import ScriptedPrometheus, healthy_answers

NOW = 1_759_387_511.0  # 2025-10-02T06:45:11Z
CLUSTER = "us-east-1-prod"
PATH = f"/api/v1/health/cluster/{CLUSTER}"


class Bed:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.prometheus = ScriptedPrometheus(healthy_answers())
        self.registry = CollectorRegistry()
        self.apps: list[Flask] = []

    def app(self, registry: CollectorRegistry | None = None, **env: str) -> Flask:
        settings = {"PROMETHEUS_URL": "http://prometheus:9090", "CACHE_TTL_SECONDS": "0", **env}
        app = create_app(
            {
                "ENV": settings,
                "REGISTRY": registry or self.registry,
                "QUERY_CLIENT": self.prometheus,
                "CLOCK": lambda: NOW,
            }
        )
        self.apps.append(app)
        return app

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    b = Bed(tmp_path)
    yield b
    for app in b.apps:
        service = app.extensions["health_endpoint"]
        assert isinstance(service, HealthService)
        service.close()


def get(app: Flask, path: str = PATH, **headers: str) -> tuple[int, Any]:
    response = app.test_client().get(path, headers=headers)
    return response.status_code, response.get_json()


def test_healthy_document(bed: Bed) -> None:
    code, body = get(bed.app())
    assert code == 200
    assert body == {
        "status": "healthy",
        "timestamp": "2025-10-02T06:45:11Z",
        "cluster": CLUSTER,
        "checks": {
            "cardano_node": "healthy",
            "networking": "healthy",
            "storage": "healthy",
            "system": "healthy",
        },
        "metrics": {"disk_usage": 23.1, "cpu_usage": 45.2, "memory_usage": 67.8},
    }
    assert all('cluster="us-east-1-prod"' in q for q in bed.prometheus.queries)


def test_unhealthy_document_with_sentences(bed: Bed) -> None:
    bed.prometheus.answers.update({"cardano_node_metrics_slotNum_int": 300, "connectedPeers": 0})
    code, body = get(bed.app())
    assert code == 503
    assert body["status"] == "unhealthy"
    assert body["checks"]["cardano_node"] == "degraded"
    assert body["checks"]["networking"] == "unhealthy"
    assert body["errors"] == [
        "Cardano node sync lag: 5 minutes behind",
        "Cardano node has no connected peers",
    ]


def test_prometheus_unreachable_is_unknown(bed: Bed) -> None:
    bed.prometheus.answers = {"": PrometheusUnavailable("Prometheus at x is unreachable: refused")}
    code, body = get(bed.app())
    assert code == 503
    assert body["status"] == "unknown"
    assert body["errors"] == ["Cannot reach Prometheus: Prometheus at x is unreachable: refused"]
    assert bed.sample("health_endpoint_evaluations_total", status="unknown") == 1


def test_a_rejected_query_is_reported_not_passed(bed: Bed) -> None:
    bed.prometheus.answers = {
        **healthy_answers(),
        "remainingKESPeriods": QueryRejected("Prometheus rejected the query: parse error"),
    }
    code, body = get(bed.app())
    assert code == 200  # the KES rule's no-data policy is "degraded"
    assert body["status"] == "degraded"
    assert body["errors"] == [
        "KES periods remaining: Prometheus rejected the query: parse error for cluster " + CLUSTER
    ]
    assert bed.sample("health_endpoint_prometheus_queries_total", outcome="rejected") == 1


def test_all_queries_of_a_request_run_at_the_same_time(bed: Bed) -> None:
    app = bed.app()
    service = app.extensions["health_endpoint"]
    assert isinstance(service, HealthService)
    expected = len(service.config.rules) + 1  # plus the cluster probe
    barrier = threading.Barrier(expected, timeout=10)

    def meet(_promql: str) -> None:
        barrier.wait()  # breaks unless every query is in flight at once

    bed.prometheus.before = meet
    code, body = get(app)
    assert code == 200, body
    assert len(bed.prometheus.queries) == expected


def test_a_query_that_never_returns_makes_the_answer_unknown(bed: Bed) -> None:
    release = threading.Event()

    def hang_on_up(promql: str) -> None:
        if "up{job" in promql:
            release.wait(10)

    bed.prometheus.before = hang_on_up
    app = bed.app(PROMETHEUS_TIMEOUT_SECONDS="0.05", PROMETHEUS_CLIENT_TIMEOUT_SECONDS="0.1")
    try:
        code, body = get(app)
    finally:
        release.set()
    assert code == 503
    assert body["status"] == "unknown"
    assert "queries got no answer within 0.6 s" in body["errors"][0]


def test_cached_answers_are_reused_per_cluster(bed: Bed) -> None:
    app = bed.app(CACHE_TTL_SECONDS="60")
    get(app)
    asked = len(bed.prometheus.queries)
    get(app)
    get(app, "/api/v1/health/cluster/eu-west-1")
    assert len(bed.prometheus.queries) == 2 * asked
    assert bed.sample("health_endpoint_cache_lookups_total", result="hit") == 1
    assert bed.sample("health_endpoint_cache_lookups_total", result="miss") == 2


def test_invalid_cluster_name_is_refused(bed: Bed) -> None:
    code, body = get(bed.app(), '/api/v1/health/cluster/a"b')
    assert code == 400
    assert "invalid cluster name" in body["error"]
    assert bed.prometheus.queries == []


def test_probes_and_metrics(bed: Bed) -> None:
    app = bed.app(READY_MAX_AGE_SECONDS="30")
    assert get(app, "/healthz") == (200, {"status": "ok"})
    assert bed.prometheus.queries == []  # liveness never asks Prometheus
    assert get(app, "/readyz") == (200, {"status": "ready", "message": "Prometheus answered"})
    assert bed.prometheus.queries == ["vector(1)"]
    get(app, "/readyz")
    assert bed.prometheus.queries == ["vector(1)"]  # answered recently: not asked again
    bed.prometheus.answers = {"": PrometheusUnavailable("Prometheus at x is unreachable")}
    code, body = get(bed.app(CollectorRegistry()), "/readyz")
    assert code == 503
    assert body["status"] == "not_ready"
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert b'health_endpoint_http_requests_total{code="200",handler="/healthz"} 1.0' in (
        response.data
    )
    code, body = get(app, "/nope")
    assert code == 404
    assert set(body) == {"error"}


def test_bearer_token(bed: Bed) -> None:
    token = bed.tmp_path / "token"
    token.write_text("letmein")
    app = bed.app(AUTH_TOKEN_FILE=str(token))
    assert get(app)[0] == 401
    assert get(app, Authorization="Bearer nope") == (401, {"error": "invalid bearer token"})
    assert get(app, Authorization="Bearer letmein")[0] == 200
    token.unlink()
    assert get(app, Authorization="Bearer letmein")[0] == 503  # fail closed
    assert bed.sample("health_endpoint_auth_failures_total", reason="unavailable") == 1


def test_bad_environment_fails_app_creation() -> None:
    with pytest.raises(ConfigError, match="PROMETHEUS_URL is not set"):
        create_app({"ENV": {}, "REGISTRY": CollectorRegistry()})


def test_an_unexpected_failure_is_a_json_500(bed: Bed) -> None:
    bed.prometheus.answers = {"": ZeroDivisionError("bug")}
    code, body = get(bed.app())
    assert code == 500
    assert body == {"error": "internal error: ZeroDivisionError"}


def test_a_caller_that_waits_too_long_for_the_round_in_flight_gets_unknown(bed: Bed) -> None:
    app = bed.app(PROMETHEUS_TIMEOUT_SECONDS="0.05", PROMETHEUS_CLIENT_TIMEOUT_SECONDS="0.1")
    service = app.extensions["health_endpoint"]
    assert isinstance(service, HealthService)
    release = threading.Event()

    def hold() -> HealthReport:
        release.wait(10)
        return unknown_report(CLUSTER, "held", NOW)

    leader = threading.Thread(target=lambda: service.cache.get(CLUSTER, hold, wait_timeout=10))
    leader.start()
    try:
        code, body = get(app)
    finally:
        release.set()
        leader.join(10)
    assert code == 503
    assert body["status"] == "unknown"
    assert "did not finish within 1.6 s" in body["errors"][0]
