"""How long the coordination API takes to answer, against what ``KUBE_REQUEST_TIMEOUT`` allows.

Every pool-lease write is bounded by the request timeout. A coordination API whose round trips
approach it (a shared API server in a far region, a slow etcd) answers some writes after the
client gave up: the write may be applied (recognised later by its stamp, see
:mod:`forge_manager.write_stamps`) or not, and the leader's deadline counts from when the last
*applied* write was sent, so forging keeps going only as long as enough writes land. That is a
configuration problem an operator must see, not find out from gaps in forging:

* :class:`RoundTrips` keeps the round trips of the last :data:`WINDOW` pool-lease writes. When
  :data:`SLOW_WRITES` of them took at least :data:`NEAR` x the request timeout (a timeout
  counts), the coordination API is *slow*, until none of the window did. The coordinator logs
  the change once, sets ``cardano_cluster_coordination_api_slow`` and publishes the condition
  ``CoordinationAPIResponsive`` in this region's CardanoForgeCluster status, with the figures
  and what to change.
* :func:`probe` measures, at start-up, a read of the pool-wide Lease with a longer timeout.
  An API that answers, but more slowly than the request timeout, can never be used with these
  timings: the process exits with one line saying so. An API that does not answer at all is an
  outage, not a setting: the process starts and stays "not forging" until it answers.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

NEAR = 0.8
"""A round trip of at least this fraction of the request timeout approaches it."""

WINDOW = 10
"""Pool-lease writes looked at (one per retry period while competing or holding)."""

SLOW_WRITES = 3
"""Writes in the window that approached the timeout before the API counts as slow."""

PROBES = 3
"""Start-up reads at most; the fastest counts (the first one also sets up the connection)."""


class CoordinationTooSlow(Exception):
    """The coordination API answers more slowly than ``KUBE_REQUEST_TIMEOUT`` allows."""


@dataclass(frozen=True)
class RoundTripState:
    slow: bool
    message: str
    """One line for the log and the status condition: the figures and what to change."""


class RoundTrips:
    """The round trips of the recent pool-lease writes (thread-safe)."""

    def __init__(self, request_timeout: float, *, window: int = WINDOW) -> None:
        self.request_timeout = request_timeout
        self._lock = threading.Lock()
        self._seconds: collections.deque[float] = collections.deque(maxlen=window)
        self._slow = False

    @property
    def near(self) -> float:
        return NEAR * self.request_timeout

    def record(self, seconds: float) -> None:
        """One write, from sending to its answer or its failure (a timeout lasts the timeout)."""
        with self._lock:
            self._seconds.append(seconds)
            near = sum(1 for s in self._seconds if s >= self.near)
            if near >= SLOW_WRITES:
                self._slow = True
            elif near == 0:
                self._slow = False

    def state(self) -> RoundTripState:
        with self._lock:
            seconds = list(self._seconds)
            slow = self._slow
        if not seconds:
            return RoundTripState(False, "no pool-lease write yet")
        near = sum(1 for s in seconds if s >= self.near)
        worst = max(seconds)
        figures = (
            f"{near} of the last {len(seconds)} pool-lease writes took at least "
            f"{self.near:.2g} s of KUBE_REQUEST_TIMEOUT={self.request_timeout:g} s "
            f"(slowest {worst:.2f} s)"
        )
        if not slow:
            return RoundTripState(False, f"round trips within the timeout: {figures}")
        return RoundTripState(
            True,
            f"coordination API too slow for the timeouts: {figures}; writes answered late may "
            "be lost and forging stops when none lands within the renew deadline: raise "
            "KUBE_REQUEST_TIMEOUT (and LEASE_RETRY_PERIOD, LEASE_DURATION with it) or use a "
            "coordination API closer to this region",
        )


@dataclass(frozen=True)
class ProbeResult:
    warning: bool
    """Worth a warning: no answer, or an answer close to the request timeout."""
    message: str


def probe(
    read: Callable[[], object],
    *,
    request_timeout: float,
    clock: Callable[[], float] = time.monotonic,
    attempts: int = PROBES,
) -> ProbeResult:
    """Time up to ``attempts`` calls of ``read`` (made with a timeout longer than the request
    timeout); raise :class:`CoordinationTooSlow` when the API answered, but never within
    ``request_timeout``."""
    answered: list[float] = []
    errors: list[str] = []
    for _ in range(attempts):
        started = clock()
        try:
            read()
        except Exception as exc:  # an outage, not a setting: fail closed at run time instead
            errors.append(str(exc)[:200])
            break
        answered.append(clock() - started)
        if answered[-1] < NEAR * request_timeout:
            break
    if not answered:
        return ProbeResult(
            True,
            f"coordination API did not answer the start-up probe ({errors[-1]}); not forging "
            "until it does",
        )
    best = min(answered)
    if best >= request_timeout:
        raise CoordinationTooSlow(
            f"the coordination API answered a read of the pool lease in {best:.2f} s at best "
            f"({len(answered)} tries), more than KUBE_REQUEST_TIMEOUT={request_timeout:g} s: "
            "raise KUBE_REQUEST_TIMEOUT (and LEASE_RETRY_PERIOD, LEASE_DURATION with it) or "
            "use a coordination API closer to this region"
        )
    if best >= NEAR * request_timeout:
        return ProbeResult(
            True,
            f"coordination API round trip {best:.2f} s is close to KUBE_REQUEST_TIMEOUT="
            f"{request_timeout:g} s: writes answered late may be lost",
        )
    return ProbeResult(False, f"coordination API round trip {best * 1000:.0f} ms")
