"""Following Leases through a watch: what changed, and when this pod saw it.

A follower judges a Lease's expiry from the moment it *saw* the record change, on its own clock
(:mod:`forge_manager.clock`). Polling saw a renewal up to one retry period late, and that lag was
added to every failover. A watch delivers the change milliseconds after the write.

The protocol is client-go's reflector, with explicit bounds on every blocking call:

* LIST without a resourceVersion (a quorum read): the objects and the list's resourceVersion;
* WATCH from that resourceVersion with ``allowWatchBookmarks``, a server-side ``timeoutSeconds``
  (:data:`WATCH_SECONDS`), connecting bounded by the request timeout and every read of the
  stream by :data:`READ_TIMEOUT_S` (the API server sends a bookmark about once a minute, so a
  healthy stream is never silent for that long), over connections with TCP keepalive so that a
  peer that vanished is noticed within seconds;
* a stream that ends (the server's timeout, a closed connection) is resumed from the last
  resourceVersion seen (of an event or a bookmark), so no change is missed;
* 410 Gone (that version was compacted away), and three failed resumptions in a row, LIST again;
* any failure leaves the watch *not live* until a new stream is open; it is retried every retry
  period, and the consumers read with a quorum GET every cycle meanwhile (polling, as before).

What a consumer may rely on (:class:`Seen`): the time a version was seen is never earlier than
the write that produced it — an event is sent after the write it reports was applied, and a LIST
answer after the state it shows — so a watch can be late, never early. Versions only move
forward: the state is replaced only by a newer LIST or by the events of one stream, in order. A
bookmark moves the position, never an object. Resource versions are compared as the API
guarantees since Kubernetes 1.35 (:func:`compare_resource_versions`, KEP-5504); a consumer that
cannot compare one falls back to reading.

Cost to the API server: one long-lived request per watched object per pod (a connection each:
this client speaks HTTP/1.1), served from the watch cache and re-established every
:data:`WATCH_SECONDS` (one WATCH request per five minutes or so), a bookmark a minute on it, and
one LIST per start, per 410 and per failed stream. It replaces a quorum GET per retry period per
follower, each of which went to etcd.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import random
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from forge_manager.lease import LeaseRecord, record_from_dict

log = logging.getLogger("forge_manager.watch")

READ_TIMEOUT_S = 75.0
"""Bound on every read of a watch stream: above the API server's bookmark period (one minute)."""

WATCH_SECONDS = (240, 300)
"""Server-side ``timeoutSeconds`` of a watch request, drawn at random in this range (spreads the
re-watches of many pods, as client-go does)."""

RESUME_FAILURES_BEFORE_RELIST = 3

KEEPALIVE = {"idle": 5, "interval": 2, "count": 3}
"""TCP keepalive of the watch connections: a silent peer is dropped after about 11 s."""


# ---- resource versions --------------------------------------------------------------------------
def compare_resource_versions(a: str, b: str) -> int | None:
    """-1, 0 or 1 as ``a`` is older than, the same as or newer than ``b`` (two versions of the
    same resource); None when either is not a well-formed version (a positive decimal integer
    without leading zeros, KEP-5504): then nothing can be said about their order."""
    for v in (a, b):
        if not v or not v.isdigit() or not v.isascii() or v[0] == "0":
            return None
    if len(a) != len(b):
        return -1 if len(a) < len(b) else 1
    return (a > b) - (a < b)


def is_newer(version: str, than: str) -> bool | None:
    """Whether ``version`` is newer than ``than`` ("" = nothing known yet: anything is newer);
    None when they cannot be compared."""
    if not than:
        return True
    order = compare_resource_versions(version, than)
    return None if order is None else order > 0


# ---- the state of one stream (pure) -------------------------------------------------------------
@dataclass(frozen=True)
class Seen:
    """One object as watched: its content, its version, and when this pod first saw that version."""

    obj: Mapping[str, Any] | None
    """The object as the API server sent it; None while it does not exist."""
    version: str
    """Its resourceVersion; for an object that does not exist, the version at which it was seen
    missing (its deletion's, or the LIST's that did not contain it)."""
    seen_at: float
    """This pod's clock when it first saw this version (for a missing object: when the stream
    that still shows it missing first did; a LIST starts over)."""


@dataclass(frozen=True)
class Outcome:
    """What one watch event did to the state."""

    changed: tuple[str, ...] = ()
    gone: bool = False
    """410: the stream's version is too old; LIST again."""
    error: str = ""


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class StreamState:
    """The objects of one LIST+WATCH, by name; no I/O, not thread-safe.

    ``track``: a name whose absence is recorded too (a watch of one object by name), so that a
    consumer learns when it was first seen missing."""

    def __init__(self, track: str | None = None) -> None:
        self.track = track
        self.objects: dict[str, Seen] = {}
        self.position = ""
        """The version to resume a watch from: the LIST's, then the last event's or bookmark's."""

    def listed(self, items: list[Mapping[str, Any]], version: str, now: float) -> tuple[str, ...]:
        """A LIST answer replaces the state. An object still at the version already seen keeps
        the time it was first seen (a delete and re-create always changes the version); a
        tracked name missing again is seen missing from now (see below)."""
        changed: list[str] = []
        fresh: dict[str, Seen] = {}
        for obj in items:
            name = _name(obj)
            if not name:
                continue
            prev = self.objects.get(name)
            if prev is not None and prev.obj is not None and prev.version == _version(obj):
                fresh[name] = Seen(obj, prev.version, prev.seen_at)
            else:
                fresh[name] = Seen(obj, _version(obj), now)
                changed.append(name)
        for name, prev in self.objects.items():
            if name in fresh:
                continue
            if name != self.track:
                if prev.obj is not None:
                    changed.append(name)  # gone: an untracked name is simply dropped
            else:
                # Missing before this LIST and missing in it is no evidence that it was missing
                # in between (created, held and deleted while no stream was open): it is seen
                # missing anew, at this LIST's version, from now.
                fresh[name] = Seen(None, version, now)
                changed.append(name)
        if self.track is not None and self.track not in fresh:
            fresh[self.track] = Seen(None, version, now)
            changed.append(self.track)
        self.objects = fresh
        self.position = version
        return tuple(dict.fromkeys(changed))

    def event(self, event: Mapping[str, Any], now: float) -> Outcome:
        kind = str(event.get("type") or "")
        obj = event.get("object")
        if not isinstance(obj, Mapping):
            return Outcome(error=f"watch event {kind or '?'} without an object")
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                return Outcome(gone=True)
            return Outcome(error=f"watch error {code}: {obj.get('message') or obj.get('reason')}")
        version = _version(obj)
        if kind == "BOOKMARK":
            if version:
                self.position = version
            return Outcome()
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return Outcome(error=f"unknown watch event type {kind!r}")
        name = _name(obj)
        if not name or not version:
            return Outcome(error=f"watch event {kind} without a name or resourceVersion")
        self.position = version
        prev = self.objects.get(name)
        if kind == "DELETED":
            if name == self.track:
                if prev is not None and prev.obj is None:
                    return Outcome()
                self.objects[name] = Seen(None, version, now)
            elif self.objects.pop(name, None) is None:
                return Outcome()
            return Outcome(changed=(name,))
        if prev is not None and prev.obj is not None and prev.version == version:
            return Outcome()  # the same version again (a resumed stream repeating itself)
        self.objects[name] = Seen(obj, version, now)
        return Outcome(changed=(name,))


# ---- the I/O seam --------------------------------------------------------------------------------
class WatchGone(Exception):
    """410 Gone: the version asked for is no longer available; LIST again."""


class WatchError(Exception):
    """A LIST or WATCH call failed (timeout, connection, HTTP status)."""


class WatchStream(Protocol):
    def __iter__(self) -> Iterator[Mapping[str, Any]]: ...
    def close(self) -> None:
        """Unblock and end the stream (called from another thread)."""


class WatchSource(Protocol):
    def list(self) -> tuple[list[Mapping[str, Any]], str]:
        """Quorum LIST: the objects and the list's resourceVersion."""

    def watch(self, version: str, timeout_seconds: int) -> WatchStream:
        """Open a watch from ``version``; raises :class:`WatchGone` or :class:`WatchError`."""


@dataclass(frozen=True)
class WatchView:
    live: bool
    """A stream is open and the objects are current up to it."""
    objects: Mapping[str, Seen]
    error: str
    """Why it is not live; empty while it is."""
    position: str = ""
    """The version a resumed watch starts from (the last LIST's, event's or bookmark's)."""


# ---- the thread --------------------------------------------------------------------------------
class Watcher:
    """LIST, then WATCH and resume, in a thread of its own; :meth:`view` is the latest state.

    ``on_change(name, before, after)`` is called from the watcher's thread after each change (no
    lock held); it must not block."""

    def __init__(
        self,
        source: WatchSource,
        *,
        what: str,
        clock: Callable[[], float],
        retry_period: float,
        track: str | None = None,
        on_change: Callable[[str, Seen | None, Seen | None], None] | None = None,
        watch_seconds: tuple[int, int] = WATCH_SECONDS,
    ) -> None:
        self._source = source
        self.what = what
        self._clock = clock
        self._retry = retry_period
        self._on_change = on_change
        self._watch_seconds = watch_seconds
        self._state = StreamState(track)
        self._lock = threading.Lock()
        self._live = False
        self._error = "not started"
        self._stop = threading.Event()
        self._stream: WatchStream | None = None
        self._thread: threading.Thread | None = None
        self._relist = True
        self._resync = False
        self.lists = 0
        self.watches = 0
        """Requests made (for tests and figures)."""

    # ---- for consumers -----------------------------------------------------------------------
    def view(self) -> WatchView:
        with self._lock:
            state = self._state
            return WatchView(self._live, dict(state.objects), self._error, state.position)

    def resync(self) -> None:
        """End the current stream (it resumes from its version at once): a consumer's quorum
        read found a version the stream has not delivered, so the stream may be stuck."""
        with self._lock:
            stream = self._stream
            self._resync = stream is not None
        if stream is not None:
            stream.close()

    def start(self) -> Watcher:
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.what}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.resync()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- the loop ------------------------------------------------------------------------------
    def _set(self, live: bool, error: str = "") -> None:
        with self._lock:
            was = (self._live, self._error)
            self._live, self._error = live, error
        if was[0] and not live and not self._stop.is_set():
            log.warning("watch of %s broken (%s); reading every retry period", self.what, error)
        elif not was[0] and live and was[1] != "not started":
            log.info("watch of %s resumed", self.what)

    def _notify(self, before: Mapping[str, Seen], names: tuple[str, ...]) -> None:
        if self._on_change is None or not names:
            return
        with self._lock:
            after = dict(self._state.objects)
        for name in names:
            try:
                self._on_change(name, before.get(name), after.get(name))
            except Exception:  # a consumer's bug must not end the watch
                log.exception("watch of %s: change callback failed", self.what)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if self._relist:
                try:
                    items, version = self._source.list()
                    self.lists += 1
                except Exception as exc:  # bounded by the request timeout
                    self._set(False, f"list failed: {exc}"[:300])
                    self._stop.wait(self._retry)
                    continue
                with self._lock:
                    before = dict(self._state.objects)
                    changed = self._state.listed(items, version, self._clock())
                self._notify(before, changed)
                self._relist = False
                failures = 0
            with self._lock:
                position = self._state.position
            try:
                stream = self._source.watch(position, random.randint(*self._watch_seconds))  # noqa: S311
                self.watches += 1
            except WatchGone:
                self._relist = True
                continue
            except Exception as exc:
                failures += 1
                self._relist = failures >= RESUME_FAILURES_BEFORE_RELIST
                self._set(False, f"watch failed: {exc}"[:300])
                self._stop.wait(self._retry)
                continue
            with self._lock:
                self._stream = stream
            if self._stop.is_set():
                stream.close()
                break
            self._set(True)
            failures = 0
            error = self._follow(stream)
            with self._lock:
                self._stream = None
                if self._resync:  # closed on purpose: resume at once
                    self._resync, error = False, ""
            stream.close()
            if error:
                self._set(False, error)
                if not self._relist:
                    self._stop.wait(self._retry)
        self._set(False, "stopped")

    def _follow(self, stream: WatchStream) -> str:
        """Apply the stream's events until it ends; returns why it broke ("" for a normal end,
        after which the watch is resumed at once and stays live)."""
        try:
            for event in stream:
                if self._stop.is_set():
                    return ""
                with self._lock:
                    before = dict(self._state.objects)
                    outcome = self._state.event(event, self._clock())
                if outcome.gone:
                    self._relist = True
                    return "410 Gone: listing again"
                if outcome.error:
                    return outcome.error[:300]
                self._notify(before, outcome.changed)
        except Exception as exc:  # read timeout, reset connection, bad JSON
            return f"stream failed: {type(exc).__name__}: {exc}"[:300]
        return ""


# ---- Leases over the kubernetes client -----------------------------------------------------------
def watch_api_client(api: Any) -> Any:
    """A client of its own for watches (long-lived connections must not occupy the pool the
    Lease writes use), on the same configuration, with TCP keepalive."""
    from kubernetes import client  # noqa: PLC0415 (slow import)

    configuration = copy.deepcopy(api.configuration)
    options = [
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    ]
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE["idle"]),
                        ("TCP_KEEPINTVL", KEEPALIVE["interval"]),
                        ("TCP_KEEPCNT", KEEPALIVE["count"])):  # fmt: skip
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    configuration.socket_options = options
    configuration.retries = False
    return client.ApiClient(configuration)


def _status_error(status: int, body: bytes) -> Exception:
    try:
        message = str(json.loads(body or b"{}").get("message") or "")
    except (ValueError, AttributeError):
        message = ""
    text = f"HTTP {status}" + (f": {message}" if message else "")
    return WatchGone(text) if status == 410 else WatchError(text[:300])


def close_stream(sock: socket.socket | None, *closers: Callable[[], object]) -> None:
    """End a streaming response: shut its socket down first (unblocks a read in progress in
    another thread), then each closer, every failure ignored (the stream is being abandoned)."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    for close in closers:
        with contextlib.suppress(Exception):
            close()


class _HttpStream:
    """The lines of one watch response, each parsed as an event."""

    def __init__(self, resp: Any) -> None:
        self._resp = resp
        conn = getattr(resp, "connection", None)
        self._sock = getattr(conn, "sock", None)
        self._closed = False

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        buffer = b""
        for chunk in self._resp.stream(amt=None, decode_content=False):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    event = json.loads(line)
                    if not isinstance(event, dict):
                        raise WatchError("watch event is not an object")
                    yield event

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close_stream(self._sock, self._resp.close, self._resp.release_conn)


class LeaseWatchSource:
    """LIST and WATCH of Leases in one namespace, by name (``field_selector``) or by label."""

    def __init__(
        self,
        api: Any,
        *,
        namespace: str,
        request_timeout: float,
        name: str | None = None,
        label_selector: str | None = None,
        read_timeout: float = READ_TIMEOUT_S,
    ) -> None:
        from kubernetes import client  # noqa: PLC0415 (slow import)

        self._api = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.request_timeout = request_timeout
        self.read_timeout = read_timeout
        self._selectors: dict[str, str] = {}
        if name is not None:
            self._selectors["field_selector"] = f"metadata.name={name}"
        if label_selector is not None:
            self._selectors["label_selector"] = label_selector

    def _call(self, timeout: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        try:
            resp: Any = self._api.list_namespaced_lease(
                self.namespace,
                _preload_content=False,
                _request_timeout=timeout,
                **self._selectors,  # type: ignore[arg-type]
                **kwargs,
            )
        except ApiException as exc:
            body = exc.body or b""
            raise _status_error(
                exc.status or 0, body.encode() if isinstance(body, str) else body
            ) from None
        except Exception as exc:
            raise WatchError(f"{type(exc).__name__}: {exc}"[:300]) from None
        status = int(getattr(resp, "status", 200))
        if not 200 <= status <= 299:
            try:
                body = resp.data
            except Exception:
                body = b""
            with contextlib.suppress(Exception):
                resp.close()
            raise _status_error(status, body)
        return resp

    def list(self) -> tuple[list[Mapping[str, Any]], str]:
        resp = self._call(self.request_timeout)
        try:
            body = json.loads(resp.data)
        except Exception as exc:
            raise WatchError(f"list answer unreadable: {type(exc).__name__}: {exc}"[:300]) from None
        items = body.get("items") if isinstance(body, dict) else None
        version = str(((body.get("metadata") or {}) if isinstance(body, dict) else {}).get(
            "resourceVersion") or "")  # fmt: skip
        if not isinstance(items, list) or not version:
            raise WatchError("list answer without items or resourceVersion")
        return [i for i in items if isinstance(i, dict)], version

    def watch(self, version: str, timeout_seconds: int) -> WatchStream:
        resp = self._call(
            (self.request_timeout, self.read_timeout),
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=version,
            timeout_seconds=timeout_seconds,
        )
        return _HttpStream(resp)


# ---- one watched Lease, as a follower consumes it ------------------------------------------------
@dataclass(frozen=True)
class LeaseObservation:
    record: LeaseRecord | None
    """None while the Lease does not exist."""
    version: str
    """The record's resourceVersion (or the version at which it was seen missing)."""
    seen_at: float
    """When this pod first saw this version (its clock)."""


class WatchedLease:
    """One Lease by name, through a :class:`Watcher`."""

    def __init__(
        self,
        source: WatchSource,
        name: str,
        *,
        what: str,
        clock: Callable[[], float],
        retry_period: float,
        record: Callable[[Mapping[str, Any]], LeaseRecord] = record_from_dict,
    ) -> None:
        self.name = name
        self._record = record
        """The record of a watched object (a Lease's JSON; the etcd backend's key-value)."""
        self._on_change: Callable[[LeaseRecord | None, LeaseRecord | None], None] | None = None
        self.watcher = Watcher(
            source,
            what=what,
            clock=clock,
            retry_period=retry_period,
            track=name,
            on_change=self._changed,
        )

    def on_change(self, callback: Callable[[LeaseRecord | None, LeaseRecord | None], None]) -> None:
        """``callback(before, after)`` after every change of the record (watcher thread)."""
        self._on_change = callback

    def _changed(self, name: str, before: Seen | None, after: Seen | None) -> None:
        if name != self.name or self._on_change is None:
            return
        try:
            before_rec, after_rec = self._as_record(before), self._as_record(after)
        except Exception:  # an unreadable record: the next quorum read says so
            return
        self._on_change(before_rec, after_rec)

    def observed(self) -> LeaseObservation | None:
        """The Lease as last seen, or None while the watch is not live, or what it shows
        cannot be read (then read instead)."""
        view = self.watcher.view()
        seen = view.objects.get(self.name)
        if not view.live or seen is None:
            return None
        try:
            record = self._as_record(seen)
        except Exception:
            return None
        return LeaseObservation(record, seen.version, seen.seen_at)

    def _as_record(self, seen: Seen | None) -> LeaseRecord | None:
        if seen is None or seen.obj is None:
            return None
        return self._record(seen.obj)

    def resync(self) -> None:
        self.watcher.resync()

    def start(self) -> WatchedLease:
        self.watcher.start()
        return self

    def stop(self) -> None:
        self.watcher.stop()


# ---- a follower taking the watched record -------------------------------------------------------
class LeaseWatch(Protocol):
    """A Lease as a watch sees it (:class:`WatchedLease`); unit tests provide their own."""

    def observed(self) -> LeaseObservation | None:
        """The record last seen and when; None while the watch is not live."""

    def resync(self) -> None:
        """Restart the stream: a quorum read found a version it has not delivered."""


class ObserveRecord(Protocol):
    """How a consumer records what it saw (the lock held): the record (None: missing), when this
    pod saw it; ``watched`` and ``version`` as :func:`take_watched` passes them."""

    def __call__(
        self, rec: LeaseRecord | None, seen_at: float, /, *, watched: bool, version: str | None
    ) -> None: ...


def take_watched(
    watch: LeaseWatch | None,
    lock: contextlib.AbstractContextManager[object],
    held_version: Callable[[], str],
    observe: ObserveRecord,
    taken: Callable[[], None] = lambda: None,
) -> bool:
    """Take the watched record when it is newer than the one held; False when the watch cannot
    be used (none, not live, or versions that cannot be compared): read instead.

    The watch is asked outside ``lock`` (its own lock is never taken under the consumer's).
    Under ``lock``, in one step: ``held_version()`` (the resourceVersion the consumer holds, ""
    for none) is compared with the watched one; when newer, ``observe(record, seen_at,
    watched=True, version=...)``; when the two could be compared at all, ``taken()``."""
    if watch is None:
        return False
    seen = watch.observed()
    if seen is None:
        return False
    with lock:
        newer = is_newer(seen.version, held_version())
        if newer is None:
            return False
        if newer:
            observe(seen.record, seen.seen_at, watched=True, version=seen.version)
        taken()
    return True


class Runnable(Protocol):
    """A watch whose thread its owner starts and stops."""

    def start(self) -> object: ...
    def stop(self) -> None: ...
