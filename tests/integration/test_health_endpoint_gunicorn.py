"""The health endpoint as shipped: ``python -m health_endpoint`` (gunicorn + the packaged
gunicorn.conf.py) in a subprocess on loopback, against a real Prometheus."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from gunicorn import version_info as gunicorn_version
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.fake_exporters import FakeCardanoNode, FakeNodeExporter
from tests.harness.prometheus import PrometheusServer, free_port, static_job

pytestmark = pytest.mark.integration

CLUSTER = "us-east-1-prod"
CLUSTER_ROUTE = "/api/v1/health/cluster/<cluster>"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with FakeCardanoNode() as node, FakeNodeExporter() as node_exporter:
        configs = [
            static_job("cardano-node", [node.target], {"cluster": CLUSTER}),
            static_job("node-exporter", [node_exporter.target], {"cluster": CLUSTER}),
        ]
        with PrometheusServer(tmp_path_factory.mktemp("prometheus"), configs) as server:
            server.wait_for("count(up == 1)", lambda v: v == [2.0], what="targets up")
            server.wait_for(
                '100 * (1 - avg(rate(node_cpu_seconds_total{mode="idle"}[5s])))',
                lambda v: bool(v) and 30 <= v[0] <= 40,
                what="CPU usage read right",
            )
            yield server


@dataclass
class Gunicorn:
    process: subprocess.Popen[str]
    url: str
    log: Path

    def stop(self) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            return self.process.wait(timeout=10)


def spawn(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    full_env.update(env)
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "health_endpoint", *args],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )


@pytest.fixture
def gunicorn(prometheus: PrometheusServer, tmp_path: Path) -> Iterator[Gunicorn]:
    config = tmp_path / "health.yaml"
    config.write_text("rate_window: 5s\n", encoding="utf-8")
    multiproc = tmp_path / "metrics"
    multiproc.mkdir()
    (multiproc / "counter_999999.db").write_bytes(b"left over from a previous container")
    port = free_port()
    env = {
        "PROMETHEUS_URL": prometheus.url,
        "HEALTH_CONFIG_FILE": str(config),
        "CACHE_TTL_SECONDS": "300",
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "4",
        "BIND": f"127.0.0.1:{port}",
    }
    log = tmp_path / "gunicorn.log"
    server = Gunicorn(spawn(env, log), f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 30
    while True:
        assert server.process.poll() is None, log.read_text()
        try:
            if requests.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"gunicorn did not answer: {log.read_text()}"
        time.sleep(0.1)
    yield server
    assert server.stop() == 0, log.read_text()


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def test_served_by_gunicorn_with_metrics_summed_over_workers(gunicorn: Gunicorn) -> None:
    requests_sent = 24

    def ask(_: int) -> tuple[int, str]:
        response = requests.get(f"{gunicorn.url}/api/v1/health/cluster/{CLUSTER}", timeout=10)
        return response.status_code, response.json()["status"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(ask, range(requests_sent)))

    assert answers == [(200, "healthy")] * requests_sent
    # Whichever worker answers the scrape, the counts are the whole server's.
    for _ in range(4):
        samples = scrape(gunicorn.url)
        route = frozenset({("handler", CLUSTER_ROUTE), ("code", "200")})
        assert samples[("health_endpoint_http_requests_total", route)] == requests_sent
        assert total(samples, "health_endpoint_cache_lookups_total") == requests_sent
        # One upstream round per worker at most: each worker caches for 300 s.
        assert 1 <= total(samples, "health_endpoint_evaluations_total") <= 2


def test_stale_metrics_files_are_removed_at_start(gunicorn: Gunicorn, tmp_path: Path) -> None:
    assert not (tmp_path / "metrics" / "counter_999999.db").exists()
    samples = scrape(gunicorn.url)
    assert total(samples, "health_endpoint_http_requests_total") >= 1  # its own /healthz polls


def test_bad_configuration_stops_startup_with_one_clear_line(tmp_path: Path) -> None:
    log = tmp_path / "gunicorn.log"
    process = spawn({"BIND": f"127.0.0.1:{free_port()}", "PROMETHEUS_URL": ""}, log)
    try:
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
    output = log.read_text()

    assert code != 0
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if "configuration error" in line]
    assert errors == [
        "health-endpoint: configuration error: PROMETHEUS_URL is not set: give the Prometheus "
        "base URL, e.g. http://prometheus-operated.monitoring:9090"
    ]


def test_starts_cleanly_with_an_unwritable_home(tmp_path: Path) -> None:
    """As in the image (HOME=/nonexistent, read-only root): no warning, nothing written to HOME.

    HOME is a regular file here, so that creating anything below it fails even for root. The
    master sets up its control socket (or says it is disabled, at debug level) after the first
    workers answer: the test waits for that line before it judges the log.
    """
    home = tmp_path / "home"
    home.write_text("not a directory\n")
    log = tmp_path / "gunicorn.log"
    port = free_port()
    env = {
        "HOME": str(home),
        "XDG_RUNTIME_DIR": "",
        "BIND": f"127.0.0.1:{port}",
        "PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
        "WEB_CONCURRENCY": "1",
        "LOG_LEVEL": "debug",
    }
    server = Gunicorn(spawn(env, log), f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.process.poll() is None, log.read_text()
            try:
                if requests.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"gunicorn did not answer: {log.read_text()}"
            time.sleep(0.1)
        if gunicorn_version >= (25, 1):  # the release that added the control socket
            while not re.search(r"\[[A-Z]+\] Control (socket|server)", log.read_text()):
                assert time.monotonic() < deadline, f"no control socket line: {log.read_text()}"
                time.sleep(0.1)
    finally:
        assert server.stop() == 0, log.read_text()
    output = log.read_text()
    assert not [line for line in output.splitlines() if "[WARNING]" in line or "[ERROR]" in line]
    assert home.read_text() == "not a directory\n"
