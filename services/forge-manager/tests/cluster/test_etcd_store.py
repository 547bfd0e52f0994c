"""The etcd backend's pieces against an in-memory etcd (revisions as etcd counts them), and the
endpoint order against fake gateway clients. The real etcd, a quorum of three and its faults are
in ``tests/integration/test_etcd_backend.py`` and ``tests/integration/test_quorum_regions.py``."""

from __future__ import annotations

from typing import Any

import pytest
from forge_manager.cluster.etcd_client import Etcd, EtcdError, KeyValue, prefix_end
from forge_manager.cluster.etcd_settings import EtcdConfigError, EtcdSettings, load_etcd_settings
from forge_manager.cluster.etcd_store import (
    EtcdHeartbeats,
    EtcdPoolLease,
    Keys,
    RegionDirectory,
    published,
)
from forge_manager.cluster.pool_lease import PoolLease
from forge_manager.cluster.resource import CoordinationError
from forge_manager.lease import LeaseError, LeaseLost


class MemoryEtcd:
    """``Etcd``'s calls on a dict, with etcd's revisions; ``fail`` makes every call fail."""

    def __init__(self) -> None:
        self.revision = 1
        self.data: dict[str, KeyValue] = {}
        self.fail: str | None = None
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.fail:
            raise EtcdError(self.fail)

    def get(self, key: str) -> KeyValue | None:
        self._check()
        return self.data.get(key)

    def get_prefix(self, prefix: str) -> list[KeyValue]:
        self._check()
        return [kv for k, kv in sorted(self.data.items()) if k.startswith(prefix)]

    def _put(self, key: str, value: bytes) -> int:
        self.revision += 1
        old = self.data.get(key)
        created = old.create_revision if old else self.revision
        self.data[key] = KeyValue(key, value, created, self.revision)
        return self.revision

    def put_if(self, key: str, value: bytes, *, mod_revision: int) -> int | None:
        self._check()
        old = self.data.get(key)
        if (old.mod_revision if old else 0) != mod_revision:
            return None
        return self._put(key, value)

    def put(self, key: str, value: bytes) -> int:
        self._check()
        return self._put(key, value)

    def delete(self, key: str) -> None:
        self.revision += 1
        self.data.pop(key, None)


KEYS = Keys("/cardano-forge", "pool")


def lock(etcd: MemoryEtcd, identity: str) -> EtcdPoolLease:
    return EtcdPoolLease(etcd, key=KEYS.lease, identity=identity, lease_duration=15)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def pool(etcd: MemoryEtcd, identity: str, clock: Clock) -> PoolLease:
    backend = lock(etcd, identity)
    return PoolLease(
        backend,
        identity=identity,
        lease_duration=15.0,
        renew_deadline=10.0,
        clock=clock,
        create_vacant=backend.create_vacant,
    )


# ---- the lock ------------------------------------------------------------------------------------
def test_acquire_renew_release_keep_the_lease_record_semantics() -> None:
    etcd = MemoryEtcd()
    east = lock(etcd, "east/bp-0")
    east.create_vacant()
    vacant = east.read()
    assert vacant is not None and vacant.holder is None and vacant.transitions == 0
    held = east.acquire(vacant, "2026-01-01T00:00:00.000001Z")
    assert held.holder == "east/bp-0" and held.transitions == 1
    assert held.resource_version == str(etcd.revision) and held.uid == vacant.uid
    renewed = east.renew(held, "2026-01-01T00:00:01.000001Z")
    assert renewed.transitions == 1 and renewed.acquire_time == held.acquire_time
    assert east.read() == renewed
    released = east.release(renewed)
    assert released.holder is None and released.released_by == "east/bp-0"
    assert released.transitions == 1


def test_a_write_against_an_old_revision_or_a_deleted_key_is_lost() -> None:
    etcd = MemoryEtcd()
    east, west = lock(etcd, "east/bp-0"), lock(etcd, "west/bp-0")
    east.create_vacant()
    vacant = east.read()
    assert vacant is not None
    held = east.acquire(vacant, "s1")
    with pytest.raises(LeaseLost):
        west.acquire(vacant, "s2")  # east wrote since west read
    etcd.delete(KEYS.lease)
    with pytest.raises(LeaseLost):
        east.renew(held, "s3")  # deleted: never written back into existence
    assert east.read() is None
    east.create_vacant()
    with pytest.raises(LeaseLost):
        west.create_vacant()  # exists by now
    recreated = east.read()
    assert recreated is not None and recreated.uid != held.uid
    with pytest.raises(LeaseLost):
        east.renew(held, "s4")  # recreated: a new revision, the old one is gone


def test_an_etcd_failure_is_a_lease_error_not_lost() -> None:
    etcd = MemoryEtcd()
    east = lock(etcd, "east/bp-0")
    etcd.fail = "etcd http://127.0.0.1:2379: ConnectionTimeoutError"
    with pytest.raises(LeaseError) as raised:
        east.read()
    assert not isinstance(raised.value, LeaseLost)
    with pytest.raises(LeaseError) as raised:
        east.create_vacant()
    assert not isinstance(raised.value, LeaseLost)


def test_pool_lease_over_etcd_waits_out_a_vacant_record_then_recognises_a_lost_answer() -> None:
    """The PoolLease rules hold unchanged on the etcd backend: a vacant record created after a
    deletion is taken only once unchanged for the lease duration on this pod's clock; a write
    applied whose answer was lost is recognised by its stamp at the next read."""
    etcd, clock = MemoryEtcd(), Clock()
    east = pool(etcd, "east/bp-0", clock)
    east.refresh()
    assert east.view().absent
    assert east.create_vacant() is None
    view = east.view()
    assert not view.absent and view.holder is None and not view.expired and not view.released
    clock.t += 15.0
    assert east.view().expired
    assert east.acquire() is None and east.leading()

    backend = east._backend
    real_put_if = etcd.put_if

    def applied_but_lost(key: str, value: bytes, *, mod_revision: int) -> int | None:
        real_put_if(key, value, mod_revision=mod_revision)
        raise EtcdError("etcd http://127.0.0.1:2379: ConnectionTimeoutError (answer lost)")

    etcd.put_if = applied_but_lost  # type: ignore[method-assign]
    clock.t += 1.0
    sent = clock.t
    assert east.renew() is not None  # failed as far as this pod knows
    etcd.put_if = real_put_if  # type: ignore[method-assign]
    clock.t += 1.0
    east.refresh()
    assert east.view().mine and east.leading_until() == sent + 10.0
    assert isinstance(backend, EtcdPoolLease)


def test_another_region_takes_the_lock_only_after_the_lease_duration_on_its_own_clock() -> None:
    etcd, clock = MemoryEtcd(), Clock()
    east, west = pool(etcd, "east/bp-0", clock), pool(etcd, "west/bp-0", clock)
    east.refresh()
    east.create_vacant()
    clock.t += 15.0
    east.refresh()
    assert east.acquire() is None
    west.refresh()
    clock.t += 14.9
    west.refresh()
    assert not west.view().expired and west.view().holder == "east/bp-0"
    assert not east.leading()  # its renew deadline (10 s) passed long before
    clock.t += 0.2
    assert west.view().expired
    assert west.acquire() is None and west.leading()
    east.refresh()
    assert not east.view().mine and not east.leading()


# ---- heartbeats and regions ----------------------------------------------------------------------
def test_heartbeats_are_mod_revisions_by_region() -> None:
    etcd = MemoryEtcd()
    beats = EtcdHeartbeats(etcd, KEYS)  # type: ignore[arg-type]
    assert beats.list() == {}
    beats.beat("east", "bp-0")
    first = beats.list()
    beats.beat("east", "bp-0")
    beats.beat("west", "bp-1")
    second = beats.list()
    assert set(second) == {"east", "west"} and second["east"] != first["east"]
    etcd.fail = "down"
    with pytest.raises(CoordinationError):
        beats.list()
    with pytest.raises(CoordinationError):
        beats.beat("east", "bp-0")


class LocalStore:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.fail = False

    def list(self) -> list[dict[str, Any]]:
        if self.fail:
            raise CoordinationError("HTTP 503")
        return [dict(i) for i in self.items]

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        obj = {**body, "metadata": {**body["metadata"], "generation": 1, "resourceVersion": "1"}}
        self.items.append(obj)
        return obj

    def replace_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        updated = {**obj, "status": status, "metadata": {**meta, "resourceVersion": "2"}}
        self.items = [updated if i["metadata"]["name"] == meta["name"] else i for i in self.items]
        return updated


def cfc(name: str, priority: int, generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "cardano.io/v1",
        "kind": "CardanoForgeCluster",
        "metadata": {"name": name, "generation": generation, "resourceVersion": "7", "uid": "u"},
        "spec": {"region": name, "priority": priority, "forgeState": "Priority-based"},
    }


def test_region_directory_reads_its_own_locally_and_the_others_from_etcd() -> None:
    etcd = MemoryEtcd()
    east_local = LocalStore([cfc("east", 1), cfc("stray", 5)])
    west_local = LocalStore([])
    east = RegionDirectory(east_local, etcd, KEYS, region="east")  # type: ignore[arg-type]
    west = RegionDirectory(west_local, etcd, KEYS, region="west")  # type: ignore[arg-type]
    # east publishes itself at its first read; a stray object in its namespace is not a region
    assert [i["metadata"]["name"] for i in east.list()] == ["east"]
    assert [i["metadata"]["name"] for i in west.list()] == ["east"]  # west's own is missing
    west.create(cfc("west", 2))
    assert [i["metadata"]["name"] for i in east.list()] == ["east", "west"]
    # a status write is published; an operator's spec edit (new generation) at the next read
    updated = west.replace_status(west_local.items[0], {"effectivePriority": 2})
    assert updated["status"] == {"effectivePriority": 2}
    east_view = {i["metadata"]["name"]: i for i in east.list()}
    assert east_view["west"]["status"] == {"effectivePriority": 2}
    assert east_view["west"] == published(west_local.items[0])
    west_local.items[0] = {**cfc("west", 3, generation=2), "status": {"effectivePriority": 2}}
    west.list()
    east_view = {i["metadata"]["name"]: i for i in east.list()}
    assert east_view["west"]["spec"]["priority"] == 3
    assert east_view["west"]["metadata"]["generation"] == 2


def test_region_directory_fails_closed_when_etcd_or_the_local_api_fails() -> None:
    etcd = MemoryEtcd()
    local = LocalStore([cfc("east", 1)])
    east = RegionDirectory(local, etcd, KEYS, region="east")  # type: ignore[arg-type]
    east.list()
    etcd.fail = "etcd down"
    with pytest.raises(CoordinationError):
        east.list()
    with pytest.raises(CoordinationError):  # the status is local, but not published: failed
        east.replace_status(local.items[0], {"effectivePriority": 1})
    etcd.fail = None
    local.fail = True
    with pytest.raises(CoordinationError):
        east.list()


# ---- the endpoints -------------------------------------------------------------------------------
class FakeClient:
    def __init__(self, name: str) -> None:
        self.name = name
        self.fail = False
        self.calls = 0

    def get_url(self, path: str) -> str:
        return f"{self.name}{path}"

    def post(self, url: str, json: Any = None) -> Any:
        self.calls += 1
        if self.fail:
            raise ConnectionError(f"{self.name} down")
        return {"header": {"revision": "5"}, "kvs": []}


def endpoints(clock: Clock) -> tuple[Etcd, list[FakeClient]]:
    names = ["http://a:2379", "http://b:2379", "http://c:2379"]
    clients = [FakeClient(n) for n in names]
    s = EtcdSettings(tuple(names), None, None, None, "/cardano-forge")
    return Etcd(s, timeout=1.0, clock=clock, clients=clients), clients


def test_a_failed_call_moves_the_next_call_to_the_next_endpoint_and_back_later() -> None:
    clock = Clock()
    etcd, (a, b, c) = endpoints(clock)
    assert etcd.get("/k") is None and a.calls == 1
    a.fail = True
    assert etcd.get("/k") is None and (a.calls, b.calls) == (2, 1)  # a read moves in its bound
    assert etcd.current == "http://b:2379"
    assert etcd.put("/k", b"v") == 5 and b.calls == 2
    b.fail = True
    with pytest.raises(EtcdError, match="http://b:2379"):
        etcd.put("/k", b"v")  # a write that may have been sent is not sent again
    assert etcd.current == "http://c:2379" and c.calls == 0
    assert etcd.get("/k") is None and c.calls == 1
    clock.t += 30.0
    a.fail = False
    assert etcd.get("/k") is None and a.calls == 3  # back to its own member
    assert etcd.current == "http://a:2379"


def test_an_error_names_the_endpoint_and_what_etcd3gw_kept_aside() -> None:
    """etcd3gw's exceptions carry their text in ``detail_text`` (``str()`` is empty for a failed
    connection, the HTTP reason for an error answer): both go into the one-line error."""
    import etcd3gw.exceptions  # noqa: PLC0415

    class Failing(FakeClient):
        def post(self, url: str, json: Any = None) -> Any:
            raise etcd3gw.exceptions.ConnectionFailedError(
                "SSLError(CERTIFICATE_VERIFY_FAILED)\nsecond line"
            )

    s = EtcdSettings(("https://a:2379",), None, None, None, "/cardano-forge")
    etcd = Etcd(s, timeout=1.0, clients=[Failing("https://a:2379")])
    with pytest.raises(EtcdError) as err:
        etcd.get("/k")
    assert str(err.value) == (
        "etcd https://a:2379: ConnectionFailedError: "
        "SSLError(CERTIFICATE_VERIFY_FAILED) second line"
    )


def test_prefix_end() -> None:
    assert prefix_end("/cardano-forge/pool/heartbeats/") == "/cardano-forge/pool/heartbeats0"


# ---- settings ------------------------------------------------------------------------------------
def test_settings_unset_and_valid() -> None:
    assert load_etcd_settings({}) is None
    s = load_etcd_settings(
        {
            "COORDINATION_ETCD_ENDPOINTS": " https://e1:2379, https://e2:2379 ,https://w:2379",
            "COORDINATION_ETCD_CA_FILE": "/etc/etcd/ca.crt",
            "COORDINATION_ETCD_CERT_FILE": "/etc/etcd/tls.crt",
            "COORDINATION_ETCD_KEY_FILE": "/etc/etcd/tls.key",
        }
    )
    assert s is not None
    assert s.endpoints == ("https://e1:2379", "https://e2:2379", "https://w:2379")
    assert s.prefix == "/cardano-forge" and str(s.cert_file) == "/etc/etcd/tls.crt"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COORDINATION_ETCD_ENDPOINTS": "e1:2379"}, "expected client URLs"),
        ({"COORDINATION_ETCD_ENDPOINTS": "https://e1"}, "name the port"),
        ({"COORDINATION_ETCD_ENDPOINTS": "https://e1:2379,https://e1:2379"}, "twice"),
        (
            {"COORDINATION_ETCD_ENDPOINTS": "https://e1:2379", "COORDINATION_KUBECONFIG": "/k"},
            "both set",
        ),
        (
            {
                "COORDINATION_ETCD_ENDPOINTS": "https://e1:2379",
                "COORDINATION_ETCD_CERT_FILE": "/c",
            },
            "go together",
        ),
        (
            {"COORDINATION_ETCD_ENDPOINTS": "http://e1:2379", "COORDINATION_ETCD_CA_FILE": "/c"},
            "use https://",
        ),
        (
            {"COORDINATION_ETCD_ENDPOINTS": "https://e1:2379", "COORDINATION_ETCD_CA_FILE": "c"},
            "absolute path",
        ),
        (
            {"COORDINATION_ETCD_ENDPOINTS": "https://e1:2379", "COORDINATION_ETCD_PREFIX": "x/"},
            "COORDINATION_ETCD_PREFIX",
        ),
        ({"COORDINATION_ETCD_CA_FILE": "/c"}, "COORDINATION_ETCD_ENDPOINTS is not"),
    ],
)
def test_settings_errors_name_what_to_change(env: dict[str, str], message: str) -> None:
    with pytest.raises(EtcdConfigError, match=message):
        load_etcd_settings(env)
