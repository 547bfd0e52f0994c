"""Followers of the etcd backend's lock and heartbeats through an etcd watch, and their failure
modes: a late event, a broken stream, an event for a deleted key, a compacted revision, a watch
on a member that is lost, a stream that is behind. Against an in-memory etcd that keeps its
history (revisions as etcd counts them) and a scripted gateway whose events the test delivers,
or holds back, itself. The real etcd is in ``tests/integration/test_etcd_backend.py``."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from forge_manager.cluster.etcd_client import Etcd, EtcdError, KeyValue, _b64, prefix_end
from forge_manager.cluster.etcd_settings import EtcdSettings
from forge_manager.cluster.etcd_store import (
    EtcdHeartbeats,
    EtcdPoolLease,
    Keys,
    watched_record,
)
from forge_manager.cluster.etcd_watch import (
    EtcdWatchSource,
    events_of,
    key_name,
    suffix_name,
)
from forge_manager.cluster.pool_lease import PoolLease
from forge_manager.watch import StreamState, WatchedLease, Watcher, WatchError

from .test_etcd_store import Clock, FakeClient, MemoryEtcd

WAIT = 10.0
KEYS = Keys("/cardano-forge", "pool")
ENDPOINTS = ("http://a:2379", "http://b:2379", "http://c:2379")


def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


# ---- an etcd with its history, and its gateway's watch streams -----------------------------------
class HistoryEtcd(MemoryEtcd):
    """``MemoryEtcd`` that keeps every event (for watches) and can compact them."""

    endpoints = ENDPOINTS

    def __init__(self) -> None:
        super().__init__()
        self.history: list[tuple[str, KeyValue]] = []
        self.compacted = 0

    def _put(self, key: str, value: bytes) -> int:
        revision = super()._put(key, value)
        self.history.append(("PUT", self.data[key]))
        return revision

    def delete(self, key: str) -> None:
        super().delete(key)
        self.history.append(("DELETE", KeyValue(key, b"", 0, self.revision)))

    def compact(self) -> None:
        self.compacted = self.revision

    def restore(self, data: dict[str, KeyValue], revision: int) -> None:
        """Restored from a snapshot taken at ``revision``: revisions go back."""
        self.data, self.revision = dict(data), revision
        self.history = [(k, kv) for k, kv in self.history if kv.mod_revision <= revision]

    def range(self, key: str, range_end: str | None = None) -> tuple[list[KeyValue], int]:
        self._check()
        end = range_end if range_end is not None else key + "\0"
        return [kv for k, kv in sorted(self.data.items()) if key <= k < end], self.revision


def message(kind: str, kv: KeyValue) -> dict[str, Any]:
    """An event as the gateway sends it (PUT, the default, is left out as in proto3 JSON)."""
    wire: dict[str, Any] = {"key": _b64(kv.key), "mod_revision": str(kv.mod_revision)}
    if kind == "PUT":
        wire.update(value=_b64(kv.value), create_revision=str(kv.create_revision))
        return {"kv": wire}
    return {"type": "DELETE", "kv": wire}


class RawStream:
    """One open watch: the test delivers its events (:meth:`Gateway.deliver`) or ends it."""

    def __init__(self, index: int, key: str, end: str, start: int) -> None:
        self.index, self.key, self.end, self.start = index, key, end, start
        self.sent = start - 1
        self.q: queue.Queue[dict[str, Any] | str] = queue.Queue()
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        while True:
            try:
                item = self.q.get(timeout=0.01)
            except queue.Empty:
                if self.closed.is_set():
                    raise OSError("socket shut down") from None
                continue
            if item == "eof":
                return
            assert isinstance(item, dict)
            yield item

    def close(self) -> None:
        self.closed.set()


class Gateway:
    """The ``WatchTransport`` of three members; ``down`` refuses connections."""

    def __init__(self, etcd: HistoryEtcd) -> None:
        self.etcd = etcd
        self.streams: list[RawStream] = []
        self.down: set[int] = set()

    def open(self, index: int, body: Mapping[str, Any], read_timeout: float) -> RawStream:
        assert read_timeout > 0
        if index in self.down:
            raise ConnectionRefusedError(f"{ENDPOINTS[index]}: connection refused")
        import base64  # noqa: PLC0415

        req = body["create_request"]
        key = base64.b64decode(req["key"]).decode()
        end = base64.b64decode(req["range_end"]).decode() if "range_end" in req else key + "\0"
        stream = RawStream(index, key, end, int(req["start_revision"]))
        header = {"header": {"revision": str(self.etcd.revision)}}
        if stream.start <= self.etcd.compacted:
            stream.q.put(
                {
                    "result": {
                        **header,
                        "canceled": True,
                        "compact_revision": str(self.etcd.compacted),
                    }
                }
            )
        else:
            stream.q.put({"result": {**header, "created": True}})
        self.streams.append(stream)
        return stream

    def stream(self, n: int) -> RawStream:
        until(lambda: len(self.streams) >= n, f"watch request {n}")
        return self.streams[n - 1]

    def deliver(self, upto: int | None = None) -> None:
        """Send every open stream the events it has not had yet (up to revision ``upto``)."""
        for stream in self.streams:
            if stream.closed.is_set():
                continue
            events = [
                message(kind, kv)
                for kind, kv in self.etcd.history
                if stream.sent < kv.mod_revision <= (upto or self.etcd.revision)
                and stream.key <= kv.key < stream.end
            ]
            stream.sent = max(stream.sent, upto or self.etcd.revision)
            if events:
                header = {"revision": str(self.etcd.revision)}
                stream.q.put({"result": {"header": header, "events": events}})

    def end(self, n: int) -> None:
        """The member ends stream ``n`` (killed: the connection closes)."""
        self.stream(n).q.put("eof")


def calls_etcd(clock: Clock) -> tuple[Etcd, list[FakeClient]]:
    clients = [FakeClient(n) for n in ENDPOINTS]
    s = EtcdSettings(ENDPOINTS, None, None, None, "/cardano-forge")
    return Etcd(s, timeout=1.0, clock=clock, clients=clients), clients


class Bed:
    """One in-memory etcd; east holds the lock; west follows it through a watch."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.etcd = HistoryEtcd()
        self.gateway = Gateway(self.etcd)
        self.calls, self.clients = calls_etcd(self.clock)
        self.source = EtcdWatchSource(
            self.etcd,  # type: ignore[arg-type]
            self.gateway,
            key=KEYS.lease,
            range_end=None,
            name_of=key_name(KEYS.lease),
            clock=self.clock,
            calls=self.calls,
        )
        self.watch = WatchedLease(
            self.source,
            KEYS.lease,
            what="pool lock",
            clock=self.clock,
            retry_period=0.05,
            record=watched_record,
        )
        self.east = self.pool("east/bp-0", watch=None)
        self.west = self.pool("west/bp-0", watch=self.watch)

    def pool(self, identity: str, watch: WatchedLease | None) -> PoolLease:
        backend = EtcdPoolLease(
            self.etcd,  # type: ignore[arg-type]
            key=KEYS.lease,
            identity=identity,
            lease_duration=15,
        )
        return PoolLease(
            backend,
            identity=identity,
            lease_duration=15.0,
            renew_deadline=10.0,
            clock=self.clock,
            create_vacant=backend.create_vacant,
            watch=watch,
        )

    def seen(self, version: int) -> None:
        until(
            lambda: (o := self.watch.observed()) is not None and o.version == str(version),
            f"the watch showing revision {version}",
        )


@pytest.fixture
def bed() -> Iterator[Bed]:
    b = Bed()
    b.etcd.put(KEYS.lease, b'{"holderIdentity": null, "leaseDurationSeconds": 15}')
    b.east.refresh()
    assert b.east.acquire() is None
    b.watch.start()
    yield b
    b.watch.stop()


# ---- messages ------------------------------------------------------------------------------------
def test_messages_become_events_and_a_compaction_asks_for_a_list() -> None:
    name = key_name("/p/lease")
    put = KeyValue("/p/lease", b"{}", 3, 7)
    other = KeyValue("/p/other", b"{}", 4, 8)
    assert events_of({"result": {"header": {"revision": "9"}, "created": True}}, name) == []
    events = events_of(
        {
            "result": {
                "events": [
                    message("PUT", put),
                    message("PUT", other),
                    message("DELETE", KeyValue("/p/lease", b"", 0, 9)),
                ]
            }
        },
        name,
    )
    assert [(e["type"], e["object"]["metadata"]) for e in events] == [
        ("MODIFIED", {"name": "/p/lease", "resourceVersion": "7"}),
        ("DELETED", {"name": "/p/lease", "resourceVersion": "9"}),
    ]
    assert events[0]["object"]["kv"] == put
    gone = events_of({"result": {"canceled": True, "compact_revision": "12"}}, name)
    assert gone[0]["type"] == "ERROR" and gone[0]["object"]["code"] == 410
    state = StreamState(track="/p/lease")
    assert state.event(gone[0], 1.0).gone
    with pytest.raises(WatchError, match="cancelled: permission denied"):
        events_of({"result": {"canceled": True, "cancel_reason": "permission denied"}}, name)
    with pytest.raises(WatchError, match="etcd watch error: no leader"):
        events_of({"error": {"grpc_code": 14, "message": "no leader"}}, name)
    with pytest.raises(WatchError, match="malformed key-value"):
        events_of({"result": {"events": [{"kv": "x"}]}}, name)
    with pytest.raises(WatchError, match="without a mod revision"):
        events_of({"result": {"events": [{"kv": {"key": _b64("/p/lease")}}]}}, name)


# ---- the follower --------------------------------------------------------------------------------
def test_the_follower_times_the_lock_from_when_the_event_arrives(bed: Bed) -> None:
    bed.seen(bed.etcd.revision)
    calls = bed.etcd.calls
    bed.west.refresh()
    assert bed.etcd.calls == calls  # west read nothing: the watch is live
    view = bed.west.view()
    assert view.holder == "east/bp-0" and view.expires_at == 1000.0 + 15.0


def test_a_late_event_delays_the_expiry_and_never_advances_it(bed: Bed) -> None:
    bed.gateway.deliver()
    bed.seen(bed.etcd.revision)
    bed.clock.t = 1005.0
    assert bed.east.renew() is None  # written at 1005 ...
    bed.clock.t = 1009.0
    bed.gateway.deliver()  # ... seen only at 1009
    bed.seen(bed.etcd.revision)
    bed.west.refresh()
    assert bed.west.view().expires_at == 1009.0 + 15.0  # late, never early
    bed.clock.t = 1012.0
    assert bed.east.renew() is None  # this event is held back until after west's timer
    bed.clock.t = 1024.5
    bed.west.refresh()
    assert bed.west.view().expired  # in west's observation, from the watch alone
    error = bed.west.acquire()
    assert error is not None and "changed since the watch showed it" in error
    assert bed.west.view().holder == "east/bp-0" and not bed.west.view().expired
    # The quorum read before the compare-and-swap stopped it: east's record is untouched.
    assert watched_record({"kv": bed.etcd.data[KEYS.lease]}).holder == "east/bp-0"


def test_a_broken_watch_falls_back_to_reading_and_resumes_without_losing_an_event(
    bed: Bed,
) -> None:
    bed.gateway.deliver()
    bed.seen(bed.etcd.revision)
    written = bed.etcd.revision
    reads = bed.etcd.calls
    bed.gateway.down = {0, 1, 2}  # no member takes a new watch for now
    bed.gateway.stream(1).q.put({"error": {"grpc_code": 14, "message": "transport closing"}})
    until(lambda: bed.watch.observed() is None, "the watch not live")
    bed.clock.t = 1003.0
    assert bed.east.renew() is None  # written while no stream is open
    bed.west.refresh()
    assert bed.etcd.calls > reads  # polling while broken
    assert bed.west.view().expires_at == 1003.0 + 15.0
    bed.gateway.down = set()
    resumed = bed.gateway.stream(2)
    assert resumed.start <= bed.etcd.revision  # the renewal is in it: nothing lost
    assert resumed.start > written
    bed.gateway.deliver()
    bed.seen(bed.etcd.revision)
    bed.clock.t = 1004.0
    bed.west.refresh()
    assert bed.west.view().expires_at == 1003.0 + 15.0  # the same revision keeps its time


def test_an_event_for_the_deleted_key_never_frees_the_lock(bed: Bed) -> None:
    bed.gateway.deliver()
    bed.seen(bed.etcd.revision)
    bed.etcd.delete(KEYS.lease)
    bed.clock.t = 1001.0
    bed.gateway.deliver()
    until(lambda: (o := bed.watch.observed()) is not None and o.record is None, "the deletion")
    bed.west.refresh()
    bed.clock.t = 2000.0
    view = bed.west.view()
    assert view.absent and not view.expired and view.expires_at is None
    assert bed.west.create_vacant() is None  # written vacant: that record is timed
    bed.gateway.deliver()
    bed.seen(bed.etcd.revision)
    bed.west.refresh()
    assert bed.west.view().expires_at == 2000.0 + 15.0


def test_a_compacted_revision_lists_again_and_a_record_that_reappeared_is_timed_anew(
    bed: Bed,
) -> None:
    bed.gateway.deliver()
    bed.seen(bed.etcd.revision)
    bed.west.refresh()
    assert bed.west.view().expires_at == 1015.0
    # Not delivered: the key deleted and written again (restored, re-created) with the same
    # content, and the history compacted; then the stream breaks.
    content = bed.etcd.data[KEYS.lease].value
    bed.etcd.delete(KEYS.lease)
    bed.etcd.put(KEYS.lease, content)
    bed.etcd.compact()
    lists = bed.watch.watcher.lists
    bed.clock.t = 1010.0
    bed.gateway.stream(1).q.put({"error": {"message": "broken"}})
    until(lambda: bed.watch.watcher.lists > lists, "a list after the compaction")
    bed.seen(bed.etcd.revision)
    bed.west.refresh()
    bed.clock.t = 1016.0
    view = bed.west.view()
    assert not view.expired and view.expires_at == 1010.0 + 15.0  # from the list, not before


def test_a_watch_on_the_lost_member_moves_the_watch_and_the_calls_on(bed: Bed) -> None:
    bed.gateway.deliver()
    bed.seen(bed.etcd.revision)
    assert bed.gateway.stream(1).index == 0
    bed.gateway.down.add(0)  # the member is killed: its stream ends, connections are refused
    bed.gateway.end(1)
    assert bed.gateway.stream(2).index == 1
    assert bed.calls.current == ENDPOINTS[1]  # the next read or write skips the lost member
    bed.gateway.deliver()
    bed.seen(bed.etcd.revision)
    assert bed.source.opened == [0, 1]


def test_a_stream_that_is_behind_is_moved_to_the_next_member(bed: Bed) -> None:
    """A member cut off from the quorum keeps the stream open and sends nothing: the quorum
    read before acquiring finds the newer revision, and the watch resumes elsewhere."""
    bed.gateway.deliver()
    bed.seen(bed.etcd.revision)
    bed.clock.t = 1002.0
    assert bed.east.renew() is None  # never delivered on stream 1
    bed.clock.t = 1015.5
    bed.west.refresh()
    assert bed.west.view().expired
    lists = bed.watch.watcher.lists
    assert bed.west.acquire() is not None
    assert bed.gateway.stream(2).index == 1
    assert bed.watch.watcher.lists == lists + 1  # started over from a range read
    assert bed.gateway.stream(2).start == bed.etcd.revision + 1
    bed.gateway.deliver()
    bed.seen(bed.etcd.revision)
    assert bed.calls.current == ENDPOINTS[0]  # the calls' own member answered: they stay


# ---- heartbeats ----------------------------------------------------------------------------------
def test_heartbeats_are_taken_from_the_watch_while_it_is_live() -> None:
    clock = Clock()
    etcd = HistoryEtcd()
    gateway = Gateway(etcd)
    watcher = Watcher(
        EtcdWatchSource(
            etcd,  # type: ignore[arg-type]
            gateway,
            key=KEYS.heartbeats,
            range_end=prefix_end(KEYS.heartbeats),
            name_of=suffix_name(KEYS.heartbeats),
            clock=clock,
        ),
        what="heartbeats",
        clock=clock,
        retry_period=0.05,
    )
    beats = EtcdHeartbeats(etcd, KEYS, watch=watcher)  # type: ignore[arg-type]
    assert beats.observed() is None
    beats.beat("east", "bp-0")
    watcher.start()
    try:
        until(lambda: beats.observed() is not None, "the watch live")
        assert beats.observed() == {"east": (str(etcd.revision), 1000.0)}
        clock.t = 1003.0
        beats.beat("west", "bp-0")
        etcd.put(KEYS.lease, b"{}")  # outside the prefix: not a heartbeat
        gateway.deliver()
        until(lambda: "west" in (beats.observed() or {}), "west's heartbeat")
        assert beats.observed() == {
            "east": (str(etcd.revision - 2), 1000.0),
            "west": (str(etcd.revision - 1), 1003.0),
        }
        gateway.down = {0, 1, 2}
        gateway.end(1)
        until(lambda: beats.observed() is None, "the watch not live")
        assert set(beats.list()) == {"east", "west"}  # read instead
    finally:
        watcher.stop()


# ---- one call over the endpoints -----------------------------------------------------------------
class Refusing(FakeClient):
    def post(self, url: str, json: Any = None) -> Any:
        self.calls += 1
        raise ConnectionError(
            "HTTPConnectionPool: Max retries exceeded (Caused by NewConnectionError: "
            "[Errno 111] Connection refused)"
        )


class Hanging(FakeClient):
    """Answers after the timeout it was given (the clock moves by it)."""

    def __init__(self, name: str, clock: Clock) -> None:
        super().__init__(name)
        self.clock = clock
        self.timeout = 0.0

    def post(self, url: str, json: Any = None) -> Any:
        self.calls += 1
        self.clock.t += self.timeout
        raise TimeoutError(f"{self.name}: read timed out")


def test_a_refused_member_costs_a_call_nothing_a_write_that_may_have_landed_is_not_repeated() -> (
    None
):
    clock = Clock()
    s = EtcdSettings(ENDPOINTS, None, None, None, "/cardano-forge")
    a, b, c = Refusing(ENDPOINTS[0]), FakeClient(ENDPOINTS[1]), FakeClient(ENDPOINTS[2])
    etcd = Etcd(s, timeout=1.0, clock=clock, clients=[a, b, c])
    assert etcd.get("/k") is None and (a.calls, b.calls) == (1, 1)  # read: moved inside the call
    etcd.rotation = type(etcd.rotation)(3, clock)
    assert etcd.put("/k", b"v") == 5 and b.calls == 2  # a write never sent: moved too
    hanging = Hanging(ENDPOINTS[0], clock)
    etcd = Etcd(s, timeout=1.0, clock=clock, clients=[hanging, b, c])
    with pytest.raises(EtcdError, match="read timed out"):
        etcd.put_if("/k", b"v", mod_revision=0)  # may have been applied: not sent again
    assert b.calls == 2 and etcd.current == ENDPOINTS[1]
    etcd = Etcd(s, timeout=1.0, clock=clock, clients=[hanging, b, c])
    with pytest.raises(EtcdError):
        etcd.get("/k")  # the timeout used the whole bound: no second attempt
    assert b.calls == 2


def test_after_a_restore_with_a_bumped_revision_nobody_leads_until_a_lease_passed(bed: Bed) -> None:
    """The documented restore (``--bump-revision --mark-compacted``): the stream's position is
    compacted, so the watch lists; the restored record's mod revision is older than the one
    west timed, which moves nothing; east's next renewal is lost; west acquires only after a
    quorum read showed the restored record and a lease duration passed from it."""
    snapshot, at = dict(bed.etcd.data), bed.etcd.revision
    bed.clock.t = 1002.0
    assert bed.east.renew() is None  # not in the snapshot
    bed.gateway.deliver()
    bed.seen(bed.etcd.revision)
    bed.west.refresh()
    assert bed.west.view().expires_at == 1017.0
    bed.etcd.restore(snapshot, at + 1000)
    bed.etcd.compacted = bed.etcd.revision
    bed.gateway.end(1)  # the member restarted
    until(lambda: bed.watch.watcher.lists >= 2, "a list after the compacted position")
    bed.seen(at)
    bed.clock.t = 1005.0
    bed.west.refresh()
    assert bed.west.view().expires_at == 1017.0  # an older revision moves nothing
    bed.clock.t = 1006.0
    assert bed.east.renew() is not None  # its record is gone: lost
    # The restored record is east's acquisition, sent at 1000: east leads at most until then
    # plus the renew deadline, before west's timer (1017) could fire.
    until_ = bed.east.leading_until()
    assert until_ is not None and until_ <= 1010.0
    bed.clock.t = 1017.5
    bed.west.refresh()
    assert bed.west.view().expired
    assert bed.west.acquire() is not None  # the quorum read shows the restored record
    assert bed.west.view().expires_at == 1017.5 + 15.0
    bed.clock.t = 1032.6
    bed.west.refresh()
    assert bed.west.acquire() is None
