"""Kubernetes Events for every transition, best effort and off the critical path.

The control loop calls :meth:`EventRecorder.record`, which never blocks and never raises: it
checks a per-object token bucket (a flapping pod cannot flood the API: ``burst`` Events at once,
then one per ``refill_seconds`` per object, as client-go's spam filter does) and puts the Event
on a bounded queue; when the queue is full the Event is dropped and counted. One daemon thread
posts the queue (``core/v1`` Events, the API every ``kubectl describe`` shows), each call bounded
by the request timeout; a failure is logged once per kind of error, counted and forgotten. Nothing
the Events API does (slow, failing, forbidden) reaches the election or the credentials.

The reasons are fixed words (``LeaderElected``, ``LeadershipLost``, ``ForgingEnabled``,
``ForgingDisabled``, ``HandedOver``, ``SwitchoverRefused``, ``RefusedToForge`` and the cluster
coordinator's ``AcquiredPoolLease``, ``HandedOver``, ``SteppedDown``); the message is the reason
string the log line carries. ``reportingComponent`` is ``cardano-forge-manager`` (what
``cardano-forge history`` selects) and ``reportingInstance`` the pod's name.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger("forge_manager.events")

COMPONENT = "cardano-forge-manager"
"""``reportingComponent`` and ``source.component`` of the forge managers' Events (the CLI's
``history`` reads them by it)."""
NORMAL, WARNING = "Normal", "Warning"


@dataclass(frozen=True)
class Involved:
    kind: str
    name: str
    namespace: str
    api_version: str
    uid: str = ""


@dataclass(frozen=True)
class Event:
    involved: Involved
    reason: str
    message: str
    type: str = NORMAL
    time: float = 0.0
    """Wall-clock seconds at which the transition happened (not when it was posted)."""


class EventSink(Protocol):
    """The seam to the API: posts one Event or raises (any exception)."""

    def post(self, event: Event) -> None: ...


class Counters(Protocol):
    def event_posted(self) -> None: ...
    def event_dropped(self, cause: str) -> None: ...


class _NoCounters:
    def event_posted(self) -> None:
        pass

    def event_dropped(self, cause: str) -> None:
        pass


class EventRecorder:
    def __init__(
        self,
        sink: EventSink,
        *,
        clock: Callable[[], float],
        wall: Callable[[], float],
        capacity: int = 64,
        burst: int = 10,
        refill_seconds: float = 30.0,
        counters: Counters | None = None,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._wall = wall
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=capacity)
        self._burst = burst
        self._refill = refill_seconds
        self._buckets: dict[Involved, tuple[float, float]] = {}
        """(tokens, when last refilled) per involved object."""
        self._lock = threading.Lock()
        self._counters = counters or _NoCounters()
        self._thread: threading.Thread | None = None
        self._last_error = ""

    # ---- the loop's side: never blocks, never raises ----------------------------------------
    def record(self, involved: Involved, reason: str, message: str, type_: str = NORMAL) -> None:
        try:
            if not self._take(involved):
                self._counters.event_dropped("rate_limited")
                return
            event = Event(involved, reason, message[:1024], type_, self._wall())
            self._queue.put_nowait(event)
        except queue.Full:
            self._counters.event_dropped("queue_full")
        except Exception:  # an Event must never cost a transition
            log.debug("recording an Event failed", exc_info=True)
            self._counters.event_dropped("error")

    def _take(self, involved: Involved) -> bool:
        now = self._clock()
        with self._lock:
            tokens, since = self._buckets.get(involved, (float(self._burst), now))
            tokens = min(float(self._burst), tokens + (now - since) / self._refill)
            if tokens < 1.0:
                self._buckets[involved] = (tokens, now)
                return False
            self._buckets[involved] = (tokens - 1.0, now)
            return True

    # ---- the poster ---------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            self.post_one(event)

    def post_one(self, event: Event) -> None:
        try:
            self._sink.post(event)
        except Exception as exc:
            self._counters.event_dropped("api_error")
            text = f"{type(exc).__name__}: {exc}"[:300]
            kind = text.split(":", 1)[0] + text[:40]
            if kind != self._last_error:
                log.warning("an Event could not be posted (%s); Events are best effort", text)
            self._last_error = kind
            return
        self._last_error = ""
        self._counters.event_posted()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Post what is queued for at most ``timeout`` seconds (shutdown's last Events)."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)


def format_time(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiEventSink:
    """core/v1 Events through the official client; every call bounded by ``request_timeout``."""

    def __init__(self, api: Any, *, instance: str, request_timeout: float) -> None:
        from kubernetes import client  # noqa: PLC0415 (only when Events are on)

        self._core = client.CoreV1Api(api)
        self._instance = instance[:128]
        self._timeout = request_timeout

    def post(self, event: Event) -> None:
        stamp = format_time(event.time)
        obj = event.involved
        involved = {
            "kind": obj.kind,
            "name": obj.name,
            "namespace": obj.namespace,
            "apiVersion": obj.api_version,
        }
        if obj.uid:
            involved["uid"] = obj.uid
        body: Any = {
            "metadata": {"generateName": f"{obj.name}.", "namespace": obj.namespace},
            "involvedObject": involved,
            "reason": event.reason,
            "message": event.message,
            "type": event.type,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        self._core.create_namespaced_event(obj.namespace, body, _request_timeout=self._timeout)


class EventsConfigError(ValueError):
    pass


def events_enabled(env: Mapping[str, str]) -> bool:
    """``KUBE_EVENTS``: true (default) or false."""
    raw = env.get("KUBE_EVENTS", "").strip().lower()
    if raw in ("", "true", "1", "yes"):
        return True
    if raw in ("false", "0", "no"):
        return False
    raise EventsConfigError(
        f"KUBE_EVENTS={env['KUBE_EVENTS']!r} is not valid: expected true or false"
    )


class RoutingSink:
    """Pod Events to the local API, CardanoForgeCluster Events to the coordination API."""

    def __init__(self, local: EventSink, coordination: EventSink | None) -> None:
        self._local = local
        self._coordination = coordination or local

    def post(self, event: Event) -> None:
        sink = self._local if event.involved.kind == "Pod" else self._coordination
        sink.post(event)


def pod(name: str, namespace: str, uid: str = "") -> Involved:
    return Involved("Pod", name, namespace, "v1", uid)


def region(name: str, namespace: str) -> Involved:
    return Involved("CardanoForgeCluster", name, namespace, "cardano.io/v1")


__all__ = [
    "COMPONENT",
    "NORMAL",
    "WARNING",
    "ApiEventSink",
    "Event",
    "EventRecorder",
    "EventSink",
    "EventsConfigError",
    "Involved",
    "RoutingSink",
    "events_enabled",
    "pod",
    "region",
]
