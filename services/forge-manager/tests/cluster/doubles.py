"""Several regions' coordination loops against one in-memory coordination API.

Fakes sit at the project's own seams (the resource store, the heartbeat store, the Lease
backend); the policy, the pool-wide Lease bookkeeping, liveness and health counting are real.
Each region reaches the shared API through its own :class:`Faults`, so one region can be cut
off, lose its ``list`` permission, lose the answers to its writes or see slow round trips while
the others carry on. Time is the shared :class:`Clock`; a call with latency moves it.

:meth:`World.run` drives every region's loop on its own retry period in small steps of
simulated time and measures, from the regions' permits, the time two regions were allowed to
forge at once and the time nobody was.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from forge_manager.cluster.coordinator import ClusterCoordinator
from forge_manager.cluster.health_check import HealthChecker
from forge_manager.cluster.metrics import ClusterMetrics
from forge_manager.cluster.model import holder_identity
from forge_manager.cluster.pool_lease import PoolLease
from forge_manager.cluster.resource import (
    CoordinationError,
    ResourceConflict,
    ResourceNotFound,
    seed_body,
)
from forge_manager.cluster.round_trips import RoundTrips
from forge_manager.cluster.settings import load_cluster_settings
from forge_manager.lease import LeaseError, LeaseLost, LeaseRecord
from forge_manager.timing import DEMOTION_BUDGET_S
from prometheus_client import CollectorRegistry

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE_DURATION = 15.0
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0
REQUEST_TIMEOUT = 1.0
STALE_AFTER = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Api:
    """One coordination API: CardanoForgeClusters, heartbeat versions, the pool-wide Lease."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    heartbeats: dict[str, str] = field(default_factory=dict)
    lease: LeaseRecord | None = None
    down: bool = False
    crd_missing: bool = False
    rv: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def delete_lease(self) -> None:
        """``kubectl delete lease`` (or a restore without it)."""
        self.lease = None

    def clear_holder(self) -> None:
        """Someone other than the holder clears ``holderIdentity`` (an edit, a restore)."""
        assert self.lease is not None
        self.lease = LeaseRecord(None, str(next(self.rv)), 15, "edited", self.lease.transitions)


@dataclass
class Faults:
    """One region's view of the coordination API."""

    cut: bool = False
    """Every call fails (a partition)."""
    forbidden: set[str] = field(default_factory=set)
    """Operations answered 403: ``list`` (the CardanoForgeClusters), ``status``, ``beat``,
    ``pool_write`` (acquire and renew of the pool-wide Lease)."""
    read_latency: float = 0.0
    write_latency: float = 0.0
    """Round trip of a pool-lease write; beyond the request timeout the write is applied but
    its answer is lost (the client gives up at the timeout)."""
    lose_answers: int = 0
    """The next n pool-lease writes are applied but their answers are lost."""


class Store:
    def __init__(self, api: Api, faults: Faults) -> None:
        self.api, self.faults = api, faults

    def _check(self, op: str) -> None:
        if self.api.down or self.faults.cut:
            raise CoordinationError("ConnectionRefusedError: connection refused")
        if op in self.faults.forbidden:
            raise CoordinationError(f"HTTP 403 Forbidden: cannot {op} cardanoforgeclusters")

    def list(self) -> list[dict[str, Any]]:
        self._check("list")
        if self.api.crd_missing:
            raise ResourceNotFound("HTTP 404 Not Found")
        return copy.deepcopy(list(self.api.objects.values()))

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check("create")
        obj = copy.deepcopy(body)
        obj["metadata"].update(resourceVersion=str(next(self.api.rv)), generation=1)
        self.api.objects[obj["metadata"]["name"]] = obj
        return copy.deepcopy(obj)

    def replace_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        self._check("status")
        name = obj["metadata"]["name"]
        stored = self.api.objects[name]
        if stored["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise ResourceConflict("HTTP 409 Conflict")
        stored["status"] = copy.deepcopy(status)
        stored["metadata"]["resourceVersion"] = str(next(self.api.rv))
        return copy.deepcopy(stored)


class Beats:
    def __init__(self, api: Api, faults: Faults) -> None:
        self.api, self.faults = api, faults
        self.beats = 0

    def list(self) -> dict[str, str]:
        if self.api.down or self.faults.cut:
            raise CoordinationError("ConnectionRefusedError: connection refused")
        return dict(self.api.heartbeats)

    def observed(self) -> dict[str, tuple[str, float]] | None:
        return None  # no watch: the coordinator lists

    def beat(self, region: str, pod: str) -> None:
        if self.api.down or self.faults.cut:
            raise CoordinationError("ConnectionRefusedError: connection refused")
        if "beat" in self.faults.forbidden:
            raise CoordinationError("HTTP 403 Forbidden: cannot update leases")
        self.api.heartbeats[region] = str(next(self.api.rv))
        self.beats += 1


class Lease:
    """The pool-wide Lease as ``LeaseClient`` writes it: renewTime is the stamp, a release names
    its holder, a write against another version (or a vanished Lease) is lost."""

    def __init__(self, api: Api, faults: Faults, clock: Clock, identity: str) -> None:
        self.api, self.faults, self.clock, self.identity = api, faults, clock, identity
        self.stamps = itertools.count()
        self.writes = 0

    def _reachable(self) -> None:
        if self.api.down or self.faults.cut:
            raise LeaseError("ConnectionRefusedError: connection refused")

    def read(self) -> LeaseRecord | None:
        self._reachable()
        if self.faults.read_latency >= REQUEST_TIMEOUT:
            self.clock.now += REQUEST_TIMEOUT
            raise LeaseError("ReadTimeoutError: read timed out")
        self.clock.now += self.faults.read_latency
        return self.api.lease

    def _write(self, current: LeaseRecord | None, holder: str | None, stamp: str) -> LeaseRecord:
        self._reachable()
        if holder is not None and "pool_write" in self.faults.forbidden:
            raise LeaseError("HTTP 403 Forbidden")
        latency = self.faults.write_latency
        self.clock.now += min(latency, REQUEST_TIMEOUT) / 2  # the request travels
        stored = self.api.lease
        if current is not None and stored is None:
            raise LeaseLost("lease was deleted since it was read (404)")
        if (current.resource_version if current else None) != (
            stored.resource_version if stored else None
        ):
            raise LeaseLost("lease changed since it was read (409)")
        transitions = stored.transitions if stored else 0
        released_by = current.holder if holder is None and current is not None else None
        self.api.lease = LeaseRecord(
            holder, str(next(self.api.rv)), 15, stamp, transitions, released_by
        )
        self.writes += 1
        self.clock.now += min(latency, REQUEST_TIMEOUT) / 2  # the answer travels
        if latency >= REQUEST_TIMEOUT:
            raise LeaseError("ReadTimeoutError: read timed out")
        if self.faults.lose_answers > 0:
            self.faults.lose_answers -= 1
            raise LeaseError("ProtocolError: connection reset before the answer")
        return self.api.lease

    def create_vacant(self) -> None:
        self._reachable()
        if self.api.lease is not None:
            raise LeaseLost("lease exists (409)")
        self.api.lease = LeaseRecord(None, str(next(self.api.rv)), 15, None, 0)

    def acquire(self, current: LeaseRecord | None, stamp: str) -> LeaseRecord:
        return self._write(current, self.identity, stamp)

    def renew(self, current: LeaseRecord, stamp: str) -> LeaseRecord:
        return self._write(current, self.identity, stamp)

    def release(self, current: LeaseRecord) -> LeaseRecord:
        return self._write(current, None, self.new_renew_stamp())

    def new_renew_stamp(self) -> str:
        return f"{self.identity}-{next(self.stamps)}"


class Region:
    def __init__(self, api: Api, clock: Clock, name: str, priority: int) -> None:
        self.name = name
        self.settings = load_cluster_settings(
            {
                "ENABLE_CLUSTER_MANAGEMENT": "true",
                "CLUSTER_NAME": name,
                "CLUSTER_PRIORITY": str(priority),
                "NAMESPACE": "cardano",
                "HEALTH_CHECK_ENDPOINT": "http://127.0.0.1:9/health",  # never probed here
                "CLUSTER_HEARTBEAT_INTERVAL": "2",
                "CLUSTER_STALE_AFTER": f"{STALE_AFTER:g}",
            }
        )
        self.clock = clock
        self.faults = Faults()
        self.leader = True
        self.forging = False
        self.reconciles = 0
        self.settled: list[float] = []
        self.disabled_at: float | None = None
        """When the manager's side last told the node to stop forging (its SIGHUP)."""
        self.health = HealthChecker(self.settings.health_check)
        self.lease = Lease(api, self.faults, clock, holder_identity(name, "bp-0"))
        self.beats = Beats(api, self.faults)
        self.store = Store(api, self.faults)
        self.registry = CollectorRegistry()
        self.metrics = ClusterMetrics(self.registry, name)
        pool = PoolLease(
            self.lease,
            identity=holder_identity(name, "bp-0"),
            lease_duration=LEASE_DURATION,
            renew_deadline=RENEW_DEADLINE,
            clock=clock,
            round_trips=RoundTrips(REQUEST_TIMEOUT),
            on_write=self.metrics.pool_lease_write,
            create_vacant=self.lease.create_vacant,
        )
        self.c = ClusterCoordinator(
            self.settings,
            pod="bp-0",
            renew_deadline=RENEW_DEADLINE,
            retry_period=RETRY_PERIOD,
            store=self.store,
            heartbeats=self.beats,
            pool=pool,
            health=self.health,
            seed=seed_body(self.settings),
            local_leader=lambda: self.leader,
            reconcile=self.reconcile,
            clock=clock,
            wall=lambda: T0,
            settle=self.settle,
            metrics=self.metrics,
            settle_left=self.settle_left,
        )
        self.next_cycle = clock()
        self.on_reconcile: Callable[[], None] = lambda: None

    def reconcile(self) -> tuple[bool, str]:
        """The manager's side: forge exactly while permitted."""
        self.reconciles += 1
        was, self.forging = self.forging, self.c.permit().granted
        if was and not self.forging:
            self.disabled_at = self.clock()
        self.on_reconcile()
        return (not self.forging, "")

    def settle_left(self) -> float:
        """What is left of the node's time to act on its disabling SIGHUP (the manager's
        ``demotion_settle_left``)."""
        if self.disabled_at is None:
            return 0.0
        return max(0.0, self.disabled_at + DEMOTION_BUDGET_S - self.clock())

    def settle(self, seconds: float) -> None:
        self.settled.append(seconds)
        self.clock.now += seconds

    def metric(self, name: str) -> float | None:
        return self.registry.get_sample_value(name, {"cluster": self.name})

    def condition(self, kind: str) -> dict[str, Any]:
        """This region's status condition ``kind`` as stored in the API."""
        status = self.store.api.objects[self.name].get("status") or {}
        found = [c for c in status.get("conditions", []) if c["type"] == kind]
        assert found, (kind, status)
        return dict(found[0])

    def fail(self, n: int) -> None:
        for _ in range(n):
            self.health.tracker.record(False, "HTTP 503", T0)

    def succeed(self, n: int) -> None:
        for _ in range(n):
            self.health.tracker.record(True, "HTTP 200", T0)


@dataclass
class Figures:
    two_forgers: float = 0.0
    """Seconds during which two regions were permitted to forge at once."""
    no_forger: float = 0.0
    """Seconds during which no region was."""
    longest_gap: float = 0.0
    """The longest stretch with no forger."""

    def rounded(self) -> Figures:
        return Figures(
            round(self.two_forgers, 1), round(self.no_forger, 1), round(self.longest_gap, 1)
        )


class World:
    def __init__(self, *regions: tuple[str, int]) -> None:
        self.api = Api()
        self.clock = Clock()
        self.regions = {n: Region(self.api, self.clock, n, p) for n, p in regions}
        for r in self.regions.values():
            r.on_reconcile = self._mark
        self.reasons: list[str] = []
        self._figures: Figures | None = None
        self._marked = self.clock.now
        self._forging: list[str] = []
        self._gap = 0.0
        self._check = False

    def __getitem__(self, name: str) -> Region:
        return self.regions[name]

    def tick(self, cycles: int = 1) -> None:
        """Lock-step rounds: every region runs one cycle, then 2 s pass."""
        for _ in range(cycles):
            for r in self.regions.values():
                self.reasons.append(r.c.step())
                r.reconcile()
                self.assert_at_most_one_forger()
            self.clock.now += RETRY_PERIOD

    def elect(self, limit: int = 20) -> str:
        """Lock-step rounds until a region forges (the first election waits a lease duration:
        a pool Lease that was never created is no evidence that nobody forges)."""
        for _ in range(limit):
            self.tick()
            forger = self.forger()
            if forger is not None:
                return forger
        raise AssertionError(f"nobody forges after {limit} rounds: {self.reasons[-4:]}")

    def _mark(self) -> None:
        """Count the time since the last mark with the forgers as they were, then look again.
        Called at every reconcile (a permit change) and at every sample of :meth:`run`."""
        f = self._figures
        if f is None:
            return
        elapsed = self.clock.now - self._marked
        if elapsed > 0:
            if len(self._forging) > 1:
                f.two_forgers += elapsed
            if not self._forging:
                self._gap += elapsed
                f.no_forger += elapsed
                f.longest_gap = max(f.longest_gap, self._gap)
            else:
                self._gap = 0.0
        self._marked = self.clock.now
        self._forging = self.forgers()
        if self._check:
            assert len(self._forging) <= 1, (self._forging, self.reasons[-4:])

    def run(self, seconds: float, *, step: float = 0.1, check: bool = False) -> Figures:
        """Every region cycles on its own retry period (a cycle starts a retry period after the
        previous one started, as ``ClusterCoordinator.run`` does); forgers are looked at at
        every permit change and every ``step`` seconds of simulated time (a permit also lapses
        by itself at its deadline). ``check`` asserts at most one forger throughout."""
        self._figures, self._check = Figures(), check
        self._marked, self._forging, self._gap = self.clock.now, self.forgers(), 0.0
        end = self.clock.now + seconds
        while self.clock.now < end:
            for r in self.regions.values():
                if self.clock.now >= r.next_cycle:
                    started = self.clock.now
                    self.reasons.append(r.c.step())
                    r.reconcile()
                    r.next_cycle = max(started + RETRY_PERIOD, self.clock.now)
            self._mark()
            self.clock.now += step
        self._mark()
        figures, self._figures = self._figures, None
        return figures.rounded()

    def forgers(self) -> list[str]:
        return [n for n, r in self.regions.items() if r.c.permit().granted]

    def assert_at_most_one_forger(self) -> None:
        forging = self.forgers()
        assert len(forging) <= 1, forging

    def forger(self) -> str | None:
        forging = self.forgers()
        return forging[0] if forging else None

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.api.objects[name].get("status") or {})
