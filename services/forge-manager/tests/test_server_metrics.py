"""HTTP endpoints and the metric names the chart, alerts and dashboards rely on."""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from forge_manager import __version__
from forge_manager.decision import StartupState
from forge_manager.metrics import ForgeMetrics, StateSample
from forge_manager.server import Endpoints, MetricsServer
from prometheus_client import CollectorRegistry


class State:
    startup = StartupState.NOT_READY
    since_cycle = 0.0
    sample = StateSample(
        leader=True,
        forging=True,
        credentials_present=True,
        sources_ok=True,
        node_socket_up=True,
        node_flag_missing=False,
        seconds_since_cycle=0.5,
    )


@pytest.fixture
def server() -> Iterator[tuple[MetricsServer, State, CollectorRegistry]]:
    state = State()
    registry = CollectorRegistry()
    metrics = ForgeMetrics(registry, pod="bp-0", cluster="eu", sample=lambda: state.sample)
    metrics.sighup_signals.labels("enable").inc()
    srv = MetricsServer(
        "127.0.0.1",
        0,
        Endpoints(
            startup_state=lambda: state.startup,
            seconds_since_cycle=lambda: state.since_cycle,
            renew_deadline=10.0,
            registry=registry,
        ),
    )
    srv.start()
    yield srv, state, registry
    srv.stop()


def get(srv: MetricsServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode()
        exc.close()
        return exc.code, body


def test_startup_status_exactly_as_the_seed(
    server: tuple[MetricsServer, State, CollectorRegistry],
) -> None:
    srv, state, _ = server
    code, body = get(srv, "/startup-status")
    doc = json.loads(body)
    assert code == 503
    assert doc == {
        "status": "not_ready",
        "message": "Startup credentials not yet provisioned",
        "credentials_provisioned": False,
        "timestamp": doc["timestamp"],
    }
    state.startup = StartupState.PROVISIONED
    code, body = get(srv, "/startup-status")
    doc = json.loads(body)
    assert code == 200
    assert doc == {
        "status": "ready",
        "message": "Startup credentials provisioned successfully",
        "credentials_provisioned": True,
        "timestamp": doc["timestamp"],
    }
    assert doc["timestamp"].endswith("Z") and len(doc["timestamp"]) == 20
    # A sidecar restarted beside a running node: nothing to gate, no credentials claimed.
    state.startup = StartupState.NODE_RUNNING
    code, body = get(srv, "/startup-status")
    doc = json.loads(body)
    assert code == 200
    assert doc == {
        "status": "ready",
        "message": "cardano-node is already running; no startup credentials needed",
        "credentials_provisioned": False,
        "timestamp": doc["timestamp"],
    }


def test_health_fails_when_the_loop_is_stuck(
    server: tuple[MetricsServer, State, CollectorRegistry],
) -> None:
    srv, state, _ = server
    state.since_cycle = 3.0
    assert get(srv, "/health")[0] == 200
    state.since_cycle = 10.5
    code, body = get(srv, "/health")
    assert code == 503 and json.loads(body)["status"] == "unhealthy"


def test_metrics_names_and_labels(server: tuple[MetricsServer, State, CollectorRegistry]) -> None:
    srv, _, registry = server
    code, body = get(srv, "/metrics")
    assert code == 200
    assert 'cardano_leader_status{cluster="eu",pod="bp-0"} 1.0' in body
    assert 'cardano_forging_enabled{cluster="eu",pod="bp-0"} 1.0' in body
    assert registry.get_sample_value("cardano_sighup_signals_total", {"reason": "enable"}) == 1
    assert registry.get_sample_value("cardano_leadership_changes_total") == 0
    assert registry.get_sample_value("cardano_forge_manager_info", {"version": __version__}) == 1
    assert "cardano_lease_renew_duration_seconds_bucket" in body
    assert get(srv, "/nope")[0] == 404


def test_a_client_that_gives_up_costs_one_debug_line_not_a_traceback(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    answered = threading.Event()

    def slow_since_cycle() -> float:
        time.sleep(0.3)  # the client is gone by then
        answered.set()
        return 0.0

    srv = MetricsServer(
        "127.0.0.1",
        0,
        Endpoints(
            startup_state=lambda: StartupState.NOT_READY,
            seconds_since_cycle=slow_since_cycle,
            renew_deadline=10.0,
            registry=CollectorRegistry(),
        ),
    )
    srv.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="forge_manager"):
            for _ in range(3):
                answered.clear()
                client = socket.create_connection(("127.0.0.1", srv.port))
                client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                # Reset, not FIN: the server's write then fails at once.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                assert answered.wait(5)
            time.sleep(0.3)
            assert get(srv, "/health")[0] == 200  # and the server still answers
    finally:
        srv.stop()
    assert "Traceback" not in capfd.readouterr().err
    gave_up = [r for r in caplog.records if "closed the connection" in r.getMessage()]
    assert gave_up and all(r.levelno == logging.DEBUG for r in gave_up)
