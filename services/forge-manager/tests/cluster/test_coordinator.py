"""The coordination loop of several regions against one in-memory coordination API.

The doubles (:mod:`.doubles`) sit at the project's own seams; the policy, the
pool-wide Lease bookkeeping, liveness and health counting are real.
"""

from __future__ import annotations

import threading
import time

import pytest

from .doubles import World


def test_normal_operation_the_lowest_priority_forges_and_statuses_say_so() -> None:
    w = World(("east", 1), ("west", 2), ("eu", 3))
    w.elect()
    w.tick()
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
    w.elect()
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
    w.elect()
    w.regions["east"].fail(3)
    w.tick(1)  # east hands over in this cycle, west takes it in the same round
    assert w.forger() == "west"


def test_a_dead_holder_region_is_replaced_after_expiry() -> None:
    w = World(("east", 1), ("west", 2))
    w.elect()
    del w.regions["east"]  # east's pods vanish: no release, no heartbeat
    w.tick(3)
    assert w.forger() is None  # the lease has not expired in west's observation
    w.tick(6)
    assert w.forger() == "west"


def test_the_first_election_waits_a_lease_duration() -> None:
    """A pool Lease that was never created is no evidence that nobody forges (it may have been
    deleted a moment ago): the local leader creates it vacant and waits for that record."""
    w = World(("east", 1))
    w.tick(1)
    assert "the pool lease does not exist" in w.reasons[-1]
    assert w.api.lease is not None and w.api.lease.holder is None
    w.tick(7)  # cycles at 0, 2, ... 14 s after it was created
    assert w.forger() is None
    assert "the pool lease is vacant but was not released" in w.reasons[-1]
    w.tick(1)
    assert w.forger() == "east"


def test_a_follower_never_writes_and_never_forges() -> None:
    w = World(("east", 1))
    w.regions["east"].leader = False
    w.tick(3)
    assert w.forger() is None
    assert w.api.objects == {} and w.api.heartbeats == {} and w.api.lease is None  # no vacant one


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
    w.elect()
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
    w.elect()
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
    w.elect()
    w.regions["east"].leader = False
    w.tick(1)
    assert w.api.lease is not None and w.api.lease.holder in (None, "west/bp-0")
    assert not w.regions["east"].c.permit().granted


def test_permit_carries_the_pool_lease_deadline_for_forge_guard() -> None:
    w = World(("east", 1), ("west", 2))
    w.elect()
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


def test_pool_transitions_are_events_on_the_region_once_each() -> None:
    w = World(("east", 1), ("west", 2))
    events: dict[str, list[tuple[str, str, str]]] = {"east": [], "west": []}
    for name, region in w.regions.items():
        region.c.emit = lambda reason, message, kind, name=name: events[name].append(
            (reason, message, kind)
        )
    w.elect()
    w.tick(3)
    assert [e[0] for e in events["east"]] == ["AcquiredPoolLease"]
    assert events["east"][0][1].startswith("bp-0: ") and events["east"][0][2] == "Normal"
    assert events["west"] == []
    w.regions["east"].fail(3)
    w.tick(3)
    assert w.forger() == "west"
    assert [e[0] for e in events["east"]] == ["AcquiredPoolLease", "DemotedByHealth"]
    assert events["east"][1][2] == "Warning"
    assert [e[0] for e in events["west"]] == ["AcquiredPoolLease"]


def test_a_failing_emit_changes_nothing() -> None:
    def boom(_reason: str, _message: str, _kind: str) -> None:
        raise RuntimeError("events API down")

    w = World(("east", 1), ("west", 2))
    for region in w.regions.values():
        region.c.emit = boom
    w.elect()
    w.tick(3)
    assert w.forger() == "east"
    w.regions["east"].fail(3)
    w.tick(3)
    assert w.forger() == "west"


def test_shutdown_releases_the_pool_lease_without_waiting_again_for_a_node_that_had_its_time() -> (
    None
):
    w = World(("east", 1), ("west", 2))
    w.elect()
    east = w.regions["east"]
    # The manager's shutdown: node signalled to stop, its budget waited, local Lease released.
    east.leader, east.forging, east.disabled_at = False, False, w.clock()
    w.clock.now += 0.5
    assert east.c.shutdown() == "released the pool lease"
    assert east.settled == []
    assert w.api.lease is not None and w.api.lease.holder is None


def test_shutdown_waits_only_what_is_left_of_the_nodes_time() -> None:
    w = World(("east", 1), ("west", 2))
    w.elect()
    east = w.regions["east"]
    east.leader, east.forging, east.disabled_at = False, False, w.clock()
    w.clock.now += 0.2
    assert east.c.shutdown() == "released the pool lease"
    assert east.settled == [pytest.approx(0.3)]


def test_a_hand_over_gives_the_node_its_whole_time_after_the_disabling_sighup() -> None:
    w = World(("east", 1), ("west", 2))
    w.elect()
    w.regions["east"].fail(3)
    w.tick(3)
    assert w.forger() == "west"
    assert w.regions["east"].settled == [0.5]
