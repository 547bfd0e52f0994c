"""The coordination records in etcd, behind the seams the Kubernetes backend fills.

Keys, under ``<COORDINATION_ETCD_PREFIX>/<POOL_LEASE_NAME>/``:

* ``lease`` — the pool-wide lock (:class:`EtcdPoolLease`, a
  :class:`~forge_manager.cluster.pool_lease.LeaseBackend`). The value is the Lease record as
  JSON (holder, duration, renew stamp, acquire time, transitions, released-by); its **mod
  revision** plays the resourceVersion: every acquire, renew and release is a transaction that
  writes only while the mod revision is the one last read (``put_if``), and a failed comparison
  is :class:`~forge_manager.lease.LeaseLost`. The create revision plays the ``uid``: a key deleted
  and written again has a new mod revision anyway, so the comparison fails for it too. No etcd
  lease (TTL) is attached: expiry stays judged on each observer's own CLOCK_BOOTTIME from when it
  saw the mod revision change (:mod:`~forge_manager.cluster.pool_lease`), never by a server's
  clock; a missing key is never free by itself (a local leader writes it vacant and waits).
* ``heartbeats/<region>`` — each region's heartbeat (:class:`EtcdHeartbeats`); the others note
  when its mod revision changes, on their own clock (:mod:`~forge_manager.cluster.liveness`).

Followers see the lock and the heartbeats change through etcd watches (:mod:`.etcd_watch`),
timed when the event arrives; every decision to acquire still rests on a linearizable read and
the compare-and-swap.
* ``regions/<region>`` — what the other regions decide on: a copy of the region's
  CardanoForgeCluster (name, generation, spec, status) as its local leader last wrote it in its
  own cluster (:class:`RegionDirectory`). The CardanoForgeCluster in the region's own Kubernetes
  cluster stays what operators read and edit.

Every read is linearizable (:mod:`.etcd_client`); every failure becomes a
:class:`~forge_manager.lease.LeaseError` or a
:class:`~forge_manager.cluster.resource.CoordinationError`, which the coordinator turns into
"not forging".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from forge_manager.cluster.etcd_client import Etcd, EtcdError, KeyValue, decode, encode
from forge_manager.cluster.resource import KIND, CoordinationError
from forge_manager.lease import LeaseError, LeaseLost, LeaseRecord
from forge_manager.watch import Watcher

_MICRO = "%Y-%m-%dT%H:%M:%S.%fZ"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime(_MICRO)


@dataclass(frozen=True)
class Keys:
    """Where one pool's records live."""

    prefix: str
    pool: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.pool}/"

    @property
    def lease(self) -> str:
        return self.base + "lease"

    @property
    def heartbeats(self) -> str:
        return self.base + "heartbeats/"

    @property
    def regions(self) -> str:
        return self.base + "regions/"


# ---- the pool-wide lock --------------------------------------------------------------------------
def watched_record(obj: Mapping[str, Any]) -> LeaseRecord:
    """The record of a watched item (:func:`.etcd_watch.item`)."""
    return lease_record(obj["kv"])


def lease_record(kv: KeyValue) -> LeaseRecord:
    obj = decode(kv)
    holder = obj.get("holderIdentity")
    duration = obj.get("leaseDurationSeconds")
    transitions = obj.get("leaseTransitions")
    released = obj.get("releasedBy")
    return LeaseRecord(
        holder=holder if isinstance(holder, str) and holder else None,
        resource_version=str(kv.mod_revision),
        duration_seconds=duration if isinstance(duration, int) else None,
        renew_time=str(obj["renewTime"]) if obj.get("renewTime") else None,
        transitions=transitions if isinstance(transitions, int) else 0,
        released_by=released if isinstance(released, str) and released else None,
        acquire_time=str(obj["acquireTime"]) if obj.get("acquireTime") else None,
        uid=str(kv.create_revision),
    )


class EtcdPoolLease:
    """The pool-wide lock as one etcd key, with the Lease record's semantics (``acquireTime`` and
    ``leaseTransitions`` kept on renew, every acquisition a transition, a release names its
    holder)."""

    def __init__(self, etcd: Etcd, *, key: str, identity: str, lease_duration: int) -> None:
        self._etcd = etcd
        self.key = key
        self.identity = identity
        self.lease_duration = lease_duration

    def read(self) -> LeaseRecord | None:
        try:
            kv = self._etcd.get(self.key)
        except EtcdError as exc:
            raise LeaseError(str(exc)) from None
        return None if kv is None else lease_record(kv)

    @staticmethod
    def new_renew_stamp() -> str:
        return _now()

    def _value(
        self, current: LeaseRecord | None, op: Literal["acquire", "renew", "release"], stamp: str
    ) -> dict[str, Any]:
        if op == "acquire":
            holder: str | None = self.identity
            transitions = current.transitions + 1 if current is not None else 0
            acquire_time: str | None = stamp
        else:
            assert current is not None
            holder = self.identity if op == "renew" else None
            transitions = current.transitions
            acquire_time = current.acquire_time
        value: dict[str, Any] = {
            "holderIdentity": holder,
            "leaseDurationSeconds": self.lease_duration,
            "leaseTransitions": transitions,
            "renewTime": stamp,
            "acquireTime": acquire_time,
        }
        if op == "release" and current is not None and current.holder:
            value["releasedBy"] = current.holder
        return value

    def _write(self, current: LeaseRecord | None, value: dict[str, Any]) -> LeaseRecord:
        expected = int(current.resource_version) if current is not None else 0
        data = encode(value)
        try:
            revision = self._etcd.put_if(self.key, data, mod_revision=expected)
        except EtcdError as exc:
            raise LeaseError(str(exc)) from None
        if revision is None:
            what = (
                "exists by now" if current is None else "changed or was deleted since it was read"
            )
            raise LeaseLost(f"pool lease {self.key} {what}")
        created = current.uid if current is not None and current.uid else str(revision)
        return lease_record(KeyValue(self.key, data, int(created), revision))

    def acquire(self, current: LeaseRecord | None, stamp: str) -> LeaseRecord:
        return self._write(current, self._value(current, "acquire", stamp))

    def renew(self, current: LeaseRecord, stamp: str) -> LeaseRecord:
        return self._write(current, self._value(current, "renew", stamp))

    def release(self, current: LeaseRecord) -> LeaseRecord:
        return self._write(current, self._value(current, "release", self.new_renew_stamp()))

    def create_vacant(self) -> None:
        """Write the missing key with no holder (``PoolLease.create_vacant``); ``LeaseLost``
        when it exists by now."""
        value = {
            "holderIdentity": None,
            "leaseDurationSeconds": self.lease_duration,
            "leaseTransitions": 0,
            "renewTime": None,
            "acquireTime": None,
        }
        self._write(None, value)


# ---- heartbeats ----------------------------------------------------------------------------------
class EtcdHeartbeats:
    """``heartbeats/<region>``: written by the region's local leader, compared by mod revision."""

    def __init__(self, etcd: Etcd, keys: Keys, *, watch: Watcher | None = None) -> None:
        self._etcd = etcd
        self._keys = keys
        self.watch = watch
        """A :class:`~forge_manager.watch.Watcher` of the heartbeats prefix
        (:mod:`.etcd_watch`); while it is live the coordinator takes the heartbeats from it."""

    def list(self) -> dict[str, str]:
        try:
            kvs = self._etcd.get_prefix(self._keys.heartbeats)
        except EtcdError as exc:
            raise CoordinationError(str(exc)) from None
        start = len(self._keys.heartbeats)
        return {kv.key[start:]: str(kv.mod_revision) for kv in kvs if kv.key[start:]}

    def observed(self) -> dict[str, tuple[str, float]] | None:
        """(mod revision, when first seen) of each region's heartbeat as the watch saw them;
        None while it is not live (then :meth:`list` instead)."""
        if self.watch is None:
            return None
        view = self.watch.view()
        if not view.live:
            return None
        return {
            region: (seen.version, seen.seen_at)
            for region, seen in view.objects.items()
            if seen.obj is not None and region
        }

    def beat(self, region: str, pod: str) -> None:
        try:
            self._etcd.put(
                self._keys.heartbeats + region, encode({"holder": pod, "renewTime": _now()})
            )
        except EtcdError as exc:
            raise CoordinationError(str(exc)) from None


# ---- the regions' records ------------------------------------------------------------------------
class LocalStore(Protocol):
    """This region's CardanoForgeCluster in its own cluster
    (:class:`~forge_manager.cluster.resource.ForgeClusterStore`)."""

    def list(self) -> list[dict[str, Any]]: ...
    def create(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def replace_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]: ...


def published(obj: dict[str, Any]) -> dict[str, Any]:
    """What the other regions get of a CardanoForgeCluster: what their decisions read."""
    meta = obj.get("metadata") or {}
    out: dict[str, Any] = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind") or KIND,
        "metadata": {
            "name": meta.get("name"),
            "generation": meta.get("generation"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "spec": obj.get("spec"),
    }
    if "status" in obj:
        out["status"] = obj["status"]
    return out


class RegionDirectory:
    """Every region's CardanoForgeCluster for the coordinator (its ``ResourceStore``): this
    region's own from its own cluster, the others' from their copies in etcd.

    This region's copy in etcd follows its object: written after every status write (a failure
    is a failed status write, so the heartbeat, which vouches for the status, is not renewed) and
    at every read that finds it missing or different (an operator's spec edit, an etcd restored
    from a backup, a write whose answer was lost)."""

    def __init__(self, local: LocalStore, etcd: Etcd, keys: Keys, *, region: str) -> None:
        self._local = local
        self._etcd = etcd
        self._keys = keys
        self.region = region

    def _publish(self, obj: dict[str, Any]) -> None:
        try:
            self._etcd.put(self._keys.regions + self.region, encode(published(obj)))
        except EtcdError as exc:
            raise CoordinationError(f"publishing region {self.region} to etcd: {exc}") from None

    def list(self) -> list[dict[str, Any]]:
        own = [
            i for i in self._local.list() if (i.get("metadata") or {}).get("name") == self.region
        ]
        try:
            kvs = self._etcd.get_prefix(self._keys.regions)
            copies = {kv.key[len(self._keys.regions) :]: decode(kv) for kv in kvs}
        except EtcdError as exc:
            raise CoordinationError(str(exc)) from None
        if own and copies.get(self.region) != published(own[0]):
            self._publish(own[0])
        peers = [
            obj
            for name, obj in sorted(copies.items())
            if name != self.region and (obj.get("metadata") or {}).get("name") == name
        ]
        return own + peers

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        created = self._local.create(body)
        if created:
            self._publish(created)
        return created

    def replace_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        updated = self._local.replace_status(obj, status)
        self._publish(updated or {**obj, "status": status})
        return updated
