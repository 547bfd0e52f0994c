"""Small exporters that play cardano-node and node_exporter, with values a test changes.

Each is a real HTTP server on a free loopback port serving the Prometheus text format from its
own ``CollectorRegistry``; values are computed when Prometheus scrapes, so a lagging slot keeps
lagging by the same amount and CPU counters advance with the clock. ``failing = True`` makes the
exporter answer scrapes with HTTP 503, which Prometheus records as ``up == 0``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from health_endpoint.networks import MAINNET, Network
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class Exporter(Collector):
    """Base: an HTTP server exposing ``collect()`` plus any gauges set with :meth:`set_gauge`."""

    def __init__(self) -> None:
        self.failing = False
        self.scrapes = 0
        self._gauges: dict[str, tuple[float, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def target(self) -> str:
        assert self._server is not None, "exporter not started"
        return f"127.0.0.1:{self._server.server_address[1]}"

    def set_gauge(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        with self._lock:
            self._gauges[name] = (value, labels or {})

    def samples(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        yield from self.samples()
        with self._lock:
            gauges = dict(self._gauges)
        for name, (value, labels) in gauges.items():
            family = GaugeMetricFamily(name, f"test gauge {name}", labels=list(labels))
            family.add_metric(list(labels.values()), value)
            yield family

    def start(self) -> Exporter:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                exporter.scrapes += 1
                if exporter.failing:
                    self.send_error(503, "exporter told to fail")
                    return
                body = generate_latest(exporter.registry)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Exporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeCardanoNode(Exporter):
    """cardano-node's legacy-tracing metrics: tip slot ``lag_seconds`` behind the wall clock."""

    def __init__(self, network: Network = MAINNET) -> None:
        super().__init__()
        self.network = network
        self.lag_seconds = 0.0
        self.kes_periods_remaining: int | None = 40
        self.connected_peers: int | None = 3

    def samples(self) -> Iterable[Metric]:
        slot = self.network.wallclock_slot(time.time() - self.lag_seconds)
        yield _gauge("cardano_node_metrics_slotNum_int", slot)
        yield _gauge("cardano_node_metrics_blockNum_int", slot // 20)
        if self.kes_periods_remaining is not None:
            yield _gauge("cardano_node_metrics_remainingKESPeriods_int", self.kes_periods_remaining)
        if self.connected_peers is not None:
            yield _gauge("cardano_node_metrics_connectedPeers_int", self.connected_peers)


class FakeNodeExporter(Exporter):
    """node_exporter's CPU, memory and filesystem metrics for one machine."""

    def __init__(self, cpus: int = 2) -> None:
        super().__init__()
        self.cpus = cpus
        self.cpu_usage = 0.35
        """Fraction of CPU time not idle since the last scrape."""
        self.memory_total = 64 * 2**30
        self.memory_available = 24 * 2**30
        self.filesystem_size = 2 * 2**40
        self.filesystem_avail = 1.2 * 2**40
        self._idle = 1000.0
        self._busy = 500.0
        self._last = time.monotonic()

    def samples(self) -> Iterable[Metric]:
        now = time.monotonic()
        with self._lock:
            elapsed, self._last = now - self._last, now
            self._idle += elapsed * (1 - self.cpu_usage)
            self._busy += elapsed * self.cpu_usage
            idle, busy = self._idle, self._busy
        cpu = CounterMetricFamily(
            "node_cpu_seconds", "Seconds the CPUs spent in each mode.", labels=["cpu", "mode"]
        )
        for n in range(self.cpus):
            cpu.add_metric([str(n), "idle"], idle)
            cpu.add_metric([str(n), "user"], busy)
        yield cpu
        yield _gauge("node_memory_MemTotal_bytes", self.memory_total)
        yield _gauge("node_memory_MemAvailable_bytes", self.memory_available)
        labels = ["device", "fstype", "mountpoint"]
        disk, tmpfs = ["/dev/nvme0n1p1", "ext4", "/"], ["tmpfs", "tmpfs", "/run"]
        size = GaugeMetricFamily("node_filesystem_size_bytes", "Size.", labels=labels)
        size.add_metric(disk, self.filesystem_size)
        size.add_metric(tmpfs, 2**30)
        yield size
        avail = GaugeMetricFamily("node_filesystem_avail_bytes", "Available.", labels=labels)
        avail.add_metric(disk, self.filesystem_avail)
        avail.add_metric(tmpfs, 1.0)  # a full tmpfs must not count as a full disk
        yield avail


def _gauge(name: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, f"{name} (test double)", value=value)
