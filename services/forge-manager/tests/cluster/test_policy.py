"""The cluster-wide decision core: a view in, an action and a reason string out."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from forge_manager.cluster.model import parse_region
from forge_manager.cluster.policy import (
    ClusterAction,
    ClusterDecision,
    ClusterView,
    HealthView,
    PeerView,
    PoolLeaseView,
    decide,
    wake_at,
)

NOW = 1000.0
WALL = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
STALE = 20.0
FREE = PoolLeaseView(holder=None, expired=True, mine=False, leading=False)
HELD_BY_ME = PoolLeaseView(holder="east/bp-0", expired=False, mine=True, leading=True)


def cfc(
    name: str,
    priority: int = 1,
    state: str = "Priority-based",
    *,
    status: dict[str, Any] | None = None,
    generation: int = 1,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "generation": generation, "resourceVersion": "7"},
        "spec": {"region": name, "priority": priority, "forgeState": state, **spec},
        "status": status or {},
    }


def published(
    state: str = "Priority-based", priority: int = 2, generation: int = 1
) -> dict[str, Any]:
    return {
        "effectiveState": state,
        "effectivePriority": priority,
        "observedGeneration": generation,
        "activeLeader": "bp-0",
    }


def peer(obj: dict[str, Any], *, age: float = 1.0, confirmed: bool = True) -> PeerView:
    return PeerView(parse_region(obj), NOW - age, confirmed)


def view(**kw: Any) -> ClusterView:
    base = ClusterView(
        now=NOW,
        now_wall=WALL,
        region="east",
        pod="bp-0",
        local_leader=True,
        own=parse_region(cfc("east", 1)),
        own_error=None,
        peers=(),
        read_ok=True,
        read_error=None,
        view_age=0.0,
        max_view_age=10.0,
        stale_after=STALE,
        health=HealthView(0, 3, False),
        lease=FREE,
    )
    return dataclasses.replace(base, **kw)


def west(priority: int = 2, state: str = "Priority-based", **kw: Any) -> PeerView:
    return peer(cfc("west", priority, state, status=published(state, priority)), **kw)


# ---- who takes part ------------------------------------------------------------------------------
def test_a_follower_stands_by() -> None:
    d = decide(view(local_leader=False))
    assert d == ClusterDecision(
        ClusterAction.STAND_BY, "not the local leader", ineligible="NotLocalLeader"
    )
    assert not d.may_forge


def test_a_follower_that_still_holds_the_pool_lease_releases_it() -> None:
    d = decide(view(local_leader=False, lease=HELD_BY_ME))
    assert d.action is ClusterAction.STEP_DOWN
    assert d.reason == "not the local leader; releasing the pool lease"
    assert d.releases and not d.may_forge


# ---- fail closed ---------------------------------------------------------------------------------
def test_missing_own_resource_never_forges_even_with_a_free_lease() -> None:
    d = decide(view(own=None, own_error="not found"))
    assert d.action is ClusterAction.STAND_BY
    assert d.reason == "not forging: CardanoForgeCluster 'east' unavailable (not found)"


def test_missing_own_resource_makes_the_holder_step_down() -> None:
    d = decide(view(own=None, own_error="not found", lease=HELD_BY_ME))
    assert d.action is ClusterAction.STEP_DOWN


def test_invalid_own_spec_never_forges() -> None:
    bad = cfc("east", 1, "Sometimes")
    d = decide(view(own=parse_region(bad)))
    assert d.action is ClusterAction.STAND_BY
    assert d.reason == (
        "not forging: CardanoForgeCluster 'east' is invalid: spec.forgeState must be one of "
        "Enabled, Disabled, Priority-based, got 'Sometimes'"
    )


def test_own_spec_without_priority_is_invalid() -> None:
    obj = cfc("east")
    del obj["spec"]["priority"]
    assert decide(view(own=parse_region(obj))).reason.endswith("spec.priority is missing")


def test_failed_read_never_acquires() -> None:
    d = decide(view(read_ok=False, read_error="HTTP 503", view_age=2.0))
    assert d.action is ClusterAction.STAND_BY
    assert d.reason == ("not forging: cannot read the CardanoForgeClusters (HTTP 503) for 2.0 s")


def test_holder_rides_out_a_failed_read_within_the_renew_deadline() -> None:
    d = decide(view(read_ok=False, read_error="timeout", view_age=4.0, lease=HELD_BY_ME))
    assert d.action is ClusterAction.KEEP
    assert d.reason == (
        "holding the pool lease as region east (Priority-based, effective priority 1) "
        "(resources unreadable for 4.0 s)"
    )


def test_holder_steps_down_when_the_view_is_older_than_the_renew_deadline() -> None:
    d = decide(view(read_ok=False, read_error="timeout", view_age=10.5, lease=HELD_BY_ME))
    assert d.action is ClusterAction.STEP_DOWN
    assert d.reason == (
        "not forging: cannot read the CardanoForgeClusters (timeout) for 10.5 s; "
        "releasing the pool lease"
    )


def test_unreadable_pool_lease_never_acquires() -> None:
    lease = dataclasses.replace(FREE, error="HTTP 500")
    d = decide(view(lease=lease))
    assert d.action is ClusterAction.STAND_BY
    assert d.reason == "not forging: cannot read the pool lease (HTTP 500)"


def test_holder_past_its_renew_deadline_steps_down() -> None:
    lease = dataclasses.replace(HELD_BY_ME, leading=False)
    d = decide(view(lease=lease))
    assert d.action is ClusterAction.STEP_DOWN
    assert d.reason == (
        "pool lease not renewed within the renew deadline; releasing the pool lease"
    )


# ---- forge states --------------------------------------------------------------------------------
def test_disabled_never_forges() -> None:
    d = decide(view(own=parse_region(cfc("east", 1, "Disabled"))))
    assert d.action is ClusterAction.STAND_BY
    assert d.reason == "region east is Disabled (spec)"


def test_disabled_holder_steps_down() -> None:
    d = decide(view(own=parse_region(cfc("east", 1, "Disabled")), lease=HELD_BY_ME))
    assert d.action is ClusterAction.STEP_DOWN
    assert d.reason == "region east is Disabled (spec); releasing the pool lease"


def override(state: str | None = None, priority: int | None = None, hours: float = 1) -> Any:
    ov: dict[str, Any] = {
        "reason": "kernel upgrade",
        "expiresAt": _iso(WALL + timedelta(hours=hours)),
    }
    if state:
        ov["forgeState"] = state
    if priority:
        ov["priority"] = priority
    return ov


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_an_active_override_disables() -> None:
    own = parse_region(cfc("east", 1, override=override("Disabled")))
    d = decide(view(own=own, lease=HELD_BY_ME))
    assert d.action is ClusterAction.STEP_DOWN
    assert d.reason == (
        "region east is Disabled (override 'kernel upgrade' until 2026-01-01T13:00:00Z); "
        "releasing the pool lease"
    )


def test_an_expired_override_is_ignored() -> None:
    own = parse_region(cfc("east", 1, override=override("Disabled", hours=-1)))
    d = decide(view(own=own))
    assert d.action is ClusterAction.ACQUIRE
    assert d.effective is not None
    assert d.effective.source == "spec (override expired at 2026-01-01T11:00:00Z)"


def test_an_override_priority_counts() -> None:
    own = parse_region(cfc("east", 5, override=override(priority=1)))
    d = decide(view(own=own, peers=(west(2),), lease=HELD_BY_ME))
    assert d.action is ClusterAction.KEEP
    assert d.effective is not None and d.effective.priority == 1


# ---- Priority-based ------------------------------------------------------------------------------
def test_best_region_acquires_a_free_lease() -> None:
    d = decide(view(peers=(west(2),)))
    assert d.action is ClusterAction.ACQUIRE
    assert d.reason == (
        "acquiring the free pool lease: region east (Priority-based, effective priority 1) "
        "is the best candidate"
    )
    assert d.may_forge


def test_worse_region_defers_to_a_live_better_one() -> None:
    d = decide(view(own=parse_region(cfc("east", 3)), peers=(west(2),)))
    assert d.action is ClusterAction.STAND_BY
    assert d.reason == (
        "standing by: pool lease is free but region west (Priority-based, effective priority 2) "
        "ranks before east (Priority-based, effective priority 3)"
    )


def test_defers_to_a_region_seen_once_but_not_yet_confirmed() -> None:
    d = decide(view(own=parse_region(cfc("east", 3)), peers=(west(2, confirmed=False),)))
    assert d.action is ClusterAction.STAND_BY


def test_a_dead_region_blocks_nobody_after_stale_after() -> None:
    d = decide(view(own=parse_region(cfc("east", 3)), peers=(west(2, age=STALE),)))
    assert d.action is ClusterAction.ACQUIRE


def test_a_region_without_heartbeat_is_not_a_candidate() -> None:
    never = PeerView(
        parse_region(cfc("west", 1, status=published(priority=1))), float("-inf"), False
    )
    assert decide(view(own=parse_region(cfc("east", 3)), peers=(never,))).action is (
        ClusterAction.ACQUIRE
    )


@pytest.mark.parametrize(
    "obj",
    [
        cfc("west", 1, status=published(priority=1, generation=1), generation=2),
        cfc("west", 1, "Disabled", status=published("Disabled", 1)),
        cfc("west", 1, status={}),
        cfc("west", 1, status={**published(priority=1), "effectivePriority": "1"}),
        {**cfc("west", 1, status=published(priority=1)), "spec": {"priority": "x"}},
    ],
    ids=["status-of-old-generation", "disabled", "no-status", "garbled-status", "bad-spec"],
)
def test_regions_that_are_no_candidate(obj: dict[str, Any]) -> None:
    d = decide(view(own=parse_region(cfc("east", 3)), peers=(peer(obj),)))
    assert d.action is ClusterAction.ACQUIRE


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"own": None, "own_error": "not found"}, "RegionUnavailable"),
        ({"own": parse_region({"metadata": {"name": "east"}, "spec": {}})}, "RegionInvalid"),
        ({"read_ok": False, "read_error": "HTTP 403 Forbidden", "view_age": 11.0},
         "CannotReadRegions"),
        ({"lease": dataclasses.replace(FREE, error="HTTP 500")}, "PoolLeaseUnreadable"),
        ({"lease": dataclasses.replace(HELD_BY_ME, leading=False)}, "PoolLeaseNotRenewed"),
        ({"own": parse_region(cfc("east", 1, "Disabled"))}, "Disabled"),
    ],
)  # fmt: skip
def test_a_fail_closed_stop_marks_the_region_ineligible(kw: dict[str, Any], code: str) -> None:
    d = decide(view(**kw))
    assert not d.may_forge
    assert d.ineligible == code


@pytest.mark.parametrize(
    "lease", [FREE, HELD_BY_ME, PoolLeaseView("west/bp-0", False, False, False)]
)
def test_competing_holding_and_waiting_regions_are_eligible(lease: PoolLeaseView) -> None:
    assert decide(view(lease=lease, peers=(west(2),))).ineligible is None


def test_a_region_that_says_it_is_not_eligible_is_no_candidate() -> None:
    """A better region that heartbeats but cannot act (it lost list on the regions)."""
    status = {
        **published(priority=1),
        "conditions": [{"type": "Eligible", "status": "False", "reason": "CannotReadRegions"}],
    }
    d = decide(view(own=parse_region(cfc("east", 2)), peers=(peer(cfc("west", 1, status=status)),)))
    assert d.action is ClusterAction.ACQUIRE


def test_a_holder_does_not_hand_over_to_a_region_that_is_not_eligible() -> None:
    status = {
        **published(priority=1),
        "conditions": [{"type": "Eligible", "status": "False", "reason": "CannotReadRegions"}],
    }
    d = decide(
        view(own=parse_region(cfc("east", 2)), lease=HELD_BY_ME,
             peers=(peer(cfc("west", 1, status=status)),))
    )  # fmt: skip
    assert d.action is ClusterAction.KEEP


def test_lease_held_by_another_region_is_waited_for() -> None:
    lease = PoolLeaseView(holder="west/bp-1", expired=False, mine=False, leading=False)
    d = decide(view(peers=(west(2),), lease=lease))
    assert d.action is ClusterAction.STAND_BY
    assert d.reason == "standing by: region west holds the pool lease (west/bp-1)"


def test_a_missing_lease_is_waited_for_like_an_unchanged_record() -> None:
    lease = PoolLeaseView(
        holder=None, expired=False, mine=False, leading=False, absent=True, duration=15
    )
    d = decide(view(lease=lease))
    assert d.action is ClusterAction.STAND_BY
    assert d.reason == (
        "standing by: the pool lease does not exist (deleted or not yet created); creating it "
        "vacant and taking it only once that record has stayed unchanged for 15 s, in case a "
        "holder that did not see the deletion still forges"
    )


def test_a_lease_cleared_by_someone_else_is_waited_for_like_an_unchanged_record() -> None:
    lease = PoolLeaseView(holder=None, expired=False, mine=False, leading=False, duration=8)
    d = decide(view(lease=lease))
    assert d.action is ClusterAction.STAND_BY
    assert d.reason.startswith(
        "standing by: the pool lease is vacant but was not released by the holder last seen "
        "(cleared by someone else, or created vacant after a deletion); taking it only once it "
        "has stayed unchanged for 8 s"
    )


def test_a_missing_lease_unchanged_for_its_duration_is_created() -> None:
    lease = PoolLeaseView(holder=None, expired=True, mine=False, leading=False, absent=True)
    d = decide(view(lease=lease))
    assert d.action is ClusterAction.ACQUIRE
    assert d.reason.startswith("acquiring the missing pool lease")


def test_a_lease_released_by_its_holder_is_taken_at_once() -> None:
    lease = PoolLeaseView(holder=None, expired=True, mine=False, leading=False, released=True)
    d = decide(view(lease=lease))
    assert d.action is ClusterAction.ACQUIRE
    assert d.reason.startswith("acquiring the free pool lease")


def test_expired_lease_of_a_dead_region_is_taken() -> None:
    lease = PoolLeaseView(holder="west/bp-1", expired=True, mine=False, leading=False)
    d = decide(view(own=parse_region(cfc("east", 3)), peers=(west(2, age=30),), lease=lease))
    assert d.action is ClusterAction.ACQUIRE
    assert d.reason.startswith("acquiring the expired pool lease")


def test_expired_lease_of_own_region_previous_leader_is_taken_by_the_new_leader() -> None:
    lease = PoolLeaseView(holder="east/bp-0", expired=True, mine=False, leading=False)
    d = decide(view(pod="bp-1", peers=(west(2),), lease=lease))
    assert d.action is ClusterAction.ACQUIRE


def test_unexpired_lease_of_own_region_previous_leader_is_waited_for() -> None:
    lease = PoolLeaseView(holder="east/bp-0", expired=False, mine=False, leading=False)
    d = decide(view(pod="bp-1", lease=lease))
    assert d.reason == "standing by: region east holds the pool lease (east/bp-0)"


def test_holder_keeps_while_best() -> None:
    d = decide(view(peers=(west(2),), lease=HELD_BY_ME))
    assert d.action is ClusterAction.KEEP
    assert (
        d.reason == "holding the pool lease as region east (Priority-based, effective priority 1)"
    )


def test_holder_at_the_failure_threshold_hands_over_to_a_healthy_region() -> None:
    d = decide(view(peers=(west(2),), lease=HELD_BY_ME, health=HealthView(3, 3, True)))
    assert d.action is ClusterAction.HAND_OVER
    assert d.hand_over_to == "west"
    assert d.reason == (
        "handing over to region west (Priority-based, effective priority 2): it outranks "
        "east (Priority-based, effective priority 101)"
    )
    assert d.releases and not d.may_forge
    assert d.effective is not None and d.effective.demoted


def test_below_the_threshold_nothing_changes() -> None:
    d = decide(view(peers=(west(2),), lease=HELD_BY_ME, health=HealthView(2, 3, False)))
    assert d.action is ClusterAction.KEEP


def test_a_demoted_region_still_forges_when_it_is_the_only_one() -> None:
    d = decide(view(peers=(west(2, age=STALE + 1),), health=HealthView(3, 3, True)))
    assert d.action is ClusterAction.ACQUIRE
    assert "effective priority 101" in d.reason


def test_failback_holder_hands_back_to_the_recovered_primary() -> None:
    me = parse_region(cfc("west", 2))
    east = peer(cfc("east", 1, status=published(priority=1)))
    lease = PoolLeaseView(holder="west/bp-0", expired=False, mine=True, leading=True)
    d = decide(view(region="west", own=me, peers=(east,), lease=lease))
    assert d.action is ClusterAction.HAND_OVER
    assert d.hand_over_to == "east"


def test_no_hand_over_to_an_unconfirmed_region() -> None:
    """A region seen once may have died before we started watching: never give it the lease."""
    d = decide(view(own=parse_region(cfc("east", 3)), peers=(west(2, confirmed=False),),
                    lease=HELD_BY_ME))  # fmt: skip
    assert d.action is ClusterAction.KEEP


def test_no_hand_over_to_a_stale_region() -> None:
    d = decide(
        view(own=parse_region(cfc("east", 3)), peers=(west(2, age=STALE),), lease=HELD_BY_ME)
    )
    assert d.action is ClusterAction.KEEP


def test_equal_priority_never_preempts() -> None:
    d = decide(view(own=parse_region(cfc("east", 2)), peers=(west(2),), lease=HELD_BY_ME))
    assert d.action is ClusterAction.KEEP


def test_equal_priority_free_lease_goes_to_the_first_name() -> None:
    assert decide(view(own=parse_region(cfc("east", 2)), peers=(west(2),))).action is (
        ClusterAction.ACQUIRE
    )
    me = parse_region(cfc("west", 2))
    east = peer(cfc("east", 2, status=published(priority=2)))
    assert decide(view(region="west", own=me, peers=(east,))).action is ClusterAction.STAND_BY


def test_hand_over_goes_to_the_best_of_several() -> None:
    south = peer(cfc("south", 1, status=published(priority=1)))
    d = decide(view(own=parse_region(cfc("east", 3)), peers=(west(2), south), lease=HELD_BY_ME))
    assert d.hand_over_to == "south"


# ---- Enabled -------------------------------------------------------------------------------------
def test_enabled_region_takes_over_from_a_priority_based_holder() -> None:
    d = decide(view(peers=(west(50, "Enabled"),), lease=HELD_BY_ME))
    assert d.action is ClusterAction.HAND_OVER
    assert d.reason == (
        "handing over to region west (Enabled, effective priority 50): it outranks "
        "east (Priority-based, effective priority 1)"
    )


def test_enabled_holder_is_never_preempted() -> None:
    own = parse_region(cfc("east", 50, "Enabled"))
    d = decide(view(own=own, peers=(west(1, "Enabled"), west(1)), lease=HELD_BY_ME))
    assert d.action is ClusterAction.KEEP
    assert d.reason == "holding the pool lease as region east (Enabled, effective priority 50)"


def test_enabled_ignores_health() -> None:
    own = parse_region(cfc("east", 1, "Enabled"))
    d = decide(view(own=own, peers=(west(2),), lease=HELD_BY_ME, health=HealthView(3, 3, True)))
    assert d.action is ClusterAction.KEEP


def test_enabled_waits_for_the_holder_to_hand_over() -> None:
    """Enabled does not mean 'forge now': only through the pool lease."""
    own = parse_region(cfc("east", 5, "Enabled"))
    lease = PoolLeaseView(holder="west/bp-0", expired=False, mine=False, leading=False)
    assert decide(view(own=own, peers=(west(1),), lease=lease)).action is ClusterAction.STAND_BY


def test_of_two_enabled_regions_a_free_lease_goes_to_the_lower_priority() -> None:
    own = parse_region(cfc("east", 5, "Enabled"))
    d = decide(view(own=own, peers=(west(1, "Enabled"),)))
    assert d.action is ClusterAction.STAND_BY
    assert d.reason.endswith(
        "region west (Enabled, effective priority 1) ranks before east (Enabled, effective "
        "priority 5)"
    )


# ---- no ping-pong --------------------------------------------------------------------------------
def test_health_flapping_below_recovery_does_not_move_the_lease_back() -> None:
    """The old primary, demoted, recovering (2, then 1 failures): still 101, west keeps it."""
    lease = PoolLeaseView(holder="west/bp-0", expired=False, mine=True, leading=True)
    me = parse_region(cfc("west", 2))
    for published_priority in (101, 101, 1):
        east = peer(cfc("east", 1, status=published(priority=published_priority)))
        d = decide(view(region="west", own=me, peers=(east,), lease=lease))
        expected = ClusterAction.KEEP if published_priority == 101 else ClusterAction.HAND_OVER
        assert d.action is expected


def test_after_handing_over_the_old_holder_does_not_grab_the_free_lease_back() -> None:
    """east handed over (demoted, published 101); until west acquires, the lease is free."""
    d = decide(view(peers=(west(2),), health=HealthView(3, 3, True)))
    assert d.action is ClusterAction.STAND_BY
    assert "ranks before east (Priority-based, effective priority 101)" in d.reason


# ---- when to decide again ------------------------------------------------------------------------
def test_the_loop_wakes_when_the_pool_lease_expires_or_a_live_region_goes_stale() -> None:
    held = PoolLeaseView(holder="west/bp-0", expired=False, mine=False, leading=False,
                         expires_at=NOW + 7.0)  # fmt: skip
    assert wake_at(view(lease=held)) == NOW + 7.0
    # A better region that is alive keeps this one waiting until it goes stale.
    assert wake_at(view(lease=held, peers=(west(age=STALE - 3.0),))) == NOW + 3.0
    assert wake_at(view(lease=held, peers=(west(age=STALE + 1.0),))) == NOW + 7.0  # stale
    assert wake_at(view(lease=FREE)) is None  # nothing to wait for: it decides now
    assert wake_at(view(lease=HELD_BY_ME)) is None  # the renew deadline wakes the holder
    assert wake_at(view(lease=held, local_leader=False)) is None
