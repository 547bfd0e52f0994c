"""A test daemon on a free loopback port: start, wait until ``/-/ready`` answers, stop by PID.

Prometheus and Alertmanager share this lifecycle (:mod:`tests.harness.prometheus`,
``tests/e2e/alertmanager.py``): a subclass says which binary to run with which arguments and
writes its configuration in :meth:`LoopbackDaemon.prepare`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Self

from tests.harness.controlplane import free_port

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
START_ATTEMPTS = 3
"""A free port can be taken between the probe and the daemon's bind: try again."""


class DaemonError(RuntimeError):
    """A one-line explanation of what went wrong with a test daemon."""


class LoopbackDaemon:
    name = "daemon"
    host = "127.0.0.1"
    """The address it listens on (a subclass may offer another, e.g. the test node's bridge)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_file = root / f"{self.name}.log"

    # ---- what a subclass provides ----------------------------------------------------------
    def binary(self) -> str:
        raise NotImplementedError

    def arguments(self) -> list[str]:
        """Command-line arguments for a start on ``self.port``."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Write the configuration before the first start."""

    # ---- lifecycle --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        self.prepare()
        binary = self.binary()
        for _attempt in range(START_ATTEMPTS):
            self.port = free_port()
            with self.log_file.open("ab") as log:
                self.process = subprocess.Popen(
                    [binary, *self.arguments()],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            if self._wait_ready():
                return self
            self.stop()
            if "address already in use" not in self.log_tail():
                break
        raise DaemonError(f"{self.name} did not become ready: {self.log_tail()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response,
            ):
                if response.status == 200:
                    return True
            time.sleep(0.1)
        return False

    def log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-5:]) or "(empty log)"

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM the process (by PID), SIGKILL it if it does not exit in time."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
