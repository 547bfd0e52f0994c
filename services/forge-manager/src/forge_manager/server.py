"""The threaded HTTP server on METRICS_PORT: /startup-status, /health, /metrics.

* ``/startup-status`` is the seed's startup-probe endpoint: 200 ``ready`` once credentials have
  been provisioned (or all three target files exist and are non-empty), else 503 ``not_ready``.
  It is also 200 ``ready`` (``credentials_provisioned: false``) when cardano-node already runs:
  a sidecar restarted beside a running node has nothing to gate.
* ``/health`` is a liveness check: 503 when the control loop has not completed a cycle for longer
  than the renew deadline (a wedged manager is restarted), 200 otherwise. Its body also shows the
  node sync check (``node_sync``: synced or not, and why), which never changes the status code.
* ``/metrics`` is the Prometheus exposition of the manager's own registry.

A client that closes the connection before its answer is written (a kubelet probe past its
``timeoutSeconds``, a scrape that timed out: a busy node) is one DEBUG line; any other error of a
request is one ERROR line in the manager's log, never the standard library's traceback on stderr.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from forge_manager.decision import StartupState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoints:
    startup_state: Callable[[], StartupState]
    seconds_since_cycle: Callable[[], float]
    renew_deadline: float
    registry: CollectorRegistry
    node_sync: Callable[[], dict[str, Any]] | None = None
    """The node sync check's status (``node_sync.NodeSyncCheck.status``), shown in /health."""


def _timestamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def startup_status(state: StartupState) -> tuple[int, dict[str, Any]]:
    if state is StartupState.NODE_RUNNING:
        return 200, {
            "status": "ready",
            "message": "cardano-node is already running; no startup credentials needed",
            "credentials_provisioned": False,
            "timestamp": _timestamp(),
        }
    if state is StartupState.PROVISIONED:
        return 200, {
            "status": "ready",
            "message": "Startup credentials provisioned successfully",
            "credentials_provisioned": True,
            "timestamp": _timestamp(),
        }
    return 503, {
        "status": "not_ready",
        "message": "Startup credentials not yet provisioned",
        "credentials_provisioned": False,
        "timestamp": _timestamp(),
    }


def health(
    since_cycle: float, renew_deadline: float, node_sync: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    """Liveness of the loop only; ``node_sync`` (why the node may not lead) is information and
    never changes the status code: restarting the sidecar would not sync the node."""
    ok = since_cycle <= renew_deadline
    body: dict[str, Any] = {
        "status": "healthy" if ok else "unhealthy",
        "seconds_since_last_cycle": round(since_cycle, 3),
        "limit_seconds": renew_deadline,
        "timestamp": _timestamp(),
    }
    if node_sync is not None:
        body["node_sync"] = node_sync
    return (200 if ok else 503), body


def _handler(endpoints: Endpoints) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "cardano-forge-manager"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/startup-status":
                self._json(*startup_status(endpoints.startup_state()))
            elif path == "/health":
                self._json(
                    *health(
                        endpoints.seconds_since_cycle(),
                        endpoints.renew_deadline,
                        endpoints.node_sync() if endpoints.node_sync is not None else None,
                    )
                )
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(endpoints.registry))
            else:
                self._json(
                    404,
                    {"status": "not_found", "paths": ["/startup-status", "/health", "/metrics"]},
                )

        def _json(self, code: int, body: dict[str, Any]) -> None:
            self._send(code, "application/json", json.dumps(body).encode())

        def _send(self, code: int, content_type: str, data: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the decisions in the log

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):  # BrokenPipe, ConnectionReset: the client left
            log.debug("HTTP client %s closed the connection before the answer (%s)",
                      client_address[0], type(error).__name__)  # fmt: skip
            return
        log.error("HTTP request from %s failed: %r", client_address[0], error)


class MetricsServer:
    def __init__(self, address: str, port: int, endpoints: Endpoints) -> None:
        self._httpd = _Server((address, port), _handler(endpoints))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            name="http",
            kwargs={"poll_interval": 0.2},
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
