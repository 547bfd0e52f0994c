"""The health check against a real HTTP(S) server on loopback (no mocks of requests)."""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from forge_manager import __version__
from forge_manager.cluster.health_check import HealthChecker, HealthTracker, probe
from forge_manager.cluster.metrics import ClusterMetrics
from forge_manager.cluster.model import HealthCheckSpec
from prometheus_client import CollectorRegistry

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# ---- the counting rules (the seed's scenarios) ---------------------------------------------------
def run(tracker: HealthTracker, results: str) -> list[tuple[int, bool]]:
    out = []
    for r in results:
        s = tracker.record(r == "+", "", T0)
        out.append((s.consecutive_failures, s.demoted))
    return out


def test_seed_degradation_then_recovery_walks_3_2_1_0() -> None:
    t = HealthTracker(3)
    assert run(t, "---") == [(1, False), (2, False), (3, True)]
    assert not t.snapshot().healthy
    assert run(t, "+") == [(2, True)]
    assert t.snapshot().healthy  # seed: "consecutive_failures = 2, healthy = true"
    assert run(t, "++") == [(1, True), (0, False)]


def test_failures_are_counted_up_to_the_threshold() -> None:
    t = HealthTracker(3)
    run(t, "------")
    assert t.snapshot().consecutive_failures == 3
    assert run(t, "+++") == [(2, True), (1, True), (0, False)]


def test_a_flapping_endpoint_stays_demoted_until_zero() -> None:
    t = HealthTracker(2)
    assert run(t, "--+-+-++") == [
        (1, False), (2, True), (1, True), (2, True), (1, True), (2, True), (1, True), (0, False)
    ]  # fmt: skip


def test_isolated_failures_below_the_threshold_never_demote() -> None:
    t = HealthTracker(3)
    assert all(not demoted for _, demoted in run(t, "-+-+-+-+--+-+"))


def test_lowering_the_threshold_applies_at_once() -> None:
    t = HealthTracker(5)
    run(t, "---")
    t.set_threshold(2)
    s = t.snapshot()
    assert (s.consecutive_failures, s.demoted) == (2, True)


def test_restore_continues_a_previous_leaders_count() -> None:
    t = HealthTracker(3)
    t.restore(2, demoted=True)
    assert run(t, "++") == [(1, True), (0, False)]


def test_tracker_is_thread_safe() -> None:
    t = HealthTracker(1000)

    def fail() -> None:
        for _ in range(200):
            t.record(False, "", T0)

    threads = [threading.Thread(target=fail) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert t.snapshot().consecutive_failures == 800
    assert t.snapshot().probes == 800


# ---- a real server -------------------------------------------------------------------------------
@dataclass
class Behaviour:
    status: int = 200
    delay: float = 0.0
    seen: list[dict[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    behaviour: Behaviour


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        b = self.server.behaviour
        b.seen.append({k.lower(): v for k, v in self.headers.items()})
        if b.delay:
            b.release.wait(b.delay)
        body = b'{"status":"healthy"}' if b.status == 200 else b'{"status":"unhealthy"}'
        self.send_response(b.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour, _Server]]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.behaviour = Behaviour()
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/health", srv.behaviour, srv
    finally:
        srv.behaviour.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def closed_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_200_is_a_success_and_sends_the_user_agent(server: tuple[str, Behaviour, _Server]) -> None:
    url, b, _ = server
    with requests.Session() as session:
        r = probe(session, url, 2.0)
    assert r.success and r.status_code == 200
    assert b.seen[0]["user-agent"] == f"cardano-forge-manager/{__version__}"
    assert "authorization" not in b.seen[0]


@pytest.mark.parametrize("status", [503, 500, 204, 302, 404])
def test_anything_but_200_is_a_failure(server: tuple[str, Behaviour, _Server], status: int) -> None:
    url, b, _ = server
    b.status = status
    with requests.Session() as session:
        r = probe(session, url, 2.0)
    assert not r.success
    assert r.status_code == status
    assert r.message.startswith(f"HTTP {status}")


def test_a_slow_endpoint_is_a_timeout_failure(server: tuple[str, Behaviour, _Server]) -> None:
    url, b, _ = server
    b.delay = 30.0  # released by the fixture at teardown
    with requests.Session() as session:
        r = probe(session, url, 0.2)
    assert not r.success
    assert r.message == "timed out after 0.2 s"


def test_connection_refused_is_a_failure() -> None:
    with requests.Session() as session:
        r = probe(session, f"http://127.0.0.1:{closed_port()}/health", 1.0)
    assert not r.success and r.status_code is None
    assert r.message.startswith("request failed:")


def test_bearer_token_is_read_from_the_file_each_time(
    server: tuple[str, Behaviour, _Server], tmp_path: Path
) -> None:
    url, b, _ = server
    token = tmp_path / "token"
    token.write_text("first\n")
    with requests.Session() as session:
        assert probe(session, url, 2.0, token_file=token).success
        token.write_text("second")
        assert probe(session, url, 2.0, token_file=token).success
    assert [h["authorization"] for h in b.seen] == ["Bearer first", "Bearer second"]


def test_missing_token_file_is_a_failure_without_a_request(
    server: tuple[str, Behaviour, _Server], tmp_path: Path
) -> None:
    url, b, _ = server
    with requests.Session() as session:
        r = probe(session, url, 2.0, token_file=tmp_path / "absent")
    assert not r.success
    assert r.message.startswith("cannot read token file")
    assert b.seen == []


# ---- TLS -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=test-ca")  # fmt: skip
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
    openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "srv.crt", "-days", "2", "-extfile", "ext")  # fmt: skip
    return d


@pytest.fixture
def tls_url(server: tuple[str, Behaviour, _Server], pki: Path) -> str:
    url, _, srv = server
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "srv.crt", pki / "srv.key")
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    return url.replace("http://", "https://")


def test_tls_is_verified_against_the_given_ca_bundle(tls_url: str, pki: Path) -> None:
    with requests.Session() as session:
        r = probe(session, tls_url, 2.0, ca_bundle=pki / "ca.crt")
    assert r.success, r.message


def test_tls_with_an_unknown_ca_is_a_failure(tls_url: str) -> None:
    with requests.Session() as session:
        r = probe(session, tls_url, 2.0)
    assert not r.success
    assert r.message.startswith("TLS error:")


# ---- the thread and the metrics ------------------------------------------------------------------
def spec(url: str, *, interval: float = 0.05, threshold: int = 3) -> HealthCheckSpec:
    return HealthCheckSpec(True, url, interval, 1.0, threshold)


def wait_for(cond: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def test_run_once_exports_the_seed_metrics(server: tuple[str, Behaviour, _Server]) -> None:
    url, b, _ = server
    registry = CollectorRegistry()
    checker = HealthChecker(spec(url), metrics=ClusterMetrics(registry, "us-east-1-prod"))
    labels = {"cluster": "us-east-1-prod"}

    def value(name: str) -> float | None:
        return registry.get_sample_value(name, labels)

    try:
        checker.run_once()
        assert value("cardano_cluster_health_check_success") == 1
        assert value("cardano_cluster_health_check_consecutive_failures") == 0
        last = value("cardano_cluster_health_check_last_success_timestamp")
        assert last is not None and last > 1.7e9
        duration = value("cardano_cluster_health_check_duration_seconds")
        assert duration is not None and duration >= 0
        b.status = 503
        checker.run_once()
        checker.run_once()
        assert value("cardano_cluster_health_check_success") == 0
        assert value("cardano_cluster_health_check_consecutive_failures") == 2
        assert value("cardano_cluster_health_check_last_success_timestamp") == last
    finally:
        checker.stop()


def test_the_thread_probes_only_while_active_and_stops(
    server: tuple[str, Behaviour, _Server],
) -> None:
    url, b, _ = server
    b.status = 503
    checker = HealthChecker(spec(url))
    checker.start()
    try:
        time.sleep(0.2)
        assert b.seen == []  # a follower never probes
        checker.set_active(True)
        wait_for(lambda: checker.snapshot().demoted)
        assert checker.snapshot().consecutive_failures == 3
        b.status = 200
        wait_for(lambda: not checker.snapshot().demoted)
        assert checker.snapshot().consecutive_failures == 0
        checker.set_active(False)
        count = len(b.seen)
        time.sleep(0.2)
        assert len(b.seen) <= count + 1  # at most one probe was in flight
    finally:
        checker.stop(timeout=5)
    assert checker._thread is None


def test_configure_switches_the_endpoint(server: tuple[str, Behaviour, _Server]) -> None:
    url, b, _ = server
    checker = HealthChecker(spec(f"http://127.0.0.1:{closed_port()}/h"))
    try:
        assert not checker.run_once().last_success
        checker.configure(spec(url, threshold=5))
        snap = checker.run_once()
        assert snap.last_success and snap.threshold == 5
        checker.configure(HealthCheckSpec(False, url, 1.0, 1.0, 5))
        assert not checker.configured
        before = len(b.seen)
        checker.run_once()
        assert len(b.seen) == before
    finally:
        checker.stop()
