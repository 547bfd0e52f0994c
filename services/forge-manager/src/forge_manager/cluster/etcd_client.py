"""The etcd v3 calls the coordination backend makes, over etcd's gRPC gateway (``etcd3gw``).

etcd serves its v3 API as JSON over HTTP on the client port (``/v3/kv/range``, ``/v3/kv/txn``:
the documented gRPC gateway); ``etcd3gw`` (OpenStack) is the client. Three rules:

* **One attempt per call, bounded by the request timeout** (connecting, and waiting for the
  answer), as with the Kubernetes API: no call blocks the coordination loop for longer.
* **Reads are linearizable** (``serializable=false``, etcd's default, sent explicitly): the
  member confirms with the Raft leader that it has applied everything committed before it
  answers (ReadIndex). A member cut off from the quorum does not answer a read from its own,
  possibly stale, store: it fails, which ends in "not forging".
* **Endpoints in order, this region's member first.** A call that fails makes the *next* call go
  to the next endpoint. Inside one call, a failure that leaves time in the call's bound moves
  the call itself to the next endpoint, with what is left of the bound (never more: the request
  timeout bounds the whole call): a read after any such failure, a write only when it failed
  while connecting (never sent, so never applied). A member that is gone and refuses
  connections therefore costs a call milliseconds, not a cycle. After :data:`PREFER_FIRST_AFTER`
  seconds on another endpoint the next call tries the first again, so a region returns to its
  own member when it is back. The watches (:mod:`.etcd_watch`) keep an order of their own and
  tell the calls when a member broke their stream.

Every failure (connection, timeout, TLS, an HTTP error, a malformed answer) is an
:class:`EtcdError`; callers turn each into "not forging".
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import etcd3gw
import requests

from forge_manager.clock import now as boottime_now
from forge_manager.cluster.etcd_settings import EtcdSettings

PREFER_FIRST_AFTER = 30.0
"""Seconds on a later endpoint after which the next call tries the first (own) member again."""


class EtcdError(Exception):
    """An etcd call failed; never a reason to forge."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def prefix_end(prefix: str) -> str:
    """The range end that selects every key starting with ``prefix`` (ASCII keys)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _kv(item: Any) -> KeyValue:
    if not isinstance(item, dict):
        raise EtcdError(f"malformed key-value in the answer: {item!r}"[:300])
    try:
        return KeyValue(
            key=base64.b64decode(item.get("key", "")).decode(),
            value=base64.b64decode(item.get("value", "")),
            create_revision=int(item.get("create_revision", 0)),
            mod_revision=int(item.get("mod_revision", 0)),
        )
    except (ValueError, TypeError) as exc:
        raise EtcdError(f"malformed key-value in the answer: {exc}"[:300]) from None


MIN_ATTEMPT_S = 0.05
"""A call moves to the next endpoint inside its bound only while at least this much is left."""


class Rotation:
    """Which endpoint comes next: the first (own) member, a later one after a failure, the
    first again after :data:`PREFER_FIRST_AFTER` seconds (thread-safe)."""

    def __init__(self, count: int, clock: Callable[[], float]) -> None:
        self.count = count
        self._clock = clock
        self._lock = threading.Lock()
        self._current = 0
        self._moved_at = 0.0

    def pick(self) -> int:
        with self._lock:
            if self._current and self._clock() - self._moved_at >= PREFER_FIRST_AFTER:
                self._current = 0
            return self._current

    def failed(self, index: int) -> None:
        """``index`` failed: move on, unless something else moved already."""
        with self._lock:
            if self._current == index:
                self._current = (index + 1) % self.count
                self._moved_at = self._clock()


def session_for(s: EtcdSettings) -> requests.Session:
    """Our own session, deaf to the environment: with trust_env (requests' default) a
    REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE in the environment replaces the CA set here, and an
    HTTPS_PROXY would carry the coordination traffic somewhere else."""
    session = requests.Session()
    session.trust_env = False
    session.verify = str(s.ca_file) if s.ca_file else True
    if s.cert_file and s.key_file:
        session.cert = (str(s.cert_file), str(s.key_file))
    return session


def _never_sent(exc: BaseException) -> bool:
    """The request cannot have reached a member: the connection was never made."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    text = f"{type(exc).__name__}: {exc} {getattr(exc, 'detail_text', None) or ''}"
    return any(
        marker in text
        for marker in (
            "NewConnectionError",
            "Connection refused",
            "ConnectTimeout",
            "NameResolution",
        )
    )


class Etcd:
    """The etcd members of the coordination cluster, tried in order. One thread at a time: each
    thread that calls etcd (the coordination loop, each watch) has an instance of its own."""

    def __init__(
        self,
        settings: EtcdSettings,
        *,
        timeout: float,
        clock: Callable[[], float] = boottime_now,
        clients: Sequence[Any] | None = None,
    ) -> None:
        self.endpoints = settings.endpoints
        self.timeout = timeout
        self._clock = clock
        self._clients = (
            list(clients)
            if clients is not None
            else [self._client(url, settings, timeout) for url in settings.endpoints]
        )
        self.rotation = Rotation(len(self._clients), clock)

    @staticmethod
    def _client(url: str, s: EtcdSettings, timeout: float) -> Any:
        parts = urlsplit(url)
        return etcd3gw.Etcd3Client(
            host=parts.hostname or "",
            port=parts.port or 2379,
            protocol=parts.scheme,
            timeout=timeout,
            api_path="/v3/",  # etcd 3.4 and later; no discovery round trip
            session=session_for(s),
        )

    @property
    def current(self) -> str:
        """The endpoint the next call goes to."""
        return self.endpoints[self.rotation.pick()]

    def failed_endpoint(self, index: int) -> None:
        """Another user of ``index`` (a watch) found it gone: the next call skips it."""
        self.rotation.failed(index)

    def _attempt(self, index: int, path: str, body: dict[str, Any], timeout: float) -> Any:
        client = self._clients[index]
        client.timeout = timeout
        return client.post(client.get_url(path), json=body)

    def _post(self, path: str, body: dict[str, Any], *, read: bool = False) -> dict[str, Any]:
        """One call, bounded by the request timeout in all, over as many endpoints as that
        allows (see the module's rules)."""
        started = self._clock()
        errors: list[str] = []
        for _ in range(len(self._clients)):
            index = self.rotation.pick()
            left = self.timeout - (self._clock() - started)
            try:
                answer = self._attempt(index, path, body, left)
            except Exception as exc:  # etcd3gw's errors, requests', a malformed JSON answer
                self.rotation.failed(index)
                detail = " ".join(
                    f"{type(exc).__name__}: {exc} {getattr(exc, 'detail_text', None) or ''}".split()
                )
                errors.append(f"etcd {self.endpoints[index]}: {detail}"[:300])
                again = read or _never_sent(exc)
                if again and self.timeout - (self._clock() - started) >= MIN_ATTEMPT_S:
                    continue
                break
            if not isinstance(answer, dict):
                self.rotation.failed(index)
                errors.append(f"etcd {self.endpoints[index]}: malformed answer to {path}")
                break
            return answer
        raise EtcdError("; ".join(errors)[:600])

    # ---- the calls -------------------------------------------------------------------------------
    def get(self, key: str) -> KeyValue | None:
        """Linearizable read of one key; None when it does not exist."""
        kvs, _ = self.range(key)
        return kvs[0] if kvs else None

    def get_prefix(self, prefix: str) -> list[KeyValue]:
        """Linearizable read of every key under ``prefix``."""
        return self.range(prefix, prefix_end(prefix))[0]

    def range(self, key: str, range_end: str | None = None) -> tuple[list[KeyValue], int]:
        """Linearizable read of ``key`` (or ``[key, range_end)``): the key-values and the
        revision of the store the answer shows (a watch resumes after it)."""
        body: dict[str, Any] = {"key": _b64(key), "serializable": False}
        if range_end is not None:
            body["range_end"] = _b64(range_end)
        answer = self._post("/kv/range", body, read=True)
        return [_kv(item) for item in answer.get("kvs") or []], _revision(answer)

    def put_if(self, key: str, value: bytes, *, mod_revision: int) -> int | None:
        """Write ``key`` only while its mod revision is ``mod_revision`` (0: only while it does
        not exist): compare-and-swap in one transaction. Returns the new revision, or None when
        the comparison failed (someone else wrote or deleted it first)."""
        compare: dict[str, Any] = {"key": _b64(key), "result": "EQUAL"}
        if mod_revision:
            compare.update(target="MOD", mod_revision=str(mod_revision))
        else:
            compare.update(target="CREATE", create_revision="0")
        answer = self._post(
            "/kv/txn",
            {
                "compare": [compare],
                "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}],
            },
        )
        if not answer.get("succeeded"):
            return None
        return _revision(answer)

    def put(self, key: str, value: bytes) -> int:
        """Unconditional write; returns the new revision."""
        return _revision(self._post("/kv/put", {"key": _b64(key), "value": _b64(value)}))


def _revision(answer: dict[str, Any]) -> int:
    try:
        return int((answer.get("header") or {})["revision"])
    except (KeyError, TypeError, ValueError):
        raise EtcdError("etcd answer without a revision") from None


def encode(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def decode(kv: KeyValue) -> dict[str, Any]:
    try:
        obj = json.loads(kv.value)
    except ValueError:
        raise EtcdError(f"etcd key {kv.key} does not hold JSON") from None
    if not isinstance(obj, dict):
        raise EtcdError(f"etcd key {kv.key} does not hold a JSON object")
    return obj
