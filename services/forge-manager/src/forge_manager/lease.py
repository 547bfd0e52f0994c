"""Lease I/O on ``coordination.k8s.io/v1`` with the official client.

* Every write (create, acquire, renew, release) is made against the ``resourceVersion`` last read
  (or returned by our own last write); HTTP 409 Conflict means the Lease was lost.
* Every call carries ``_request_timeout`` (at most the retry period) and the client is built
  without urllib3 retries: that bounds connecting to the API server and waiting for its answer.
  It does **not** bound the host name lookup: urllib3 resolves the API server's name with a
  blocking ``getaddrinfo``, which only the resolver's own timeouts end (``resolv.conf``: 5 s x
  attempts x name servers x search domains). Safety does not depend on it: the leadership
  deadline counts from when the last successful write was *sent*, the deadline guard thread of
  :mod:`forge_manager.manager` demotes at the deadline while the loop is blocked in a call (it
  holds no lock during I/O), and a write that returns late does not extend the deadline. The
  in-cluster configuration names the API server by IP address and never resolves a name.
* The record keeps client-go's semantics: ``acquireTime`` and ``leaseTransitions`` are kept on
  renew; every acquisition of an existing record (after a release too) counts a transition; the
  labels and annotations of the existing object are kept on every write, except the release
  marker :data:`RELEASED_BY`, which only a release sets and every other write removes.
  ``renewTime``/``acquireTime`` are written for operators (``kubectl get lease``); nobody judges
  expiry by them. Followers judge expiry on their own monotonic clock from when they saw the
  record change (see :mod:`forge_manager.decision`).
* Release clears ``holderIdentity`` so a standby acquires at once instead of waiting for expiry,
  and names the releasing holder in the annotation :data:`RELEASED_BY`: a record whose holder was
  cleared by anyone else (or a Lease that vanished) is no evidence that the old holder stopped.
* A Lease deleted since it was read is lost too. An update of a missing Lease does not fail by
  itself: Leases allow create-on-update, and the API server creates the object again despite
  the stale ``resourceVersion``, so an old leader would renew a deleted Lease into existence and
  forge on. Every replace therefore carries the ``uid`` of the object read, a precondition that
  fails (409) when the object is gone or was created anew; a 404 on a write is lost as well.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException


class LeaseError(Exception):
    """The API call failed (timeout, connection error, unexpected status)."""


class LeaseLost(LeaseError):
    """409 Conflict or 404 Not Found on a write: someone else changed or deleted the Lease since
    we read it."""


RELEASED_BY = "cardano.io/released-by"
"""Annotation written by a release: the identity of the holder that released the Lease."""

MANAGED_BY = {"app.kubernetes.io/managed-by": "cardano-forge-manager"}
"""Labels of a Lease this client creates (an existing object keeps its own)."""

_MICRO = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True)
class LeaseRecord:
    holder: str | None
    resource_version: str
    duration_seconds: int | None
    renew_time: str | None
    """The renewTime as written (RFC 3339 with microseconds); lets us recognise our own write."""
    transitions: int
    released_by: str | None = None
    """The holder that cleared ``holderIdentity`` by a release (annotation :data:`RELEASED_BY`);
    None when the record is held, or was cleared by someone else."""
    acquire_time: str | None = None
    """The acquireTime as written (RFC 3339 with microseconds), kept on renew."""
    uid: str | None = None
    """The object's UID: carried by every replace as a precondition, so that a Lease deleted
    (and perhaps created again) since it was read is never written (409) instead of being
    silently created again by the update (Leases allow create-on-update)."""
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    """The object's labels and annotations, written back unchanged (bar :data:`RELEASED_BY`)."""


def _micro_time(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime(_MICRO)
    return str(value)


def _parse_micro_time(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return dt.datetime.strptime(value, _MICRO).replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _record(lease: Any) -> LeaseRecord:
    spec = lease.spec
    annotations = dict(lease.metadata.annotations or {})
    return LeaseRecord(
        holder=(spec.holder_identity or None) if spec else None,
        resource_version=str(lease.metadata.resource_version),
        duration_seconds=spec.lease_duration_seconds if spec else None,
        renew_time=_micro_time(spec.renew_time) if spec else None,
        transitions=(spec.lease_transitions or 0) if spec else 0,
        released_by=annotations.get(RELEASED_BY) or None,
        acquire_time=_micro_time(spec.acquire_time) if spec else None,
        uid=lease.metadata.uid or None,
        labels=dict(lease.metadata.labels or {}),
        annotations=annotations,
    )


def api_client() -> Any:
    """An ApiClient: in-cluster configuration when present, else KUBECONFIG; no retries."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException:
        # Read KUBECONFIG now: the client's default was fixed when it was imported.
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG") or None, client_configuration=configuration
        )  # type: ignore[no-untyped-call]
    configuration.retries = False  # one attempt per call: the timeout bounds the whole call
    return client.ApiClient(configuration)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaseClient:
    """Read/acquire/renew/release one Lease as ``identity``."""

    def __init__(
        self,
        api: Any,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: int,
        request_timeout: float,
    ) -> None:
        self._api = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.request_timeout = request_timeout

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args, _request_timeout=self.request_timeout)
        except ApiException as exc:
            if exc.status == 409 and "UID in precondition" in str(exc.body or ""):
                raise LeaseLost(
                    f"lease {self.name} was deleted since it was read (409: its UID changed)"
                ) from None
            if exc.status == 409:
                raise LeaseLost(f"lease {self.name} changed since it was read (409)") from None
            if exc.status == 404:
                raise LeaseLost(f"lease {self.name} was deleted since it was read (404)") from None
            raise LeaseError(f"HTTP {exc.status} {exc.reason}") from None
        except Exception as exc:  # urllib3 timeouts, connection errors, TLS errors
            raise LeaseError(f"{type(exc).__name__}: {exc}"[:300]) from None

    def read(self) -> LeaseRecord | None:
        """The current record, or None when the Lease does not exist."""
        try:
            lease = self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.request_timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise LeaseError(f"HTTP {exc.status} {exc.reason}") from None
        except Exception as exc:
            raise LeaseError(f"{type(exc).__name__}: {exc}"[:300]) from None
        return _record(lease)

    def _body(
        self,
        current: LeaseRecord | None,
        op: Literal["acquire", "renew", "release"],
        renew: str,
    ) -> Any:
        """The object to write, with client-go's record semantics (see the module docstring)."""
        if op == "acquire":
            holder: str | None = self.identity
            transitions = current.transitions + 1 if current is not None else 0
            acquire_time: dt.datetime | None = _now()
        else:
            assert current is not None
            holder = self.identity if op == "renew" else None
            transitions = current.transitions
            acquire_time = _parse_micro_time(current.acquire_time)
        annotations = dict(current.annotations) if current is not None else {}
        annotations.pop(RELEASED_BY, None)
        if op == "release" and current is not None and current.holder:
            annotations[RELEASED_BY] = current.holder
        spec = client.V1LeaseSpec(
            holder_identity=holder,
            lease_duration_seconds=self.lease_duration,
            lease_transitions=transitions,
            renew_time=_parse_micro_time(renew),
            acquire_time=acquire_time,
        )
        metadata = client.V1ObjectMeta(
            name=self.name,
            resource_version=current.resource_version if current else None,
            uid=current.uid if current else None,
            labels=dict(current.labels) if current is not None else dict(MANAGED_BY),
            annotations=annotations or None,
        )
        return client.V1Lease(metadata=metadata, spec=spec)

    @staticmethod
    def new_renew_stamp() -> str:
        return _micro_time(_now()) or ""

    def create_vacant(self) -> LeaseRecord:
        """Create the missing Lease with no holder (HTTP 409 if it exists: :class:`LeaseLost`).

        A missing Lease is never acquired directly: two reads that both find none do not show
        that nobody created, held and deleted it in between. The vacant record gets a
        resourceVersion that followers time like any unchanged record."""
        spec = client.V1LeaseSpec(lease_duration_seconds=self.lease_duration, lease_transitions=0)
        metadata = client.V1ObjectMeta(name=self.name, labels=dict(MANAGED_BY))
        body = client.V1Lease(metadata=metadata, spec=spec)
        return _record(self._call(self._api.create_namespaced_lease, self.namespace, body))

    def acquire(self, current: LeaseRecord | None, stamp: str) -> LeaseRecord:
        """Create the Lease (``current`` None) or take it over against ``current``'s version."""
        body = self._body(current, "acquire", stamp)
        if current is None:
            return _record(self._call(self._api.create_namespaced_lease, self.namespace, body))
        return _record(
            self._call(self._api.replace_namespaced_lease, self.name, self.namespace, body)
        )

    def renew(self, current: LeaseRecord, stamp: str) -> LeaseRecord:
        body = self._body(current, "renew", stamp)
        return _record(
            self._call(self._api.replace_namespaced_lease, self.name, self.namespace, body)
        )

    def release(self, current: LeaseRecord) -> LeaseRecord:
        """Clear holderIdentity against ``current``'s version."""
        body = self._body(current, "release", self.new_renew_stamp())
        return _record(
            self._call(self._api.replace_namespaced_lease, self.name, self.namespace, body)
        )
