"""Load figures for the health endpoint on loopback: requests/s, p50/p99 latency, worker memory.

Starts fake cardano-node and node_exporter exporters, a real Prometheus scraping them, and the
service as shipped (``python -m health_endpoint``: gunicorn, gthread workers), then drives it
with concurrent keep-alive ``http.client`` clients for a bounded time per scenario:

* cached: one cluster, answers reused for ``CACHE_TTL_SECONDS=5``;
* uncached, shared: ``CACHE_TTL_SECONDS=0``, one cluster: concurrent callers still share the round
  in flight (single-flight);
* uncached, unshared: ``CACHE_TTL_SECONDS=0``, cluster label off and a new cluster name per
  request, so every request is a full round of Prometheus queries.

Usage: ``python bench/health_endpoint.py [--duration 8] [--concurrency 16] [--workers 2]``.
The load generator runs on the same machine (and cores) as the server and Prometheus: figures
are for comparing scenarios and changes, not a capacity claim.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# This file's name would shadow the health_endpoint package: import from the repository root.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO_ROOT))

import requests  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tests.harness.fake_exporters import FakeCardanoNode, FakeNodeExporter  # noqa: E402
from tests.harness.prometheus import PrometheusServer, free_port, static_job  # noqa: E402

CLUSTER = "us-east-1-prod"


@dataclass
class Result:
    name: str
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    evaluations: float
    queries: float
    rss_kib: list[int]

    def line(self) -> str:
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) * 1000 if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")
        rss = "/".join(f"{k / 1024:.0f}" for k in self.rss_kib)
        return (
            f"{self.name:<22} {self.requests / self.seconds:>9.0f} {p50:>8.1f} {p99:>8.1f}"
            f" {self.requests:>8} {self.errors:>6} {self.evaluations:>7.0f} {self.queries:>8.0f}"
            f"  {rss}"
        )


HEADER = (
    f"{'scenario':<22} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'requests':>8} {'errors':>6}"
    f" {'rounds':>7} {'queries':>8}  worker RSS MiB"
)


def worker_pids(master: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == master:
            pids.append(int(entry.name))
    return sorted(pids)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def counter_total(url: str, name: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


class Server:
    def __init__(self, prometheus_url: str, workdir: Path, workers: int, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "health.yaml"
        config.write_text("rate_window: 5s\n")
        full_env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        full_env.update(
            {
                "PROMETHEUS_URL": prometheus_url,
                "HEALTH_CONFIG_FILE": str(config),
                "BIND": f"127.0.0.1:{self.port}",
                "WEB_CONCURRENCY": str(workers),
                "LOG_LEVEL": "warning",
                **env,
            }
        )
        self.log = (workdir / f"gunicorn-{self.port}.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "health_endpoint", "--access-logfile", "/dev/null"],
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not start")

    def stop(self) -> None:
        os.kill(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=20)
        self.log.close()


def drive(
    url: str, names: itertools.count[int] | None, duration: float, concurrency: int
) -> tuple[list[float], int, int, float]:
    """Run ``concurrency`` clients for ``duration`` s; one cluster, or a new name per request."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def client() -> None:
        nonlocal errors
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        mine: list[float] = []
        failed = 0
        while time.monotonic() < stop_at:
            cluster = CLUSTER if names is None else f"c{next(names)}"
            started = time.perf_counter()
            try:
                connection.request("GET", f"/api/v1/health/cluster/{cluster}")
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                connection.close()  # reconnects on the next request
                ok = False
            mine.append(time.perf_counter() - started)
            failed += not ok
        connection.close()
        with lock:
            latencies.extend(mine)
            errors += failed

    began = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, len(latencies), errors, time.monotonic() - began


def scenario(
    name: str,
    prometheus: PrometheusServer,
    workdir: Path,
    args: argparse.Namespace,
    unique_names: bool,
    **env: str,
) -> Result:
    server = Server(prometheus.url, workdir, args.workers, **env)
    try:
        drive(server.url, itertools.count() if unique_names else None, 1.0, args.concurrency)
        rounds0 = counter_total(server.url, "health_endpoint_evaluations_total")
        queries0 = counter_total(server.url, "health_endpoint_prometheus_queries_total")
        latencies, count, errors, seconds = drive(
            server.url,
            itertools.count(10**6) if unique_names else None,
            args.duration,
            args.concurrency,
        )
        rounds = counter_total(server.url, "health_endpoint_evaluations_total") - rounds0
        queries = counter_total(server.url, "health_endpoint_prometheus_queries_total") - queries0
        rss = [rss_kib(pid) for pid in worker_pids(server.process.pid)]
    finally:
        server.stop()
    return Result(name, count, errors, seconds, latencies, rounds, queries, rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per scenario")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    args = parser.parse_args()
    if not 0 < args.duration <= 60 or not 0 < args.concurrency <= 64:
        parser.error("keep it bounded: --duration up to 60 s, --concurrency up to 64")

    with (
        tempfile.TemporaryDirectory(prefix="bench-health-") as tmp,
        FakeCardanoNode() as node,
        FakeNodeExporter() as node_exporter,
    ):
        workdir = Path(tmp)
        configs = [
            static_job("cardano-node", [node.target], {"cluster": CLUSTER}),
            static_job("node-exporter", [node_exporter.target], {"cluster": CLUSTER}),
        ]
        with PrometheusServer(workdir / "prometheus", configs) as prometheus:
            prometheus.wait_for("count(up == 1)", lambda v: v == [2.0], what="targets up")
            prometheus.wait_for(
                "rate(node_cpu_seconds_total[5s])", lambda v: len(v) == 4, what="CPU rates"
            )
            print(
                f"health endpoint on loopback: {args.workers} gunicorn workers"
                " (gthread, 8 threads each),"
                f" {args.concurrency} keep-alive clients, {args.duration:g} s per scenario,"
                f" {os.cpu_count()} CPUs shared with Prometheus and the load generator"
            )
            print(HEADER)
            for result in (
                scenario("cached (TTL 5 s)", prometheus, workdir, args, False),
                scenario(
                    "uncached, shared", prometheus, workdir, args, False, CACHE_TTL_SECONDS="0"
                ),
                scenario(
                    "uncached, unshared",
                    prometheus,
                    workdir,
                    args,
                    True,
                    CACHE_TTL_SECONDS="0",
                    CLUSTER_LABEL="",
                ),
            ):
                print(result.line(), flush=True)


if __name__ == "__main__":
    main()
