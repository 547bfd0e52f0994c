"""A real Alertmanager on loopback and a webhook receiver inside the test process.

``AlertmanagerServer`` runs the ``alertmanager`` binary (``.tools/bin`` first, then ``PATH``,
where Debian's package installs it as ``prometheus-alertmanager``) on a free loopback port with
gossip switched off and a private storage directory, waits until it is ready and stops it by PID.

``WebhookReceiver`` is an HTTP server on a free loopback port that records every notification
Alertmanager posts (the JSON body of its webhook, by the path it was posted to), so a test can
route each Alertmanager receiver to its own path and see which one an alert reached.
"""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.harness.loopback_daemon import DaemonError, LoopbackDaemon

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class AlertmanagerError(DaemonError):
    """A one-line explanation of what went wrong with the test Alertmanager."""


def alertmanager_binary() -> str:
    candidate = REPO_ROOT / ".tools" / "bin" / "alertmanager"
    if candidate.exists():
        return str(candidate)
    for name in ("alertmanager", "prometheus-alertmanager"):
        found = shutil.which(name)
        if found is not None:
            return found
    raise AlertmanagerError(
        "alertmanager not found in .tools/bin or on PATH: run 'make tools' "
        "(Debian: apt-get install prometheus-alertmanager)"
    )


class AlertmanagerServer(LoopbackDaemon):
    """One Alertmanager process on ``127.0.0.1`` with the configuration a test gives."""

    name = "alertmanager"

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        super().__init__(root)
        self.config = config
        self.config_file = root / "alertmanager.yml"

    def binary(self) -> str:
        return alertmanager_binary()

    def prepare(self) -> None:
        self.config_file.write_text(yaml.safe_dump(self.config, sort_keys=False), "utf-8")

    def arguments(self) -> list[str]:
        return [
            f"--config.file={self.config_file}",
            f"--storage.path={self.root / f'data-{self.port}'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # no gossip: a single instance
            "--log.level=warn",
        ]

    @property
    def target(self) -> str:
        """``host:port`` for Prometheus' ``alerting`` configuration."""
        return f"127.0.0.1:{self.port}"

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds (API v2), with the receivers it routed each to."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=10) as response:
            result: list[dict[str, Any]] = json.load(response)
        return result


@dataclass(frozen=True)
class Notification:
    """One webhook call: the path it was posted to and Alertmanager's JSON document."""

    path: str
    body: dict[str, Any]

    @property
    def receiver(self) -> str:
        return str(self.body.get("receiver", ""))

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.body.get("alerts", [])
        return alerts


class WebhookReceiver:
    """Records Alertmanager's webhook notifications; ``url(name)`` is a receiver's endpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notifications: list[Notification] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                receiver._record(Notification(self.path, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test reports what it received

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )

    def _record(self, notification: Notification) -> None:
        with self._lock:
            self._notifications.append(notification)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def notifications(self) -> list[Notification]:
        with self._lock:
            return list(self._notifications)

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(STOP_TIMEOUT_S)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
