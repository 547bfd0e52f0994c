"""Eligibility, refusals and plans of switchover, pause and resume (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from cardano_forge_cli.contract import (
    CAPABILITIES_ANNOTATION,
    POD_SWITCHOVER,
    REQUEST_ANNOTATION,
    SwitchoverRequest,
)
from cardano_forge_cli.errors import Refused
from cardano_forge_cli.model import PoolView
from cardano_forge_cli.plan import (
    next_region,
    plan_pause,
    plan_pod_switchover,
    plan_region_switchover,
    plan_resume,
)
from cli_builders import NOW, NS, POOL, cfc, facts, later, lease, pod, region, two_regions

LIVE = {"east", "west", "north"}
DAY = 86400.0


def switch(pool: PoolView, target: str, **kw: object) -> object:
    args: dict[str, object] = {"now": NOW, "duration": DAY, "requested_by": "alice", "live": LIVE}
    args.update(kw)
    return plan_region_switchover(pool, target, **args)  # type: ignore[arg-type]


def test_switchover_to_the_standby_region_lowers_it_and_raises_the_holder() -> None:
    plan = plan_region_switchover(
        two_regions(), "west", now=NOW, duration=DAY, requested_by="alice", live=LIVE
    )
    assert plan.from_region == "east" and plan.nothing_to_do is None
    changes = {c.region: c for c in plan.changes}
    assert [c.region for c in plan.changes] == ["west", "east"]  # target first: no moment of a tie
    expires = later(DAY)
    assert changes["west"].override == {
        "priority": 1,
        "reason": "switchover to west by alice",
        "expiresAt": expires,
    }
    assert changes["east"].override == {
        "priority": 2,
        "reason": "switchover to west by alice",
        "expiresAt": expires,
    }
    assert changes["west"].resource_version == "100"  # written against the version read
    assert any("forging moves from east (east-0) to region west" in n for n in plan.notes)
    assert any(
        "the overrides expire and the spec's priorities apply again" in n for n in plan.notes
    )


def test_switching_back_removes_the_earlier_switchovers_overrides() -> None:
    ov = {"reason": "switchover to west by alice", "expiresAt": later(DAY)}
    pool = two_regions(
        east=cfc("east", 1, override={**ov, "priority": 2}, effective_priority=2),
        west=cfc("west", 2, override={**ov, "priority": 1}, effective_priority=1, forging=True),
        holder="west/west-0",
    )
    plan = plan_region_switchover(
        pool, "east", now=NOW, duration=DAY, requested_by="bob", live=LIVE
    )
    assert [(c.region, c.override) for c in plan.changes] == [("east", None), ("west", None)]


def test_three_regions_every_tie_at_priority_one_is_raised() -> None:
    pool = PoolView(
        POOL,
        True,
        NS,
        lease(POOL, "a/a-0"),
        (
            region(cfc("a", 1, forging=True)),
            region(cfc("b", 1)),
            region(cfc("c", 3)),
            region(cfc("d", 4, state="Disabled")),
        ),
    )
    plan = plan_region_switchover(
        pool, "c", now=NOW, duration=60, requested_by="x", live={"a", "b", "c", "d"}
    )
    assert {c.region: (c.override or {}).get("priority") for c in plan.changes} == {
        "c": 1,
        "a": 2,
        "b": 2,
    }


def test_a_target_already_at_priority_one_needs_only_the_others_raised() -> None:
    pool = PoolView(
        POOL,
        True,
        NS,
        lease(POOL, "a/a-0"),
        (region(cfc("a", 1, forging=True)), region(cfc("b", 1))),
    )
    plan = plan_region_switchover(
        pool, "b", now=NOW, duration=60, requested_by="x", live={"a", "b"}
    )
    assert [(c.region, (c.override or {}).get("priority")) for c in plan.changes] == [("a", 2)]


def test_already_forging_is_nothing_to_do() -> None:
    plan = plan_region_switchover(
        two_regions(), "east", now=NOW, duration=DAY, requested_by="alice", live=LIVE
    )
    assert plan.changes == () and plan.nothing_to_do is not None
    assert "region east already forges (pool Lease held by east/east-0)" in plan.nothing_to_do


@pytest.mark.parametrize(
    ("west", "live", "leader_facts", "expected"),
    [
        (
            cfc("west", 2, state="Disabled"),
            LIVE,
            None,
            "region west is Disabled (spec): set spec.forgeState to Priority-based",
        ),
        (
            cfc(
                "west",
                2,
                override={"forgeState": "Disabled", "reason": "kernel", "expiresAt": later(3600)},
                effective_state="Disabled",
            ),
            LIVE,
            None,
            "resume it first: cardano-forge resume west",
        ),
        (
            cfc("west", 2, healthy=False, failures=3, demoted=True, effective_priority=102),
            LIVE,
            None,
            "region west is not healthy (3/3 consecutive health-check failures",
        ),
        (cfc("west", 2), {"east"}, None, "region west has no live local leader"),
        (cfc("west", 2, leader=""), LIVE, None, "region west has no local leader"),
        (
            cfc("west", 2, generation=2, observed=1),
            LIVE,
            None,
            "region west has not published a status for its current spec",
        ),
        (
            cfc("west", 2, status=False),
            LIVE,
            None,
            "region west has not published a status for its current spec",
        ),
        (
            cfc("west", 2),
            LIVE,
            facts(sources_ok=False),
            "region west's local leader west-0 has no usable credentials",
        ),
        (cfc("west", 2), LIVE, facts(node_up=False), "its cardano-node is not up"),
        (cfc("west", 2), LIVE, facts(synced=False), "its cardano-node is not synced"),
    ],
)
def test_switchover_refusals_say_why(
    west: dict, live: set[str], leader_facts: object, expected: str
) -> None:
    with pytest.raises(Refused, match=None) as caught:
        plan_region_switchover(
            two_regions(west=west),
            "west",
            now=NOW,
            duration=DAY,
            requested_by="a",
            live=live,
            leader_facts=leader_facts,
        )  # type: ignore[arg-type]
    assert expected in caught.value.message
    assert "\n" not in caught.value.message


def test_unknown_facts_do_not_refuse() -> None:
    plan = plan_region_switchover(
        two_regions(),
        "west",
        now=NOW,
        duration=DAY,
        requested_by="a",
        live=LIVE,
        leader_facts=facts(reachable=False, sources_ok=None, node_up=None),
    )
    assert len(plan.changes) == 2


def test_unknown_region_lists_the_regions() -> None:
    with pytest.raises(
        Refused,
        match=r"unknown region 'south' in pool cardano-forge-pool "
        r"\(namespace cardano-pool\): the regions are east, west",
    ):
        plan_region_switchover(
            two_regions(), "south", now=NOW, duration=DAY, requested_by="a", live=LIVE
        )


def test_an_enabled_other_region_is_never_preempted_so_refuse() -> None:
    pool = two_regions(east=cfc("east", 1, state="Enabled", forging=True))
    with pytest.raises(
        Refused, match=r"region east is Enabled \(spec\): an Enabled region keeps forging"
    ):
        plan_region_switchover(pool, "west", now=NOW, duration=DAY, requested_by="a", live=LIVE)


def test_someone_elses_override_is_not_overwritten() -> None:
    foreign = {"priority": 5, "reason": "testing", "expiresAt": later(3600)}
    pool = two_regions(west=cfc("west", 2, override=foreign, effective_priority=5))
    with pytest.raises(
        Refused, match="region west has an override set by someone else: priority=5"
    ):
        plan_region_switchover(pool, "west", now=NOW, duration=DAY, requested_by="a", live=LIVE)
    pool = two_regions(east=cfc("east", 1, override=foreign | {"priority": 1}, forging=True))
    with pytest.raises(
        Refused, match=r"region east has an override set by someone else .* and would tie with west"
    ):
        plan_region_switchover(pool, "west", now=NOW, duration=DAY, requested_by="a", live=LIVE)


def test_an_expired_override_is_replaced_freely() -> None:
    old = {"priority": 5, "reason": "testing", "expiresAt": "2026-02-01T00:00:00Z"}
    pool = two_regions(west=cfc("west", 2, override=old))
    plan = plan_region_switchover(pool, "west", now=NOW, duration=DAY, requested_by="a", live=LIVE)
    assert plan.changes[0].override is not None and plan.changes[0].previous == old


def test_no_cluster_management_points_at_pod_switchover() -> None:
    pool = PoolView("bp-leader", False, "bp", lease("bp-leader", "bp-0"), (), (pod("bp-0", "bp"),))
    with pytest.raises(Refused, match=r"no cluster management .*use 'switchover --to-pod'"):
        plan_region_switchover(pool, "bp", now=NOW, duration=DAY, requested_by="a", live=LIVE)


# ---- pause / resume ----------------------------------------------------------------------------
def test_pausing_the_forging_region_names_who_takes_over() -> None:
    plan = plan_pause(
        two_regions(),
        "east",
        now=NOW,
        duration=7200,
        reason="kernel upgrade",
        requested_by="alice",
        live=LIVE,
    )
    (change,) = plan.changes
    assert change.override == {
        "forgeState": "Disabled",
        "reason": "kernel upgrade (paused by alice)",
        "expiresAt": later(7200),
    }
    assert any("it hands forging over to region west" in n for n in plan.notes)


def test_pausing_the_only_eligible_region_warns_that_nothing_forges() -> None:
    pool = two_regions(west=cfc("west", 2, state="Disabled"))
    plan = plan_pause(pool, "east", now=NOW, duration=60, reason="r", requested_by="a", live=LIVE)
    assert any("NOTHING FORGES" in n for n in plan.notes)
    plan = plan_pause(
        two_regions(), "east", now=NOW, duration=60, reason="r", requested_by="a", live={"east"}
    )  # west not live
    assert any("NOTHING FORGES" in n for n in plan.notes)


def test_pause_replaces_a_pause_but_not_a_foreign_override() -> None:
    paused = {"forgeState": "Disabled", "reason": "old (paused by bob)", "expiresAt": later(60)}
    plan = plan_pause(
        two_regions(west=cfc("west", 2, override=paused)),
        "west",
        now=NOW,
        duration=120,
        reason="longer",
        requested_by="a",
        live=LIVE,
    )
    assert any("replaces the current pause" in n for n in plan.notes)
    foreign = {"priority": 9, "reason": "x", "expiresAt": later(60)}
    with pytest.raises(Refused, match="region west has an override set by someone else"):
        plan_pause(
            two_regions(west=cfc("west", 2, override=foreign)),
            "west",
            now=NOW,
            duration=60,
            reason="r",
            requested_by="a",
            live=LIVE,
        )


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("  ", "--reason must not be empty"), ("x" * 201, "--reason is 201 characters")],
)
def test_pause_reason_is_checked(reason: str, expected: str) -> None:
    with pytest.raises(Refused, match=expected):
        plan_pause(
            two_regions(), "west", now=NOW, duration=60, reason=reason, requested_by="a", live=LIVE
        )


def test_resume() -> None:
    assert plan_resume(two_regions(), "west", now=NOW).nothing_to_do == (
        "region west has no override: it follows its spec"
    )
    paused = {"forgeState": "Disabled", "reason": "k", "expiresAt": later(60)}
    plan = plan_resume(two_regions(west=cfc("west", 2, override=paused)), "west", now=NOW)
    (change,) = plan.changes
    assert change.override is None and change.previous == paused
    assert plan.notes == ("region west follows its spec again: Priority-based, priority 2",)


def test_next_region_skips_disabled_dead_and_the_excluded() -> None:
    pool = PoolView(
        POOL,
        True,
        NS,
        None,
        (
            region(cfc("a", 1)),
            region(cfc("b", 2, state="Disabled")),
            region(cfc("c", 3)),
            region(cfc("d", 2)),
        ),
    )
    assert next_region(pool, NOW, exclude="a", live={"a", "b", "c", "d"}) == "d"
    assert next_region(pool, NOW, exclude="a", live={"a", "b", "c"}) == "c"
    assert next_region(pool, NOW, exclude="a", live=set()) is None


# ---- pod switchover ------------------------------------------------------------------------------
PODS = (pod("east-0", "east"), pod("east-1", "east"), pod("east-2", "east", exists=False))


def pod_plan(name: str, **kw: object) -> object:
    args: dict[str, object] = {
        "lease": lease(
            "east-leader",
            "east-0",
            namespace="bp",
            annotations={CAPABILITIES_ANNOTATION: f"other/v2, {POD_SWITCHOVER}"},
        ),
        "facts": facts(),
        "holder_version": "0.2.0",
        "now": NOW,
        "timeout": 600.0,
        "requested_by": "alice",
        "request_id": "abc",
    }
    args.update(kw)
    return plan_pod_switchover(PODS, name, **args)  # type: ignore[arg-type]


def test_pod_switchover_refuses_clearly_when_the_manager_cannot_do_it() -> None:
    no_cap = lease("east-leader", "east-0", namespace="bp")
    with pytest.raises(Refused) as caught:
        pod_plan("east-1", lease=no_cap, holder_version="0.1.0")
    assert caught.value.message == (
        "the forge manager holding the Lease does not support pod switchover (the holder east-0, "
        "runs forge-manager 0.1.0 and does not advertise 'pod-switchover/v1' on the Lease): "
        "upgrade the release's forge manager"
    )


def test_pod_switchover_request() -> None:
    plan = pod_plan("east-1")
    request = plan.request  # type: ignore[attr-defined]
    assert request is not None
    assert (request.to, request.id, request.requested_by) == ("east-1", "abc", "alice")
    assert request.expires_at - request.requested_at == timedelta(seconds=300)  # capped
    assert SwitchoverRequest.decode(request.encode()) == request


@pytest.mark.parametrize(
    ("name", "kw", "expected"),
    [
        ("east-9", {}, "unknown pod 'east-9': the block-producer pods are bp/east-0, bp/east-1"),
        ("east-1", {"lease": None}, "the Lease east-leader in namespace bp does not exist"),
        ("east-1", {"lease": lease("east-leader", None, namespace="bp")}, "no pod holds the Lease"),
        ("east-2", {}, "pod east-2 does not exist"),
        ("east-1", {"facts": facts(sources_ok=False)}, "pod east-1 has no usable credentials"),
        ("east-1", {"facts": facts(node_up=False)}, "its cardano-node is not up"),
        ("east-1", {"facts": facts(synced=False)}, "its cardano-node is not synced"),
    ],
)
def test_pod_switchover_refusals(name: str, kw: dict[str, object], expected: str) -> None:
    with pytest.raises(Refused) as caught:
        pod_plan(name, **kw)
    assert expected in caught.value.message


def test_pod_switchover_to_the_leader_and_a_pending_request() -> None:
    assert pod_plan("east-0").nothing_to_do == "pod east-0 already leads its region"  # type: ignore[attr-defined]
    pending = SwitchoverRequest("east-2", "zz", "bob", NOW, NOW + timedelta(seconds=60))
    held = lease(
        "east-leader",
        "east-0",
        namespace="bp",
        annotations={CAPABILITIES_ANNOTATION: POD_SWITCHOVER, REQUEST_ANNOTATION: pending.encode()},
    )
    with pytest.raises(Refused, match="a switchover to east-2 requested by bob is pending"):
        pod_plan("east-1", lease=held)
    expired = replace(pending, expires_at=NOW - timedelta(seconds=1))
    held = replace(held, annotations={**held.annotations, REQUEST_ANNOTATION: expired.encode()})
    assert pod_plan("east-1", lease=held).request is not None  # type: ignore[attr-defined]
