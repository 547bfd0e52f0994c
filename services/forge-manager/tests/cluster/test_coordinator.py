"""The coordination loop of several regions against one in-memory coordination API.

Fakes sit at the project's own seams (the resource store, the heartbeat store, the Lease
backend); the policy, the pool-wide Lease bookkeeping, liveness and health counting are real.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from forge_manager.cluster.coordinator import ClusterCoordinator
from forge_manager.cluster.health_check import HealthChecker
from forge_manager.cluster.model import holder_identity
from forge_manager.cluster.pool_lease import PoolLease
from forge_manager.cluster.resource import (
    CoordinationError,
    ResourceConflict,
    ResourceNotFound,
    seed_body,
)
from forge_manager.cluster.settings import load_cluster_settings
from forge_manager.lease import LeaseError, LeaseLost, LeaseRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)


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

    def check(self) -> None:
        if self.down:
            raise CoordinationError("ConnectionRefusedError: connection refused")


class Store:
    def __init__(self, api: Api) -> None:
        self.api = api

    def list(self) -> list[dict[str, Any]]:
        self.api.check()
        if self.api.crd_missing:
            raise ResourceNotFound("HTTP 404 Not Found")
        return copy.deepcopy(list(self.api.objects.values()))

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        self.api.check()
        obj = copy.deepcopy(body)
        obj["metadata"].update(resourceVersion=str(next(self.api.rv)), generation=1)
        self.api.objects[obj["metadata"]["name"]] = obj
        return copy.deepcopy(obj)

    def replace_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        self.api.check()
        name = obj["metadata"]["name"]
        stored = self.api.objects[name]
        if stored["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise ResourceConflict("HTTP 409 Conflict")
        stored["status"] = copy.deepcopy(status)
        stored["metadata"]["resourceVersion"] = str(next(self.api.rv))
        return copy.deepcopy(stored)


class Beats:
    def __init__(self, api: Api) -> None:
        self.api = api

    def list(self) -> dict[str, str]:
        self.api.check()
        return dict(self.api.heartbeats)

    def beat(self, region: str, pod: str) -> None:
        self.api.check()
        self.api.heartbeats[region] = str(next(self.api.rv))


class Lease:
    def __init__(self, api: Api, identity: str) -> None:
        self.api, self.identity = api, identity
        self.stamps = itertools.count()

    def read(self) -> LeaseRecord | None:
        if self.api.down:
            raise LeaseError("connection refused")
        return self.api.lease

    def _write(self, current: LeaseRecord | None, holder: str | None) -> LeaseRecord:
        if self.api.down:
            raise LeaseError("connection refused")
        if (current.resource_version if current else None) != (
            self.api.lease.resource_version if self.api.lease else None
        ):
            raise LeaseLost("409")
        self.api.lease = LeaseRecord(holder, str(next(self.api.rv)), 15, "x", 0)
        return self.api.lease

    def acquire(self, current: LeaseRecord | None, stamp: str) -> LeaseRecord:
        return self._write(current, self.identity)

    def renew(self, current: LeaseRecord, stamp: str) -> LeaseRecord:
        return self._write(current, self.identity)

    def release(self, current: LeaseRecord) -> LeaseRecord:
        return self._write(current, None)

    def new_renew_stamp(self) -> str:
        return str(next(self.stamps))


class Region:
    def __init__(self, api: Api, clock: Clock, name: str, priority: int) -> None:
        self.settings = load_cluster_settings(
            {
                "ENABLE_CLUSTER_MANAGEMENT": "true",
                "CLUSTER_NAME": name,
                "CLUSTER_PRIORITY": str(priority),
                "NAMESPACE": "cardano",
                "HEALTH_CHECK_ENDPOINT": "http://127.0.0.1:9/health",  # never probed here
                "CLUSTER_HEARTBEAT_INTERVAL": "2",
                "CLUSTER_STALE_AFTER": "10",
            }
        )
        self.leader = True
        self.forging = False
        self.reconciles = 0
        self.settled: list[float] = []
        self.health = HealthChecker(self.settings.health_check)
        pool = PoolLease(
            Lease(api, holder_identity(name, "bp-0")),
            identity=holder_identity(name, "bp-0"),
            lease_duration=15,
            renew_deadline=10,
            clock=clock,
        )
        self.c = ClusterCoordinator(
            self.settings,
            pod="bp-0",
            renew_deadline=10,
            retry_period=2,
            store=Store(api),
            heartbeats=Beats(api),
            pool=pool,
            health=self.health,
            seed=seed_body(self.settings),
            local_leader=lambda: self.leader,
            reconcile=self.reconcile,
            clock=clock,
            wall=lambda: T0,
            settle=self.settled.append,
        )

    def reconcile(self) -> tuple[bool, str]:
        """The manager's side: forge exactly while permitted."""
        self.reconciles += 1
        self.forging = self.c.permit().granted
        return (not self.forging, "")

    def fail(self, n: int) -> None:
        for _ in range(n):
            self.health.tracker.record(False, "HTTP 503", T0)

    def succeed(self, n: int) -> None:
        for _ in range(n):
            self.health.tracker.record(True, "HTTP 200", T0)


class World:
    def __init__(self, *regions: tuple[str, int]) -> None:
        self.api = Api()
        self.clock = Clock()
        self.regions = {n: Region(self.api, self.clock, n, p) for n, p in regions}
        self.reasons: list[str] = []

    def tick(self, cycles: int = 1) -> None:
        for _ in range(cycles):
            for r in self.regions.values():
                self.reasons.append(r.c.step())
                r.reconcile()
                self.assert_at_most_one_forger()
            self.clock.now += 2.0

    def assert_at_most_one_forger(self) -> None:
        forging = [n for n, r in self.regions.items() if r.c.permit().granted]
        assert len(forging) <= 1, forging

    def forger(self) -> str | None:
        forging = [n for n, r in self.regions.items() if r.c.permit().granted]
        return forging[0] if forging else None

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.api.objects[name].get("status") or {})


def test_normal_operation_the_lowest_priority_forges_and_statuses_say_so() -> None:
    w = World(("east", 1), ("west", 2), ("eu", 3))
    w.tick(4)
    assert w.forger() == "east"
    assert w.regions["east"].forging
    assert w.api.lease is not None and w.api.lease.holder == "east/bp-0"
    east, west = w.status("east"), w.status("west")
    assert (east["effectivePriority"], east["forgingEnabled"], east["activeLeader"]) == (
        1,
        True,
        "bp-0",
    )
    assert (west["effectivePriority"], west["forgingEnabled"]) == (2, False)
    assert east["conditions"][0]["reason"] == "HoldingPoolLease"
    assert east["healthStatus"]["healthy"] is True
    assert w.api.objects["east"]["spec"] == {
        "region": "east",
        "priority": 1,
        "forgeState": "Priority-based",
        "healthCheck": {
            "enabled": True,
            "endpoint": "http://127.0.0.1:9/health",
            "interval": "30s",
            "timeout": "10s",
            "failureThreshold": 3,
        },
    }


def test_degradation_hands_over_and_recovery_fails_back() -> None:
    w = World(("east", 1), ("west", 2))
    w.tick(4)
    assert w.forger() == "east"
    w.regions["east"].fail(2)
    w.tick(3)
    assert w.forger() == "east"  # below the threshold nothing moves
    w.regions["east"].fail(1)
    w.tick(3)
    assert w.forger() == "west"
    assert w.status("east")["effectivePriority"] == 101
    assert w.status("east")["healthStatus"]["healthy"] is False
    assert any("handing over to region west" in r for r in w.reasons)
    assert w.regions["east"].settled == [0.5]  # the node got time to act before the release
    for remaining in (2, 1):
        w.regions["east"].succeed(1)
        w.tick(3)
        assert w.forger() == "west", remaining  # still demoted until the count is back at 0
        assert w.status("east")["healthStatus"]["consecutiveFailures"] == remaining
    w.regions["east"].succeed(1)
    w.tick(3)
    assert w.forger() == "east"
    assert w.status("east")["effectivePriority"] == 1


def test_handover_needs_no_lease_expiry() -> None:
    w = World(("east", 1), ("west", 2))
    w.tick(4)
    w.regions["east"].fail(3)
    w.tick(1)  # east hands over in this cycle, west takes it in the same round
    assert w.forger() == "west"


def test_a_dead_holder_region_is_replaced_after_expiry() -> None:
    w = World(("east", 1), ("west", 2))
    w.tick(4)
    del w.regions["east"]  # east's pods vanish: no release, no heartbeat
    w.tick(3)
    assert w.forger() is None  # the lease has not expired in west's observation
    w.tick(6)
    assert w.forger() == "west"


def test_a_follower_never_writes_and_never_forges() -> None:
    w = World(("east", 1))
    w.regions["east"].leader = False
    w.tick(3)
    assert w.forger() is None
    assert w.api.objects == {} and w.api.heartbeats == {} and w.api.lease is None


def test_missing_crd_never_forges() -> None:
    w = World(("east", 1))
    w.api.crd_missing = True
    w.tick(3)
    assert w.forger() is None and w.api.lease is None
    assert w.reasons[-1] == (
        "not forging: CardanoForgeCluster 'east' unavailable (HTTP 404 Not Found (is the "
        "CardanoForgeCluster CRD installed?))"
    )


def test_api_outage_the_holder_stops_within_the_renew_deadline() -> None:
    w = World(("east", 1))
    w.tick(3)
    assert w.forger() == "east"
    w.api.down = True
    w.tick(3)  # 8 s after its last renewal was sent: within the 10 s renew deadline
    assert w.forger() == "east"
    w.tick(1)
    assert w.forger() is None  # the permit turned false by itself at the deadline
    w.tick(1)
    assert not w.regions["east"].forging
    assert any("pool lease not renewed within the renew deadline" in r for r in w.reasons)


def test_operator_disables_the_forging_region() -> None:
    w = World(("east", 1), ("west", 2))
    w.tick(4)
    obj = w.api.objects["east"]
    obj["spec"]["forgeState"] = "Disabled"
    obj["metadata"]["generation"] = 2
    obj["metadata"]["resourceVersion"] = str(next(w.api.rv))
    w.tick(2)
    assert w.forger() == "west"
    assert w.status("east")["effectiveState"] == "Disabled"
    assert w.status("east")["observedGeneration"] == 2


def test_losing_local_leadership_releases_the_pool_lease() -> None:
    w = World(("east", 1), ("west", 2))
    w.tick(4)
    w.regions["east"].leader = False
    w.tick(1)
    assert w.api.lease is not None and w.api.lease.holder in (None, "west/bp-0")
    assert not w.regions["east"].c.permit().granted


def test_permit_carries_the_pool_lease_deadline_for_forge_guard() -> None:
    w = World(("east", 1), ("west", 2))
    w.tick(4)
    east, west = w.regions["east"], w.regions["west"]
    permit = east.c.permit()
    assert permit.granted
    assert permit.until is not None and permit.until == east.c.pool.leading_until()
    assert not west.c.permit().granted and west.c.permit().until is None


def test_wake_runs_the_next_cycle_without_waiting_out_the_retry_period() -> None:
    w = World(("east", 1))
    east = w.regions["east"].c
    east._retry_period = 3600.0  # a cycle now comes only from a wake
    cycles: list[str] = []
    step = east.step

    def counting_step() -> str:
        cycles.append(step())
        return cycles[-1]

    east.step = counting_step  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=east.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not cycles and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(cycles) == 1
        east.wake()
        while len(cycles) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(cycles) == 2
    finally:
        stop.set()
        east.wake()
        thread.join(10)
    assert not thread.is_alive()
