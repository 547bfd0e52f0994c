"""watch.py without a server: resource versions, the state of a stream, and the watcher's loop
against a scripted source (lists, streams that end, break, expire, or hang until closed)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from forge_manager.watch import (
    Seen,
    StreamState,
    WatchedLease,
    Watcher,
    WatchError,
    WatchGone,
    compare_resource_versions,
    is_newer,
)

from .fakes import Clock

WAIT = 10.0


def lease(name: str, rv: str, holder: str | None = "bp-0", **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": rv, "annotations": annotations or None},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": 2},
    }


def event(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": kind, "object": obj}


def bookmark(rv: str) -> dict[str, Any]:
    return event("BOOKMARK", {"kind": "Lease", "metadata": {"resourceVersion": rv}})


def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


# ---- resource versions ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b", "order"),
    [("9", "10", -1), ("10", "9", 1), ("123", "123", 0), ("124", "123", 1), ("99", "100", -1)],
)
def test_resource_versions_compare_as_integers_of_any_length(a: str, b: str, order: int) -> None:
    assert compare_resource_versions(a, b) == order


@pytest.mark.parametrize("bad", ["", "0", "012", "12a", "-3", "\uff11\uff12", " 12"])
def test_a_malformed_resource_version_is_not_comparable(bad: str) -> None:
    assert compare_resource_versions(bad, "12") is None
    assert compare_resource_versions("12", bad) is None


def test_is_newer_treats_nothing_known_as_older_and_refuses_to_guess() -> None:
    assert is_newer("5", "") is True
    assert is_newer("5", "5") is False
    assert is_newer("6", "5") is True
    assert is_newer("abc", "5") is None


# ---- the state of one stream ---------------------------------------------------------------------
def test_a_list_times_new_versions_and_keeps_the_time_of_unchanged_ones() -> None:
    s = StreamState()
    assert s.listed([lease("a", "10"), lease("b", "11")], "12", now=1.0) == ("a", "b")
    assert s.position == "12"
    # A repeated LIST (after a 410 or a broken stream) changes nothing it shows unchanged.
    assert s.listed([lease("a", "10"), lease("b", "13")], "14", now=5.0) == ("b",)
    assert s.objects["a"].seen_at == 1.0
    assert s.objects["b"] == Seen(lease("b", "13"), "13", 5.0)
    # An object the new LIST lacks is gone; an untracked one is simply dropped.
    assert s.listed([lease("b", "13")], "15", now=6.0) == ("a",)
    assert "a" not in s.objects


def test_a_tracked_name_records_when_it_was_first_seen_missing() -> None:
    s = StreamState(track="leader")
    s.listed([], "7", now=1.0)
    assert s.objects["leader"] == Seen(None, "7", 1.0)
    s.listed([], "9", now=4.0)  # missing again: from this LIST (see the next test)
    assert s.objects["leader"] == Seen(None, "9", 4.0)
    assert s.event(event("ADDED", lease("leader", "10")), now=5.0).changed == ("leader",)
    out = s.event(event("DELETED", lease("leader", "11")), now=6.0)
    assert out.changed == ("leader",)
    assert s.objects["leader"] == Seen(None, "11", 6.0)  # the deletion's version
    s.listed([], "12", now=8.0)
    assert s.objects["leader"] == Seen(None, "12", 8.0)
    s.event(event("ADDED", lease("leader", "13")), now=9.0)
    s.listed([], "14", now=10.0)  # gone again, seen missing by a LIST
    assert s.objects["leader"] == Seen(None, "14", 10.0)


def test_a_tracked_name_missing_at_two_lists_is_seen_missing_anew_at_the_second() -> None:
    """Between two LISTs (a broken stream, then 410 Gone) the object may have been created,
    held and deleted: missing at both is no evidence that it was missing in between."""
    s = StreamState(track="leader")
    s.listed([], "5", now=1.0)
    # created (6), renewed (7), deleted (8) while no stream was open; then compacted
    assert s.listed([], "9", now=17.0) == ("leader",)
    assert s.objects["leader"] == Seen(None, "9", 17.0)


def test_events_move_objects_and_position_and_a_bookmark_only_the_position() -> None:
    s = StreamState()
    s.listed([lease("a", "10")], "10", now=1.0)
    assert s.event(event("MODIFIED", lease("a", "12")), now=2.0).changed == ("a",)
    assert (s.position, s.objects["a"].seen_at) == ("12", 2.0)
    assert s.event(bookmark("20"), now=3.0).changed == ()
    assert s.position == "20"
    assert s.objects["a"] == Seen(lease("a", "12"), "12", 2.0)
    # A resumed stream repeating a version already seen changes nothing, not even its time.
    assert s.event(event("MODIFIED", lease("a", "12")), now=4.0).changed == ()
    assert s.objects["a"].seen_at == 2.0
    assert s.event(event("DELETED", lease("a", "21")), now=5.0).changed == ("a",)
    assert "a" not in s.objects


def test_error_events_ask_for_a_list_or_break_the_stream() -> None:
    s = StreamState()
    gone = s.event(event("ERROR", {"kind": "Status", "code": 410, "reason": "Expired"}), 1.0)
    assert gone.gone and not gone.error
    other = s.event(event("ERROR", {"kind": "Status", "code": 500, "message": "boom"}), 1.0)
    assert other.error == "watch error 500: boom"
    assert s.event({"type": "ADDED"}, 1.0).error
    assert s.event(event("SURPRISE", lease("a", "3")), 1.0).error
    assert s.event(event("ADDED", {"metadata": {"name": "a"}}), 1.0).error


# ---- the watcher's loop --------------------------------------------------------------------------
class Stream:
    """A watch response: events put by the test; ``end()`` ends it normally, ``fail()`` with a
    read error; ``close()`` (from the watcher) unblocks it like a shut-down socket."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.q: queue.Queue[dict[str, Any] | str] = queue.Queue()
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        while True:
            try:
                item = self.q.get(timeout=0.01)
            except queue.Empty:
                if self.closed.is_set():
                    raise WatchError("socket shut down") from None
                continue
            if item == "end":
                return
            if item == "fail":
                raise WatchError("ReadTimeoutError: read timed out")
            assert isinstance(item, dict)
            yield item

    def close(self) -> None:
        self.closed.set()

    def put(self, item: dict[str, Any] | str) -> None:
        self.q.put(item)


class Source:
    """Scripted LIST and WATCH answers; records the versions watched from."""

    def __init__(self) -> None:
        self.items: list[Mapping[str, Any]] = []
        self.version = "1"
        self.list_fails = False
        self.watch_errors: list[Exception] = []
        self.streams: list[Stream] = []
        self.lists = 0

    def list(self) -> tuple[list[Mapping[str, Any]], str]:
        self.lists += 1
        if self.list_fails:
            raise WatchError("ConnectionRefusedError: connection refused")
        return list(self.items), self.version

    def watch(self, version: str, timeout_seconds: int) -> Stream:
        assert timeout_seconds > 0
        if self.watch_errors:
            raise self.watch_errors.pop(0)
        stream = Stream(version)
        self.streams.append(stream)
        return stream

    def stream(self, n: int) -> Stream:
        until(lambda: len(self.streams) >= n, f"watch request {n}")
        return self.streams[n - 1]


@pytest.fixture
def run_watcher() -> Iterator[Callable[..., Watcher]]:
    started: list[Watcher] = []

    def start(source: Source, **kwargs: Any) -> Watcher:
        w = Watcher(source, what="test", clock=kwargs.pop("clock", Clock()),
                    retry_period=kwargs.pop("retry_period", 0.05), **kwargs)  # fmt: skip
        started.append(w.start())
        return w

    yield start
    for w in started:
        w.stop(timeout=WAIT)


def test_lists_then_watches_from_the_lists_version_and_follows_events(
    run_watcher: Callable[..., Watcher],
) -> None:
    src, clock = Source(), Clock(100.0)
    src.items, src.version = [lease("leader", "5")], "8"
    changes: list[tuple[str, str | None, str | None]] = []
    w = run_watcher(src, clock=clock, track="leader", on_change=lambda n, b, a: changes.append(
        (n, b.version if b else None, a.version if a else None)))  # fmt: skip
    stream = src.stream(1)
    assert stream.version == "8"
    until(lambda: w.view().live, "live")
    assert changes == [("leader", None, "5")]
    clock.advance(3)
    stream.put(event("MODIFIED", lease("leader", "9")))
    until(lambda: w.view().objects["leader"].version == "9", "the renewal")
    assert w.view().objects["leader"].seen_at == 103.0
    assert changes[-1] == ("leader", "5", "9")


def test_a_stream_that_ends_is_resumed_from_the_last_version_without_a_list(
    run_watcher: Callable[..., Watcher],
) -> None:
    src = Source()
    w = run_watcher(src, track="leader")
    first = src.stream(1)
    first.put(event("ADDED", lease("leader", "2")))
    first.put(bookmark("7"))
    first.put("end")  # the server's timeoutSeconds
    second = src.stream(2)
    assert second.version == "7"
    assert src.lists == 1
    assert w.view().live


def test_a_broken_stream_is_not_live_until_resumed_and_never_loses_an_event(
    run_watcher: Callable[..., Watcher],
) -> None:
    src, clock = Source(), Clock(100.0)
    w = run_watcher(src, clock=clock, retry_period=0.3, track="leader")
    first = src.stream(1)
    first.put(event("ADDED", lease("leader", "2")))
    until(lambda: "leader" in w.view().objects and w.view().objects["leader"].version == "2",
          "the first event")  # fmt: skip
    first.put("fail")  # a read timeout, a reset connection
    until(lambda: not w.view().live, "not live")
    assert "read timed out" in w.view().error
    second = src.stream(2)
    assert second.version == "2"  # resumed where it broke: the server replays what came after
    clock.advance(5)
    second.put(event("MODIFIED", lease("leader", "3")))
    until(lambda: w.view().live and w.view().objects["leader"].version == "3", "resumed")
    assert w.view().objects["leader"].seen_at == 105.0  # when it was seen: late, never early


def test_a_lease_missing_before_and_after_a_broken_stream_is_seen_missing_from_the_relist(
    run_watcher: Callable[..., Watcher],
) -> None:
    src, clock = Source(), Clock(100.0)
    src.version = "5"  # no Lease
    changes: list[tuple[str | None, str | None]] = []
    w = run_watcher(src, clock=clock, track="leader", on_change=lambda n, b, a: changes.append(
        (b.version if b else None, a.version if a else None)))  # fmt: skip
    first = src.stream(1)
    until(lambda: w.view().live, "live")
    assert w.view().objects["leader"] == Seen(None, "5", 100.0)
    # While the stream is broken the Lease is created (6), renewed (7) and deleted (8), and
    # etcd compacts: the resumed watch gets 410 and the LIST finds no Lease again.
    src.watch_errors.append(WatchGone("HTTP 410"))
    src.version = "9"
    clock.advance(16.0)
    first.put("fail")
    src.stream(2)
    until(lambda: w.view().live and src.lists == 2, "listed again")
    assert w.view().objects["leader"] == Seen(None, "9", 116.0)
    assert changes[-1] == ("5", "9")


def test_410_gone_lists_again(run_watcher: Callable[..., Watcher]) -> None:
    src = Source()
    src.items, src.version = [lease("leader", "4")], "4"
    w = run_watcher(src, track="leader")
    src.stream(1).put(event("ERROR", {"kind": "Status", "code": 410, "reason": "Expired"}))
    src.items, src.version = [lease("leader", "30")], "31"
    second = src.stream(2)
    assert src.lists == 2 and second.version == "31"
    assert w.view().objects["leader"].version == "30"
    src.watch_errors.append(WatchGone("HTTP 410"))  # refused at the request: the same
    second.put("end")
    assert src.stream(3).version == "31"
    assert src.lists == 3


def test_repeated_failures_to_resume_list_again(run_watcher: Callable[..., Watcher]) -> None:
    src = Source()
    src.watch_errors = [WatchError("HTTP 504: Too large resource version")] * 3
    w = run_watcher(src)
    src.stream(1)
    assert src.lists == 2
    until(lambda: w.view().live, "live")


def test_a_failing_list_is_retried_and_the_watch_stays_not_live(
    run_watcher: Callable[..., Watcher],
) -> None:
    src = Source()
    src.list_fails = True
    w = run_watcher(src)
    until(lambda: src.lists >= 3, "list retried")
    assert not w.view().live and "list failed" in w.view().error
    assert src.streams == []
    src.list_fails = False
    src.stream(1)
    until(lambda: w.view().live, "live")


def test_resync_resumes_at_once_and_stop_ends_a_blocked_stream(
    run_watcher: Callable[..., Watcher],
) -> None:
    src = Source()
    w = run_watcher(src, retry_period=30.0)  # a failure would wait 30 s: resync must not
    first = src.stream(1)
    first.put(bookmark("9"))
    until(lambda: w.view().position == "9", "the bookmark")
    w.resync()
    assert first.closed.is_set()
    assert src.stream(2).version == "9"
    started = time.monotonic()
    w.stop(timeout=WAIT)
    assert time.monotonic() - started < WAIT
    assert not w.view().live


def test_a_failing_callback_does_not_end_the_watch(run_watcher: Callable[..., Watcher]) -> None:
    src = Source()

    def boom(*_: object) -> None:
        raise RuntimeError("consumer bug")

    w = run_watcher(src, on_change=boom)
    stream = src.stream(1)
    stream.put(event("ADDED", lease("a", "2")))
    stream.put(event("MODIFIED", lease("a", "3")))
    until(lambda: "a" in w.view().objects and w.view().objects["a"].version == "3", "events")
    assert w.view().live


def test_a_watched_lease_gives_records_and_nothing_while_not_live() -> None:
    src = Source()
    src.items, src.version = [lease("leader", "5", "bp-1", **{"cardano.io/released-by": "x"})], "6"
    watched = WatchedLease(src, "leader", what="test", clock=Clock(50.0), retry_period=0.05)
    seen: list[tuple[str | None, str | None]] = []
    watched.on_change(lambda b, a: seen.append((b and b.holder, a and a.holder)))
    assert watched.observed() is None  # not started: not live
    watched.start()
    try:
        stream = src.stream(1)
        until(lambda: watched.observed() is not None, "live")
        obs = watched.observed()
        assert obs is not None and obs.record is not None
        assert (obs.version, obs.seen_at, obs.record.holder) == ("5", 50.0, "bp-1")
        assert obs.record.released_by == "x" and obs.record.transitions == 2
        stream.put(event("DELETED", lease("leader", "8")))
        until(lambda: (o := watched.observed()) is not None and o.record is None, "deleted")
        assert seen == [(None, "bp-1"), ("bp-1", None)]
        stream.put("fail")
        until(lambda: watched.observed() is None, "not live: the consumer reads instead")
    finally:
        watched.stop()
