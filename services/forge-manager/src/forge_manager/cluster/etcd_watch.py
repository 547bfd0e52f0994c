"""Following the pool lock and the heartbeats in etcd through an etcd v3 watch.

The same follower as on the Kubernetes backend (:class:`forge_manager.watch.Watcher`: list, then
watch from the list's position, resume from the last position seen, list again when that
position is gone, poll while the watch is broken); this module is its source over etcd's gRPC
gateway (``POST /v3/watch``, a stream of JSON messages):

* **list**: a linearizable range read of the key (or the prefix) through :class:`.Etcd`; each
  key-value is an item named by its key, with its **mod revision** as its version, and the
  answer's header revision as the position.
* **watch** from position ``p`` asks for the events from revision ``p + 1``. A PUT is a
  change to the item (timed when the event *arrives*, by :class:`~forge_manager.watch.StreamState`),
  a DELETE its removal at the deletion's revision; a watch whose start revision was compacted
  away is 410 Gone (list again); a cancelled watch or an error message breaks the stream.
  etcd's progress notifications are not asked for: the position only moves with events, so a
  resumption can never skip one.
* **A watch event can be late, never early**: etcd sends an event after the write it reports
  was committed and applied. A member cut off from the quorum (or a lost member whose
  connection stays open) only sends nothing, which makes records look *older*: a follower then
  judges the lock expired too early in its own observation, and the quorum read before the
  compare-and-swap (:meth:`~forge_manager.cluster.pool_lease.PoolLease.acquire`) finds the
  newer revision and does not acquire. A watch never decides alone.
* **Endpoints**: a watch goes to the endpoint its own :class:`.Rotation` picks (this region's
  member first). A stream that the member ends, or that cannot be opened, moves the watch to the
  next endpoint, and tells the calls' rotation (:meth:`.Etcd.failed_endpoint`), so that the
  next read or write does not spend its time on a member that is gone. A stream that a consumer
  closes because a quorum read showed a revision it had not delivered (``Watcher.resync``: the
  stream is behind) moves the watch too, and the watch starts over with a range read: resuming
  from a position is wrong after etcd was restored from a snapshot (its revisions went back, so
  a watch from the old position would wait for revisions that the new writes do not reach).
* **Every blocking read is bounded**: the stream's connection uses TCP keepalive (a peer that
  vanished is dropped within about 11 s), each read waits at most the watch window plus
  :data:`READ_SLACK_S`, and the client ends each stream after a window of
  ``WATCH_SECONDS`` (resumed at once, like the API server's ``timeoutSeconds``).

Cost to etcd: one long-lived watch request per watched key or prefix per pod (the pool lock
and the heartbeats: two), re-opened every four to five minutes, and one range read per start,
per compaction and per broken stream. It replaces a range read per retry period per follower.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter

from forge_manager.cluster.etcd_client import (
    Etcd,
    EtcdError,
    KeyValue,
    Rotation,
    _b64,
    _kv,
    session_for,
)
from forge_manager.cluster.etcd_settings import EtcdSettings
from forge_manager.watch import KEEPALIVE, WatchError, WatchGone, WatchStream, close_stream

log = logging.getLogger("forge_manager.cluster.etcd_watch")

READ_SLACK_S = 30.0
"""A read of a stream waits at most the watch window plus this."""

NameOf = Callable[[str], "str | None"]
"""The item name of a key (None: not one of ours)."""


# ---- messages to events (pure) ------------------------------------------------------------------
def item(name: str, kv: KeyValue) -> dict[str, Any]:
    """A key-value as a watched item: the name, the mod revision as its version, the kv."""
    return {"metadata": {"name": name, "resourceVersion": str(kv.mod_revision)}, "kv": kv}


def events_of(message: Mapping[str, Any], name_of: NameOf) -> list[dict[str, Any]]:
    """The watch events (``watch.StreamState``'s form) in one message of the gateway's stream.
    Raises :class:`WatchError` for an error or a cancelled watch."""
    error = message.get("error")
    if error is not None:
        text = error.get("message") if isinstance(error, Mapping) else error
        raise WatchError(f"etcd watch error: {text}"[:300])
    result = message.get("result")
    if not isinstance(result, Mapping):
        raise WatchError(f"etcd watch message without a result: {message!r}"[:300])
    if int(result.get("compact_revision") or 0) > 0:
        compacted = result.get("compact_revision")
        return [{"type": "ERROR", "object": {"code": 410, "message": f"compacted at {compacted}"}}]
    if result.get("canceled"):
        raise WatchError(f"etcd watch cancelled: {result.get('cancel_reason') or 'no reason'}")
    out: list[dict[str, Any]] = []
    for event in result.get("events") or []:
        if not isinstance(event, Mapping):
            raise WatchError("etcd watch event is not an object")
        try:
            kv = _kv(event.get("kv"))
        except EtcdError as exc:
            raise WatchError(str(exc)) from None
        name = name_of(kv.key)
        if name is None:
            continue
        if not kv.mod_revision:
            raise WatchError(f"etcd watch event for {kv.key} without a mod revision")
        if event.get("type", "PUT") == "DELETE":
            meta = {"name": name, "resourceVersion": str(kv.mod_revision)}
            out.append({"type": "DELETED", "object": {"metadata": meta}})
        elif event.get("type", "PUT") == "PUT":
            out.append({"type": "MODIFIED", "object": item(name, kv)})
        else:
            raise WatchError(f"unknown etcd watch event type {event.get('type')!r}")
    return out


# ---- the transport ------------------------------------------------------------------------------
class RawWatch(Protocol):
    """One open ``/v3/watch`` response: its messages, parsed."""

    def __iter__(self) -> Iterator[Mapping[str, Any]]: ...
    def close(self) -> None:
        """Unblock a read in progress (from another thread) and release the connection."""


class WatchTransport(Protocol):
    def open(self, index: int, body: Mapping[str, Any], read_timeout: float) -> RawWatch:
        """Open a watch on endpoint ``index``; raises on any failure."""


class _KeepaliveAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        options = [
            (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
            (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        ]
        for name, value in (("TCP_KEEPIDLE", KEEPALIVE["idle"]),
                            ("TCP_KEEPINTVL", KEEPALIVE["interval"]),
                            ("TCP_KEEPCNT", KEEPALIVE["count"])):  # fmt: skip
            if hasattr(socket, name):
                options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
        kwargs["socket_options"] = options
        super().init_poolmanager(*args, **kwargs)


class _HttpRawWatch:
    def __init__(self, resp: requests.Response) -> None:
        self._resp = resp
        conn = getattr(resp.raw, "connection", None) or getattr(resp.raw, "_connection", None)
        self._sock = getattr(conn, "sock", None)
        self._closed = False

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        for line in self._resp.iter_lines(chunk_size=None):
            if not line.strip():
                continue
            message = json.loads(line)
            if not isinstance(message, dict):
                raise WatchError("etcd watch message is not an object")
            yield message

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close_stream(self._sock, self._resp.close)


class HttpWatchTransport:
    """Watches over the gateway, a session per endpoint (apart from the calls' connections),
    with TCP keepalive."""

    def __init__(self, settings: EtcdSettings, *, request_timeout: float) -> None:
        self.endpoints = settings.endpoints
        self.request_timeout = request_timeout
        self._sessions = []
        for _ in settings.endpoints:
            session = session_for(settings)
            adapter = _KeepaliveAdapter(max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._sessions.append(session)

    def open(self, index: int, body: Mapping[str, Any], read_timeout: float) -> RawWatch:
        resp = self._sessions[index].post(
            f"{self.endpoints[index]}/v3/watch",
            json=dict(body),
            stream=True,
            timeout=(self.request_timeout, read_timeout),
        )
        if resp.status_code != 200:
            text = resp.text[:200]
            resp.close()
            raise WatchError(f"HTTP {resp.status_code}: {text}")
        return _HttpRawWatch(resp)


# ---- the source ---------------------------------------------------------------------------------
class _Stream:
    """The events of one watch; ended by the member (broken), by its window (normal), or by
    :meth:`close` from another thread (normal for the watcher; the endpoint counts as behind)."""

    def __init__(
        self,
        raw: RawWatch,
        name_of: NameOf,
        window: float,
        on_broken: Callable[[], None],
        on_behind: Callable[[], None],
    ) -> None:
        self._raw = raw
        self._name_of = name_of
        self._on_broken = on_broken
        self._on_behind = on_behind
        self._lock = threading.Lock()
        self._ended: str | None = None
        self._timer = threading.Timer(window, self._end, args=("window",))
        self._timer.daemon = True
        self._timer.start()

    def _end(self, why: str) -> bool:
        with self._lock:
            if self._ended is not None:
                return False
            self._ended = why
        self._timer.cancel()
        self._raw.close()
        return True

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        try:
            for message in self._raw:
                yield from events_of(message, self._name_of)
        except WatchError:
            if self._end("broken"):
                self._on_broken()
            raise
        except Exception as exc:
            if self._ended is not None:
                return  # closed by us: the read was interrupted on purpose
            self._end("broken")
            self._on_broken()
            raise WatchError(
                f"etcd watch stream failed: {type(exc).__name__}: {exc}"[:300]
            ) from None
        if self._end("broken"):  # the member ended it: gone, restarting, or cut off
            self._on_broken()
            raise WatchError("the etcd member ended the watch stream")

    def close(self) -> None:
        if self._end("closed"):
            self._on_behind()


class EtcdWatchSource:
    """A :class:`~forge_manager.watch.WatchSource` of one key (``range_end`` None) or one
    prefix in etcd. ``etcd`` reads the lists (an instance of its own: it is called from the
    watcher's thread); ``calls`` is the coordination loop's, told when a member broke a
    stream."""

    def __init__(
        self,
        etcd: Etcd,
        transport: WatchTransport,
        *,
        key: str,
        range_end: str | None,
        name_of: NameOf,
        clock: Callable[[], float],
        calls: Etcd | None = None,
    ) -> None:
        self._etcd = etcd
        self._transport = transport
        self.key = key
        self.range_end = range_end
        self._name_of = name_of
        self._calls = calls
        self.rotation = Rotation(len(etcd.endpoints), clock)
        self._relist = False
        self.opened: list[int] = []
        """Endpoint index of every watch opened (for tests and figures)."""

    def list(self) -> tuple[list[Mapping[str, Any]], str]:
        kvs, revision = self._etcd.range(self.key, self.range_end)
        items: list[Mapping[str, Any]] = []
        for kv in kvs:
            name = self._name_of(kv.key)
            if name is not None:
                items.append(item(name, kv))
        return items, str(revision)

    def _broken(self, index: int) -> None:
        self.rotation.failed(index)
        if self._calls is not None:
            self._calls.failed_endpoint(index)

    def _behind(self, index: int) -> None:
        self.rotation.failed(index)
        self._relist = True

    def watch(self, version: str, timeout_seconds: int) -> WatchStream:
        if self._relist:
            self._relist = False
            raise WatchGone("the stream was behind a quorum read: reading the range again")
        try:
            start = int(version) + 1
        except ValueError:
            raise WatchGone(f"cannot resume from {version!r}") from None
        body: dict[str, Any] = {"create_request": {"key": _b64(self.key), "start_revision": start}}
        if self.range_end is not None:
            body["create_request"]["range_end"] = _b64(self.range_end)
        index = self.rotation.pick()
        try:
            raw = self._transport.open(index, body, float(timeout_seconds) + READ_SLACK_S)
        except Exception as exc:
            self._broken(index)
            raise WatchError(
                f"etcd {self._etcd.endpoints[index]}: opening a watch failed: "
                f"{type(exc).__name__}: {exc}"[:300]
            ) from None
        self.opened.append(index)
        return _Stream(
            raw,
            self._name_of,
            float(timeout_seconds),
            on_broken=lambda: self._broken(index),
            on_behind=lambda: self._behind(index),
        )


def key_name(key: str) -> NameOf:
    """Items named by the one key."""
    return lambda k: k if k == key else None


def suffix_name(prefix: str) -> NameOf:
    """Items named by what follows ``prefix`` (heartbeats by region)."""
    return lambda k: k[len(prefix) :] if k.startswith(prefix) and len(k) > len(prefix) else None
