"""The health endpoint against a real Prometheus scraping fake cardano-node and node_exporter.

One Prometheus (module scope) scrapes three exporters: a cardano-node and a node_exporter labelled
``cluster="us-east-1-prod"`` and a cardano-node alone labelled ``cluster="eu-west-1"``. The app
runs in-process (Flask test client) with its real HTTP client; tests change the exporters and
wait until Prometheus has scraped the change before asking the endpoint.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from health_endpoint import create_app
from health_endpoint.health import HealthService
from health_endpoint.prometheus import PrometheusClient, Sample
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.fake_exporters import FakeCardanoNode, FakeNodeExporter
from tests.harness.prometheus import (
    PrometheusServer,
    ScrapeConfig,
    prometheus_factory,  # noqa: F401  # fixture
)

pytestmark = pytest.mark.integration

CLUSTER = "us-east-1-prod"
OTHER = "eu-west-1"


@dataclass
class Bed:
    prometheus: PrometheusServer
    node: FakeCardanoNode
    node_exporter: FakeNodeExporter
    other_node: FakeCardanoNode


def scrape_configs(bed_node: str, bed_exporter: str, other: str) -> list[ScrapeConfig]:
    return [
        {
            "job_name": "cardano-node",
            "static_configs": [
                {"targets": [bed_node], "labels": {"cluster": CLUSTER}},
                {"targets": [other], "labels": {"cluster": OTHER}},
            ],
        },
        {
            "job_name": "node-exporter",
            "static_configs": [{"targets": [bed_exporter], "labels": {"cluster": CLUSTER}}],
        },
    ]


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    with (
        FakeCardanoNode() as node,
        FakeNodeExporter() as node_exporter,
        FakeCardanoNode() as other_node,
    ):
        assert isinstance(node, FakeCardanoNode)
        assert isinstance(node_exporter, FakeNodeExporter)
        assert isinstance(other_node, FakeCardanoNode)
        configs = scrape_configs(node.target, node_exporter.target, other_node.target)
        with PrometheusServer(tmp_path_factory.mktemp("prometheus"), configs) as prometheus:
            prometheus.wait_for("count(up == 1)", lambda v: v == [3.0], what="3 targets up")
            # Until the 5s rate window is covered by samples the rate under-reads.
            prometheus.wait_for(
                '100 * (1 - avg(rate(node_cpu_seconds_total{mode="idle"}[5s])))',
                lambda v: bool(v) and 30 <= v[0] <= 40,
                what="CPU usage read right",
            )
            yield Bed(prometheus, node, node_exporter, other_node)


# The default CPU query rates over 5m, and Prometheus divides by the whole window: with seconds
# of history it would under-read the exporter's CPU usage, so the tests use a short window.
SHORT_RATE_WINDOW = "rate_window: 5s\n"


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []
    short_window = tmp_path / "rate-window.yaml"
    short_window.write_text(SHORT_RATE_WINDOW, encoding="utf-8")

    def make(prometheus_url: str, **env: str) -> Flask:
        settings = {
            "PROMETHEUS_URL": prometheus_url,
            "CACHE_TTL_SECONDS": "0",
            "PROMETHEUS_TIMEOUT_SECONDS": "2",
            "HEALTH_CONFIG_FILE": str(short_window),
        }
        settings.update(env)
        app = create_app({"ENV": settings, "REGISTRY": CollectorRegistry()})
        apps.append(app)
        return app

    yield make
    for app in apps:
        service(app).close()


def service(app: Flask) -> HealthService:
    svc = app.extensions["health_endpoint"]
    assert isinstance(svc, HealthService)
    return svc


def get_health(app: Flask, cluster: str = CLUSTER, **headers: str) -> tuple[int, dict[str, Any]]:
    response = app.test_client().get(f"/api/v1/health/cluster/{cluster}", headers=headers)
    body = response.get_json()
    assert isinstance(body, dict)
    return response.status_code, body


def metric_samples(app: Flask) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = app.test_client().get("/metrics").get_data(as_text=True)
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def sample(app: Flask, name: str, **labels: str) -> float:
    return metric_samples(app).get((name, tuple(sorted(labels.items()))), 0.0)


def test_healthy_cluster_answers_200_with_the_documented_fields(
    bed: Bed, make_app: Callable[..., Flask]
) -> None:
    app = make_app(bed.prometheus.url)

    code, body = get_health(app)

    assert code == 200, body
    assert list(body) == ["status", "timestamp", "cluster", "checks", "metrics"], body
    assert body["status"] == "healthy"
    assert body["cluster"] == CLUSTER
    assert body["timestamp"].endswith("Z")
    # No database is configured by default: the check is left out rather than reported healthy.
    assert body["checks"] == {
        "cardano_node": "healthy",
        "networking": "healthy",
        "storage": "healthy",
        "system": "healthy",
    }
    metrics = body["metrics"]
    assert metrics["memory_usage"] == 62.5  # 1 - 24 GiB / 64 GiB
    assert metrics["disk_usage"] == 40.0  # ext4 / is 60 % free; the full tmpfs is ignored
    assert 25.0 <= metrics["cpu_usage"] <= 45.0  # the exporter burns 35 % of its CPUs
    assert "network_latency_ms" not in metrics  # not configured by default


def test_node_that_stops_answering_scrapes_turns_cardano_node_unhealthy(
    bed: Bed, make_app: Callable[..., Flask]
) -> None:
    app = make_app(bed.prometheus.url)
    bed.node.failing = True
    try:
        bed.prometheus.wait_for(
            f'up{{job="cardano-node",cluster="{CLUSTER}"}}', lambda v: v == [0.0], what="up 0"
        )
        code, body = get_health(app)
    finally:
        bed.node.failing = False

    assert code == 503, body
    assert body["status"] == "unhealthy"
    assert body["checks"]["cardano_node"] == "unhealthy"
    assert body["checks"]["storage"] == "healthy"  # the machine itself is still fine
    assert "Cardano node is down: none of its targets answers Prometheus scrapes" in body["errors"]
    # The node's own series went stale with the failed scrape: said, not passed over.
    assert f"Cardano node sync lag: no data in Prometheus for cluster {CLUSTER}" in body["errors"]
    bed.prometheus.wait_for(f'up{{cluster="{CLUSTER}"}}', lambda v: v == [1.0, 1.0], what="back")


def test_lagging_slot_is_reported_in_minutes(bed: Bed, make_app: Callable[..., Flask]) -> None:
    app = make_app(bed.prometheus.url)
    lag_query = (
        f"{bed.node.network.promql_wallclock_slot()}"
        f' - cardano_node_metrics_slotNum_int{{cluster="{CLUSTER}"}}'
    )
    try:
        bed.node.lag_seconds = 300
        bed.prometheus.wait_for(lag_query, lambda v: bool(v) and 300 <= v[0] < 330, what="lag")
        degraded_code, degraded = get_health(app)

        bed.node.lag_seconds = 900
        bed.prometheus.wait_for(lag_query, lambda v: bool(v) and 900 <= v[0] < 930, what="lag")
        unhealthy_code, unhealthy = get_health(app)
    finally:
        bed.node.lag_seconds = 0
    bed.prometheus.wait_for(lag_query, lambda v: bool(v) and v[0] < 60, what="caught up")

    assert degraded_code == 200  # degraded alone still answers 200
    assert degraded["status"] == "degraded"
    assert degraded["checks"]["cardano_node"] == "degraded"
    assert degraded["errors"] == ["Cardano node sync lag: 5 minutes behind"]
    assert unhealthy_code == 503
    assert unhealthy["status"] == "unhealthy"
    assert unhealthy["errors"] == ["Cardano node sync lag: 15 minutes behind"]
    code, body = get_health(app)
    assert (code, body["status"]) == (200, "healthy")


def test_unknown_cluster_and_missing_data_are_said(
    bed: Bed, make_app: Callable[..., Flask]
) -> None:
    app = make_app(bed.prometheus.url)

    unknown_code, unknown = get_health(app, "ap-south-1")
    # eu-west-1 has a cardano-node but no node_exporter.
    partial_code, partial = get_health(app, OTHER)

    assert unknown_code == 503
    assert unknown["status"] == "unknown"
    assert unknown["errors"] == [
        'Unknown cluster: Prometheus has no scrape targets labelled cluster="ap-south-1"'
    ]
    assert partial_code == 200
    assert partial["status"] == "degraded"
    assert partial["checks"]["cardano_node"] == "healthy"
    assert partial["checks"]["storage"] == "degraded"
    assert partial["checks"]["system"] == "degraded"
    assert f"Disk usage: no data in Prometheus for cluster {OTHER}" in partial["errors"]
    assert partial["metrics"] == {}


def test_configuration_file_overrides_thresholds_and_adds_checks(
    bed: Bed, make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    bed.node_exporter.set_gauge("probe_duration_seconds", 0.25, {"module": "tcp_connect"})
    config = tmp_path / "health.yaml"
    config.write_text(
        SHORT_RATE_WINDOW
        + """
checks:
  system:
    cpu_usage: {degraded: 10}
  networking:
    peers: null
    latency:
      query: 'max(probe_duration_seconds{$selector}) * 1000'
      unit: milliseconds
      unhealthy: 200
      message: "High network latency detected: {value}"
      metric: network_latency_ms
  storage: null
""",
        encoding="utf-8",
    )
    app = make_app(bed.prometheus.url, HEALTH_CONFIG_FILE=str(config))
    bed.prometheus.wait_for("probe_duration_seconds", lambda v: v == [0.25], what="probe")

    code, body = get_health(app)

    assert code == 503
    assert body["checks"] == {
        "cardano_node": "healthy",
        "networking": "unhealthy",
        "system": "degraded",
    }
    assert body["metrics"]["network_latency_ms"] == 250
    assert "High network latency detected: 250ms" in body["errors"]
    assert any(e.startswith("High CPU usage: ") for e in body["errors"])


def test_cluster_label_switched_off_reads_every_series(
    bed: Bed, make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    config = tmp_path / "health.yaml"
    config.write_text("checks: {storage: null, system: null, networking: null}\n")  # no rates
    app = make_app(bed.prometheus.url, CLUSTER_LABEL="", HEALTH_CONFIG_FILE=str(config))
    bed.other_node.failing = True
    try:
        bed.prometheus.wait_for(f'up{{cluster="{OTHER}"}}', lambda v: v == [0.0], what="down")
        code, body = get_health(app, "anything")
    finally:
        bed.other_node.failing = False

    # Without a cluster label both clusters' nodes count: one of two targets is down.
    assert code == 200
    assert body["cluster"] == "anything"
    assert body["checks"] == {"cardano_node": "degraded"}
    assert body["errors"] == ["Cardano node targets not answering Prometheus scrapes: 1"]


class GatedClient:
    """The real client, but the first query waits until ``release`` is set."""

    def __init__(self, inner: PrometheusClient) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.entered = threading.Event()

    def query(self, promql: str) -> list[Sample]:
        self.entered.set()
        assert self.release.wait(30), "gate never released"
        return list(self.inner.query(promql))


def test_cache_and_single_flight_are_visible_in_metrics(
    bed: Bed, make_app: Callable[..., Flask]
) -> None:
    app = make_app(bed.prometheus.url, CACHE_TTL_SECONDS="300")
    svc = service(app)
    assert isinstance(svc.client, PrometheusClient)
    gate = GatedClient(svc.client)
    svc.client = gate
    callers = 6
    results: list[tuple[int, dict[str, Any]]] = []

    def call() -> None:
        results.append(get_health(app))

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    assert gate.entered.wait(30)
    # Everyone but the one computing now waits for its result instead of asking Prometheus.
    deadline = threading.Event()
    for _ in range(300):
        if svc.cache.waiting(CLUSTER) == callers - 1:
            break
        deadline.wait(0.1)
    assert svc.cache.waiting(CLUSTER) == callers - 1
    gate.release.set()
    for thread in threads:
        thread.join(30)
    for _ in range(4):
        results.append(get_health(app))  # within the TTL: from the cache

    assert [code for code, _ in results] == [200] * (callers + 4)
    queries_per_round = len(svc.config.rules) + 1  # plus the cluster-exists probe
    assert sample(app, "health_endpoint_evaluations_total", status="healthy") == 1
    assert sample(app, "health_endpoint_cache_lookups_total", result="miss") == 1
    assert sample(app, "health_endpoint_cache_lookups_total", result="shared") == callers - 1
    assert sample(app, "health_endpoint_cache_lookups_total", result="hit") == 4
    assert (
        sample(app, "health_endpoint_prometheus_queries_total", outcome="success")
        == queries_per_round
    )


def test_prometheus_stopped_gives_503_unknown(
    bed: Bed,
    make_app: Callable[..., Flask],
    prometheus_factory: Callable[..., PrometheusServer],  # noqa: F811
) -> None:
    own = prometheus_factory(scrape_configs(bed.node.target, bed.node_exporter.target, "x:1"))
    own.wait_for(f'up{{cluster="{CLUSTER}"}}', lambda v: v == [1.0, 1.0], what="targets up")
    app = make_app(own.url, READY_MAX_AGE_SECONDS="0.001")
    client = app.test_client()
    assert client.get("/readyz").status_code == 200

    own.stop()
    code, body = get_health(app)
    ready = client.get("/readyz")

    assert code == 503
    assert body["status"] == "unknown"
    assert body["cluster"] == CLUSTER
    assert "checks" not in body
    assert len(body["errors"]) == 1
    assert body["errors"][0].startswith(f"Cannot reach Prometheus: Prometheus at {own.url}")
    assert ready.status_code == 503
    assert ready.get_json()["status"] == "not_ready"
    assert client.get("/healthz").status_code == 200  # liveness never asks Prometheus
    assert sample(app, "health_endpoint_evaluations_total", status="unknown") == 1
    assert sample(app, "health_endpoint_prometheus_queries_total", outcome="unavailable") >= 1


def test_authentication_refuses_missing_or_wrong_token(
    bed: Bed, make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    app = make_app(bed.prometheus.url, AUTH_TOKEN_FILE=str(token_file))

    missing_code, missing = get_health(app)
    wrong_code, wrong = get_health(app, Authorization="Bearer not-the-token")
    missing_response = app.test_client().get(f"/api/v1/health/cluster/{CLUSTER}")
    ok_code, ok = get_health(app, Authorization="Bearer s3cret-token")

    assert (missing_code, missing) == (401, {"error": "missing bearer token"})
    assert missing_response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (wrong_code, wrong) == (401, {"error": "invalid bearer token"})
    assert ok_code == 200
    assert ok["status"] == "healthy"
    assert app.test_client().get("/healthz").status_code == 200  # probes need no token
    assert sample(app, "health_endpoint_auth_failures_total", reason="missing") == 2
    assert sample(app, "health_endpoint_auth_failures_total", reason="invalid") == 1
    assert sample(app, "health_endpoint_evaluations_total", status="healthy") == 1
