"""A real Prometheus on loopback for the integration tier.

``PrometheusServer`` runs the ``prometheus`` binary (``.tools/bin`` first, then ``PATH``) on a free
loopback port (or on ``host``, e.g. the test node's bridge address, where pods reach it) with a
private data directory and the scrape configuration a test gives it, waits
until it is ready, and stops it by PID. ``prometheus_factory`` is the pytest fixture: it starts as
many servers as a test asks for and stops them all at teardown. Optionally a server loads rule
files (``rule_files``, evaluated every ``evaluation_interval``, by default the scrape interval) and
sends its alerts to Alertmanagers (``alertmanagers``, ``host:port``).

Prometheus' scrape manager waits about five seconds before the first scrape of a new
configuration; :meth:`PrometheusServer.wait_for` polls a query until its result is what a test
needs, so tests wait for a condition, never for a fixed time.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.controlplane import free_port  # noqa: F401  (re-exported for tests)
from tests.harness.loopback_daemon import DaemonError, LoopbackDaemon

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0

ScrapeConfig = dict[str, Any]


class PrometheusError(DaemonError):
    """A one-line explanation of what went wrong with the test Prometheus."""


def prometheus_binary() -> str:
    """Path of the prometheus binary: ``.tools/bin`` first, then ``PATH``."""
    candidate = TOOLS_BIN / "prometheus"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("prometheus")
    if found is None:
        raise PrometheusError("prometheus not found in .tools/bin or on PATH: run 'make tools'")
    return found


def static_job(
    job: str, targets: list[str], labels: dict[str, str] | None = None, **extra: Any
) -> ScrapeConfig:
    """A scrape config for ``targets`` (``host:port``) with extra target labels."""
    config: ScrapeConfig = {
        "job_name": job,
        "static_configs": [{"targets": targets, "labels": labels or {}}],
    }
    config.update(extra)
    return config


class PrometheusServer(LoopbackDaemon):
    """One Prometheus process on ``127.0.0.1``; use as a context manager or call start/stop."""

    name = "prometheus"

    def __init__(
        self,
        root: Path,
        scrape_configs: list[ScrapeConfig],
        *,
        scrape_interval: str = "1s",
        evaluation_interval: str | None = None,
        rule_files: Sequence[Path] = (),
        alertmanagers: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(root)
        self.host = host
        self.scrape_configs = scrape_configs
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval or scrape_interval
        self.rule_files = [str(f) for f in rule_files]
        self.alertmanagers = list(alertmanagers)
        self.config_file = root / "prometheus.yml"

    def binary(self) -> str:
        return prometheus_binary()

    def prepare(self) -> None:
        self._write_config()

    def arguments(self) -> list[str]:
        return [
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.root / f'data-{self.port}'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]

    def _write_config(self) -> None:
        document: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "scrape_configs": self.scrape_configs,
        }
        if self.rule_files:
            document["rule_files"] = self.rule_files
        if self.alertmanagers:
            document["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": self.alertmanagers}]}]
            }
        self.config_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")

    def reload(self, scrape_configs: list[ScrapeConfig]) -> None:
        """Replace the scrape configuration of the running server (``/-/reload``)."""
        self.scrape_configs = scrape_configs
        self._write_config()
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise PrometheusError(f"reload answered HTTP {response.status}")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The ``result`` of an instant query (vector results; a scalar as one item)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=10) as response:
            payload = json.load(response)
        data = payload["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def values(self, promql: str) -> list[float]:
        return [float(item["value"][1]) for item in self.query(promql)]

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[float]], bool],
        *,
        timeout: float = 60.0,
        what: str = "",
    ) -> list[float]:
        """Poll ``promql`` until ``predicate(values)`` holds; fail the test after ``timeout``."""
        deadline = time.monotonic() + timeout
        values: list[float] = []
        while time.monotonic() < deadline:
            with contextlib.suppress(urllib.error.URLError, OSError):
                values = self.values(promql)
                if predicate(values):
                    return values
            time.sleep(0.2)
        raise PrometheusError(
            f"timed out after {timeout:g} s waiting for {what or promql}: last values {values}"
        )


@pytest.fixture
def prometheus_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., PrometheusServer]]:
    """``start(scrape_configs, scrape_interval="1s", **options)`` -> a ready server.

    ``options`` are :class:`PrometheusServer`'s: ``evaluation_interval``, ``rule_files``,
    ``alertmanagers``.
    """
    servers: list[PrometheusServer] = []

    def start(
        scrape_configs: list[ScrapeConfig], *, scrape_interval: str = "1s", **options: Any
    ) -> PrometheusServer:
        server = PrometheusServer(
            tmp_path_factory.mktemp("prometheus"),
            scrape_configs,
            scrape_interval=scrape_interval,
            **options,
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
