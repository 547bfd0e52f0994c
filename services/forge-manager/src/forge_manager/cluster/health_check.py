"""The region's health check: GET the endpoint every interval, count consecutive failures.

As in the seed's scenarios: HTTP 200 is a success, anything else (another status, a timeout, a
connection or TLS error, an unreadable token file) is a failure. A failure adds one to the count
(capped at the threshold: "counted up to failureThreshold"), a success removes one down to 0.
When the count reaches the threshold the region is *demoted* (its effective priority rises by
100); it stays demoted until the count walks back to 0 (the seed's failback goes 3, 2, 1, 0), so a
flapping endpoint does not make the region bounce between forging and standing by.

Only the local leader probes (:meth:`HealthChecker.set_active`); the thread is bounded by its stop
Event and every request by the timeout. TLS verification is always on; ``ca_bundle`` replaces the
system CAs. A bearer token is read from ``token_file`` at every probe (so a rotated Secret is
picked up). Redirects are not followed: only a direct 200 counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import requests

from forge_manager import __version__
from forge_manager.cluster.metrics import ClusterMetrics
from forge_manager.cluster.model import HealthCheckSpec
from forge_manager.cluster.policy import HealthView

log = logging.getLogger(__name__)

USER_AGENT = f"cardano-forge-manager/{__version__}"
MESSAGE_MAX = 200


@dataclass(frozen=True)
class ProbeResult:
    success: bool
    status_code: int | None
    duration: float
    message: str


@dataclass(frozen=True)
class HealthSnapshot:
    consecutive_failures: int
    threshold: int
    demoted: bool
    last_success: bool | None
    """Result of the last probe; None before the first one."""
    last_probe_time: datetime | None
    last_success_time: datetime | None
    message: str
    probes: int

    @property
    def healthy(self) -> bool:
        """Below the failure threshold (the seed: ``healthy = false`` at the threshold)."""
        return self.consecutive_failures < self.threshold

    def view(self) -> HealthView:
        return HealthView(self.consecutive_failures, self.threshold, self.demoted)


class HealthTracker:
    """The failure count and demotion, thread-safe; holds no I/O."""

    def __init__(self, threshold: int) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self._lock = threading.Lock()
        self._snap = HealthSnapshot(0, threshold, False, None, None, None, "no check yet", 0)

    def snapshot(self) -> HealthSnapshot:
        with self._lock:
            return self._snap

    def set_threshold(self, threshold: int) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        with self._lock:
            s = self._snap
            failures = min(s.consecutive_failures, threshold)
            self._snap = replace(
                s,
                threshold=threshold,
                consecutive_failures=failures,
                demoted=(s.demoted or failures >= threshold) and failures > 0,
            )

    def restore(self, failures: int, demoted: bool) -> None:
        """Continue from a state published by a previous local leader of this region."""
        with self._lock:
            s = self._snap
            failures = max(0, min(failures, s.threshold))
            self._snap = replace(
                s,
                consecutive_failures=failures,
                demoted=(demoted or failures >= s.threshold) and failures > 0,
            )

    def record(self, success: bool, message: str, when: datetime) -> HealthSnapshot:
        with self._lock:
            s = self._snap
            if success:
                failures = max(0, s.consecutive_failures - 1)
                demoted = s.demoted and failures > 0
            else:
                failures = min(s.threshold, s.consecutive_failures + 1)
                demoted = s.demoted or failures >= s.threshold
            self._snap = HealthSnapshot(
                consecutive_failures=failures,
                threshold=s.threshold,
                demoted=demoted,
                last_success=success,
                last_probe_time=when,
                last_success_time=when if success else s.last_success_time,
                message=message[:MESSAGE_MAX],
                probes=s.probes + 1,
            )
            return self._snap


def probe(
    session: requests.Session,
    endpoint: str,
    timeout: float,
    *,
    ca_bundle: Path | None = None,
    token_file: Path | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ProbeResult:
    """One GET; never raises."""
    started = clock()
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            return ProbeResult(False, None, 0.0, f"cannot read token file: {exc.strerror}")
        if not token:
            return ProbeResult(False, None, 0.0, "token file is empty")
        headers["Authorization"] = f"Bearer {token}"
    try:
        with session.get(
            endpoint,
            headers=headers,
            timeout=(timeout, timeout),
            verify=str(ca_bundle) if ca_bundle is not None else True,
            allow_redirects=False,
            stream=True,
        ) as resp:
            code = resp.status_code
            reason = resp.reason or ""
    except requests.Timeout:
        return ProbeResult(False, None, clock() - started, f"timed out after {timeout:g} s")
    except requests.exceptions.SSLError as exc:
        return ProbeResult(False, None, clock() - started, f"TLS error: {_short(exc)}")
    except requests.RequestException as exc:
        return ProbeResult(False, None, clock() - started, f"request failed: {_short(exc)}")
    duration = clock() - started
    if code == 200:
        return ProbeResult(True, code, duration, "HTTP 200")
    return ProbeResult(False, code, duration, f"HTTP {code} {reason}".strip())


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 150 else text[:147] + "..."


class HealthChecker:
    """The thread: probes while active, at the configured interval, until stopped."""

    def __init__(
        self,
        spec: HealthCheckSpec,
        *,
        metrics: ClusterMetrics | None = None,
        ca_bundle: Path | None = None,
        token_file: Path | None = None,
        tracker: HealthTracker | None = None,
    ) -> None:
        self._spec = spec
        self._metrics = metrics
        self._ca_bundle = ca_bundle
        self._token_file = token_file
        self.tracker = tracker or HealthTracker(spec.failure_threshold)
        self._session = requests.Session()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._active = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def spec(self) -> HealthCheckSpec:
        with self._lock:
            return self._spec

    @property
    def configured(self) -> bool:
        spec = self.spec
        return spec.enabled and bool(spec.endpoint)

    def configure(self, spec: HealthCheckSpec) -> None:
        """Apply ``spec.healthCheck`` as edited by an operator; takes effect at the next probe."""
        with self._lock:
            changed = spec != self._spec
            self._spec = spec
        if changed:
            self.tracker.set_threshold(spec.failure_threshold)
            self._wake.set()

    def set_active(self, active: bool) -> None:
        """Probe only while this pod is the local leader; becoming active probes at once."""
        if active and not self._active.is_set():
            self._active.set()
            self._wake.set()
        elif not active:
            self._active.clear()

    def snapshot(self) -> HealthSnapshot:
        return self.tracker.snapshot()

    def run_once(self) -> HealthSnapshot:
        """One probe (when configured), recorded and exported."""
        spec = self.spec
        if not (spec.enabled and spec.endpoint):
            return self.tracker.snapshot()
        result = probe(
            self._session,
            spec.endpoint,
            spec.timeout,
            ca_bundle=self._ca_bundle,
            token_file=self._token_file,
        )
        snap = self.tracker.record(result.success, result.message, datetime.now(UTC))
        if not result.success:
            log.warning(
                "health check of %s failed (%s): %d consecutive failure(s) of %d",
                spec.endpoint,
                result.message,
                snap.consecutive_failures,
                snap.threshold,
            )
        if self._metrics is not None:
            self._metrics.health_probe(
                success=result.success,
                failures=snap.consecutive_failures,
                duration=result.duration,
                success_time=snap.last_success_time.timestamp()
                if snap.last_success_time is not None
                else None,
            )
        return snap

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # a wake-up during the probe below is kept for the next wait
            if self._active.is_set():
                try:
                    self.run_once()
                except Exception:  # a bug must not kill the thread silently
                    log.exception("health check raised")
            self._wake.wait(self.spec.interval)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="health-check", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.spec.timeout * 2 + 1)
            self._thread = None
        self._session.close()
