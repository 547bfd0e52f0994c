"""Per-key TTL cache with single-flight: many callers, one upstream round.

A forge manager in every region polls the health of every cluster, external monitors poll too,
and each answer costs several Prometheus queries. Within one worker process, an answer computed
for a cluster is reused for ``ttl`` seconds, and callers that arrive while it is being computed
wait for that computation instead of starting their own.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lookup(enum.StrEnum):
    """How a value was obtained (the ``result`` label of the cache metric)."""

    HIT = "hit"
    """Reused from the cache."""
    MISS = "miss"
    """Computed by this caller."""
    SHARED = "shared"
    """Computed by a concurrent caller this one waited for (single-flight)."""


@dataclass
class _Flight(Generic[V]):
    done: threading.Event = field(default_factory=threading.Event)
    waiters: int = 0
    value: V | None = None
    error: BaseException | None = None


@dataclass(frozen=True)
class _Entry(Generic[V]):
    value: V
    expires: float


class SingleFlightCache(Generic[K, V]):
    """Thread-safe; ``ttl`` 0 keeps nothing but still shares computations in flight."""

    def __init__(
        self,
        ttl: float,
        *,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[K, _Entry[V]] = {}
        self._flights: dict[K, _Flight[V]] = {}

    def get(self, key: K, compute: Callable[[], V], *, wait_timeout: float) -> tuple[V, Lookup]:
        """The cached value for ``key``, or ``compute()``'s, computed once for concurrent callers.

        A caller that waits longer than ``wait_timeout`` for another's computation gets
        ``TimeoutError``; an exception raised by ``compute`` reaches every caller that waited.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.expires > self._clock():
                return entry.value, Lookup.HIT
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
            else:
                flight.waiters += 1
        if not leader:
            finished = flight.done.wait(wait_timeout)
            with self._lock:
                flight.waiters -= 1
            if not finished:
                raise TimeoutError(f"waited {wait_timeout:g} s for a computation in flight")
            if flight.error is not None:
                raise flight.error
            return flight.value, Lookup.SHARED  # type: ignore[return-value]
        try:
            value = compute()
        except BaseException as exc:
            flight.error = exc
            with self._lock:
                del self._flights[key]
            flight.done.set()
            raise
        flight.value = value
        with self._lock:
            if self.ttl > 0:
                self._store(key, _Entry(value, self._clock() + self.ttl))
            del self._flights[key]
        flight.done.set()
        return value, Lookup.MISS

    def _store(self, key: K, entry: _Entry[V]) -> None:
        self._entries.pop(key, None)
        if len(self._entries) >= self.max_entries:
            now = self._clock()
            for stale in [k for k, e in self._entries.items() if e.expires <= now]:
                del self._entries[stale]
            while len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
        self._entries[key] = entry

    def waiting(self, key: K) -> int:
        """How many callers are waiting for the computation of ``key`` now in flight."""
        with self._lock:
            flight = self._flights.get(key)
            return flight.waiters if flight is not None else 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
