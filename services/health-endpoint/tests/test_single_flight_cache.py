"""The per-cluster TTL cache: hits, expiry, one computation for concurrent callers."""

from __future__ import annotations

import threading

import pytest
from health_endpoint.cache import Lookup, SingleFlightCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_hit_within_ttl_then_recomputed_after() -> None:
    clock = FakeClock()
    cache: SingleFlightCache[str, int] = SingleFlightCache(5.0, clock=clock)
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    assert cache.get("a", compute, wait_timeout=1) == (1, Lookup.MISS)
    clock.now += 4.9
    assert cache.get("a", compute, wait_timeout=1) == (1, Lookup.HIT)
    assert cache.get("b", compute, wait_timeout=1) == (2, Lookup.MISS)  # per key
    clock.now += 0.1
    assert cache.get("a", compute, wait_timeout=1) == (3, Lookup.MISS)


def test_ttl_zero_keeps_nothing() -> None:
    cache: SingleFlightCache[str, int] = SingleFlightCache(0.0)
    assert cache.get("a", lambda: 1, wait_timeout=1) == (1, Lookup.MISS)
    assert cache.get("a", lambda: 2, wait_timeout=1) == (2, Lookup.MISS)
    assert len(cache) == 0


def test_concurrent_callers_share_one_computation() -> None:
    cache: SingleFlightCache[str, str] = SingleFlightCache(0.0)  # sharing needs no TTL
    started, release = threading.Event(), threading.Event()
    calls = 0

    def compute() -> str:
        nonlocal calls
        calls += 1
        started.set()
        assert release.wait(10)
        return "report"

    results: list[tuple[str, Lookup]] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get("c", compute, wait_timeout=10)))
        for _ in range(5)
    ]
    threads[0].start()
    assert started.wait(10)
    for thread in threads[1:]:
        thread.start()
    for _ in range(200):
        if cache.waiting("c") == 4:
            break
        threading.Event().wait(0.01)
    assert cache.waiting("c") == 4
    release.set()
    for thread in threads:
        thread.join(10)

    assert calls == 1
    assert sorted(lookup.value for _, lookup in results) == ["miss"] + ["shared"] * 4
    assert {value for value, _ in results} == {"report"}
    assert cache.waiting("c") == 0


def test_an_exception_reaches_every_waiting_caller_and_is_not_cached() -> None:
    cache: SingleFlightCache[str, int] = SingleFlightCache(60.0)
    started, release = threading.Event(), threading.Event()

    def failing() -> int:
        started.set()
        assert release.wait(10)
        raise RuntimeError("boom")

    errors: list[str] = []

    def call() -> None:
        try:
            cache.get("k", failing, wait_timeout=10)
        except RuntimeError as exc:
            errors.append(str(exc))

    leader = threading.Thread(target=call)
    leader.start()
    assert started.wait(10)
    follower = threading.Thread(target=call)
    follower.start()
    for _ in range(200):
        if cache.waiting("k") == 1:
            break
        threading.Event().wait(0.01)
    release.set()
    leader.join(10)
    follower.join(10)

    assert errors == ["boom", "boom"]
    assert cache.get("k", lambda: 7, wait_timeout=1) == (7, Lookup.MISS)


def test_a_waiter_gives_up_after_its_timeout() -> None:
    cache: SingleFlightCache[str, int] = SingleFlightCache(0.0)
    started, release = threading.Event(), threading.Event()

    def slow() -> int:
        started.set()
        release.wait(10)
        return 1

    leader = threading.Thread(target=lambda: cache.get("k", slow, wait_timeout=10))
    leader.start()
    assert started.wait(10)
    with pytest.raises(TimeoutError):
        cache.get("k", slow, wait_timeout=0.05)
    release.set()
    leader.join(10)


def test_size_is_bounded() -> None:
    clock = FakeClock()
    cache: SingleFlightCache[int, int] = SingleFlightCache(60.0, max_entries=3, clock=clock)
    for key in range(10):
        cache.get(key, lambda key=key: key, wait_timeout=1)  # type: ignore[misc]
    assert len(cache) == 3
    assert cache.get(9, lambda: -1, wait_timeout=1) == (9, Lookup.HIT)  # newest kept
    assert cache.get(0, lambda: -1, wait_timeout=1) == (-1, Lookup.MISS)  # oldest dropped
