"""Faults of the coordination API, reproduced with the doubles in simulated time.

Each test drives the regions' loops with :meth:`World.run` and judges the figures it measures
from the regions' permits: seconds with two regions permitted to forge (must be 0) and the
longest stretch with nobody permitted. Times are simulated (the doubles' clock), so the bounds
asserted here are properties of the design, not of the machine.
"""

from __future__ import annotations

import pytest

from .doubles import LEASE_DURATION, RETRY_PERIOD, STALE_AFTER, World

DEMOTION = 0.5
STEP = 0.1


def forging_alone(first: str, second: str) -> World:
    """``first`` forges; ``second`` is running but not yet its region's local leader."""
    w = World((first, 2), (second, 1))
    w[second].leader = False
    w.run(30, check=True)
    assert w.forger() == first
    return w


@pytest.mark.parametrize("fault", ["deleted", "cleared by someone else"])
def test_a_vacated_pool_lease_is_not_taken_while_a_cut_off_holder_may_still_forge(
    fault: str,
) -> None:
    w = forging_alone("east", "west")
    w["east"].faults.cut = True  # east cannot see what happens next; it forges to its deadline
    w["west"].leader = True  # west (priority 1) starts competing
    if fault == "deleted":
        w.api.delete_lease()
    else:
        w.api.clear_holder()
    figures = w.run(60)
    assert figures.two_forgers == 0
    assert w.forger() == "west"
    # West waited a lease duration from when it saw the Lease vacated.
    assert figures.longest_gap <= LEASE_DURATION + RETRY_PERIOD + STEP


def test_a_planned_hand_over_needs_no_lease_expiry() -> None:
    w = World(("east", 1), ("west", 2))
    w.run(30, check=True)
    assert w.forger() == "east"
    w["east"].fail(3)
    figures = w.run(20, check=True)
    assert w.forger() == "west"
    # The release names its holder: west takes it at its next cycle.
    assert figures.longest_gap <= RETRY_PERIOD + DEMOTION + STEP


def test_one_lost_answer_to_a_renew_costs_no_forging() -> None:
    w = World(("east", 1), ("west", 2))
    w.run(30, check=True)
    assert w.forger() == "east"
    w["east"].faults.lose_answers = 1
    figures = w.run(60, check=True)
    assert w.forger() == "east"
    assert figures.no_forger == 0


def test_every_write_slower_than_the_request_timeout_still_forges() -> None:
    """Every pool-lease write is applied but answers after the request timeout (a remote
    coordination API with slow writes); reads are fast."""
    w = World(("east", 1))
    w["east"].faults.write_latency = 1.5
    figures = w.run(90, check=True)
    assert w.forger() == "east"
    # The first election waits a lease duration; afterwards east forges without a break.
    assert figures.no_forger <= LEASE_DURATION + 2 * RETRY_PERIOD


def test_a_better_region_that_cannot_list_the_regions_does_not_block_the_others() -> None:
    """East heartbeats and writes its status but has lost ``list`` on cardanoforgeclusters."""
    w = World(("east", 1), ("west", 2))
    w.run(30, check=True)
    assert w.forger() == "east"
    w["east"].faults.forbidden = {"list"}
    figures = w.run(300, check=True)
    assert w.forger() == "west"
    # East forges on its last view for up to the renew deadline, then releases; west takes the
    # released Lease at its next cycle.
    assert figures.longest_gap <= RETRY_PERIOD + DEMOTION + STEP
    eligible = w["east"].condition("Eligible")
    assert (eligible["status"], eligible["reason"]) == ("False", "CannotReadRegions")


def test_a_better_region_that_can_neither_list_nor_write_its_status_stops_heartbeating() -> None:
    w = World(("east", 1), ("west", 2))
    w.run(30, check=True)
    w["east"].faults.forbidden = {"list", "status"}
    figures = w.run(300, check=True)
    assert w.forger() == "west"
    # West stops deferring once east's heartbeat has been unchanged for CLUSTER_STALE_AFTER.
    assert figures.longest_gap <= STALE_AFTER + 2 * RETRY_PERIOD


def test_no_hand_over_while_the_status_announcing_it_cannot_be_written() -> None:
    w = World(("east", 1), ("west", 2))
    w.run(30, check=True)
    w["east"].faults.forbidden = {"status"}
    w["east"].fail(3)  # east is demoted (+100) and would hand over to west
    beats = w["east"].beats.beats
    figures = w.run(60, check=True)
    assert figures.no_forger == 0
    assert w.forger() == "east"
    assert any("not handing over" in r for r in w.reasons)
    assert w["east"].beats.beats == beats  # its heartbeat no longer vouches for a stale status
    w["east"].faults.forbidden = set()
    figures = w.run(30, check=True)
    assert w.forger() == "west"
    assert figures.longest_gap <= RETRY_PERIOD + DEMOTION + STEP


def test_a_better_region_that_cannot_write_the_pool_lease_does_not_block_the_others() -> None:
    w = World(("east", 1), ("west", 2))
    w["east"].faults.forbidden = {"pool_write"}
    figures = w.run(120, check=True)
    assert w.forger() == "west"
    eligible = w["east"].condition("Eligible")
    assert (eligible["status"], eligible["reason"]) == ("False", "PoolLeaseWriteFailed")
    # The first election waits a lease duration; east's failed acquire is published in the same
    # cycle and west takes the Lease at its next one. Each time east's window ends, west hands
    # back, east fails again and the window doubles (15, 30, 60 s...): short gaps, fewer and
    # fewer.
    assert figures.longest_gap <= LEASE_DURATION + 2 * RETRY_PERIOD
    assert "not a candidate for 30 s" in eligible["message"] or (
        "not a candidate for 60 s" in eligible["message"]
    )
    w["east"].faults.forbidden = set()
    w.run(130, check=True)  # at the end of its window east is a candidate again and takes over
    assert w.forger() == "east"
    assert w["east"].condition("Eligible")["status"] == "True"
