"""Pod switchover: the pure plans, and the hand-over between two managers on the fake Lease."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from forge_manager.decision import NodeView
from forge_manager.switchover import (
    CAPABILITIES_ANNOTATION,
    FAST_POLL_S,
    POD_SWITCHOVER,
    PREFERRED_ANNOTATION,
    READY_ANNOTATION,
    REQUEST_ANNOTATION,
    RESULT_ANNOTATION,
    Step,
    acquire_edits,
    parse_request,
    plan_follower,
    plan_holder,
    ready_answer,
    stands_aside,
)

from .fakes import Clock, FakeWatch, LeaseStore
from .test_manager import Pod

NOW = 1_800_000_000.0


def stamp(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def request(to: str = "pod-1", ident: str = "r1", start: float = NOW, seconds: float = 60) -> str:
    return json.dumps(
        {
            "to": to,
            "id": ident,
            "requestedBy": "alice",
            "requestedAt": stamp(start),
            "expiresAt": stamp(start + seconds),
        }
    )


# ---- pure --------------------------------------------------------------------------------------
def test_requests_are_parsed_or_refused_in_one_line() -> None:
    assert parse_request(request()).to == "pod-1"
    for bad, why in [
        ("{", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"to": "", "id": "x"}', "non-empty"),
        (request(seconds=-5), "after requestedAt"),
        (request(seconds=3600), "at most 300 s"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_request(bad)


def test_the_holder_waits_for_ready_then_hands_over() -> None:
    annotations = {REQUEST_ANNOTATION: request()}
    assert plan_holder(annotations, "pod-0", NOW + 1).step is Step.NONE
    annotations[READY_ANNOTATION] = ready_answer("r1", "pod-1")
    plan = plan_holder(annotations, "pod-0", NOW + 1)
    assert (plan.step, plan.to) == (Step.HAND_OVER, "pod-1")
    # A ready answer for another request or from another pod does not count.
    annotations[READY_ANNOTATION] = ready_answer("r0", "pod-1")
    assert plan_holder(annotations, "pod-0", NOW + 1).step is Step.NONE
    annotations[READY_ANNOTATION] = ready_answer("r1", "pod-2")
    assert plan_holder(annotations, "pod-0", NOW + 1).step is Step.NONE


def test_the_holder_closes_expired_malformed_and_own_requests() -> None:
    expired = plan_holder({REQUEST_ANNOTATION: request()}, "pod-0", NOW + 60)
    assert expired.step is Step.WRITE
    assert json.loads(expired.edits[RESULT_ANNOTATION] or "")["outcome"] == "expired"
    assert expired.edits[REQUEST_ANNOTATION] is None and expired.edits[READY_ANNOTATION] is None
    bad = plan_holder({REQUEST_ANNOTATION: '{"id": "r9"}'}, "pod-0", NOW)
    assert json.loads(bad.edits[RESULT_ANNOTATION] or "") == {
        "id": "r9",
        "outcome": "refused",
        "reason": "malformed request: 'to' and 'id' must be non-empty strings",
    }
    own = plan_holder({REQUEST_ANNOTATION: request(to="pod-0")}, "pod-0", NOW)
    assert json.loads(own.edits[RESULT_ANNOTATION] or "")["outcome"] == "done"
    assert plan_holder({}, "pod-0", NOW).step is Step.NONE


def test_the_target_answers_ready_only_while_able_and_refuses_otherwise() -> None:
    annotations = {REQUEST_ANNOTATION: request()}
    ready = plan_follower(annotations, "pod-1", NOW, held=True, unable="")
    assert ready.step is Step.WRITE and ready.waiting
    assert json.loads(ready.edits[READY_ANNOTATION] or "") == {"id": "r1", "pod": "pod-1"}
    refused = plan_follower(annotations, "pod-1", NOW, held=True, unable="node not synced")
    assert json.loads(refused.edits[RESULT_ANNOTATION] or "") == {
        "id": "r1",
        "outcome": "refused",
        "reason": "pod-1: node not synced",
    }
    assert plan_follower(annotations, "pod-2", NOW, held=True, unable="").step is Step.NONE
    assert plan_follower(annotations, "pod-1", NOW + 61, held=True, unable="").step is Step.NONE
    answered = {**annotations, READY_ANNOTATION: ready_answer("r1", "pod-1")}
    again = plan_follower(answered, "pod-1", NOW, held=True, unable="")
    assert again.step is Step.NONE and again.waiting


def test_an_acquire_spends_the_preference_and_closes_the_request() -> None:
    annotations = {
        REQUEST_ANNOTATION: request(),
        READY_ANNOTATION: ready_answer("r1", "pod-1"),
        PREFERRED_ANNOTATION: "pod-1",
    }
    edits = acquire_edits(annotations, "pod-1", NOW)
    assert edits[PREFERRED_ANNOTATION] is None and edits[REQUEST_ANNOTATION] is None
    assert edits[CAPABILITIES_ANNOTATION] == POD_SWITCHOVER
    assert json.loads(edits[RESULT_ANNOTATION] or "")["outcome"] == "done"
    other = acquire_edits(annotations, "pod-2", NOW)
    assert REQUEST_ANNOTATION not in other  # still pending for pod-1: the new holder decides
    assert stands_aside(annotations, "pod-2") == "pod-1"
    assert stands_aside(annotations, "pod-1") is None


# ---- two managers ------------------------------------------------------------------------------
def ask(store: LeaseStore, to: str, wall: float, seconds: float = 60) -> None:
    store.annotate(None, {REQUEST_ANNOTATION: request(to=to, start=wall, seconds=seconds)})


def pods(world: tuple[Path, LeaseStore, Clock]) -> tuple[Pod, Pod, Pod]:
    tmp, store, clock = world
    a, b, c = (Pod(tmp, store, clock, f"pod-{i}") for i in range(3))
    for p in (a, b, c):
        p.manager._wall = lambda: NOW  # type: ignore[method-assign]
    a.elect()
    b.manager.step()
    c.manager.step()
    assert store.record is not None and store.record.holder == "pod-0"
    return a, b, c


def cycle(clock: Clock, *ps: Pod) -> None:
    clock.advance(1)
    for p in ps:
        p.manager.step()


def test_a_switchover_hands_over_to_the_named_pod_and_never_two_forge(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    _, store, clock = world
    a, b, c = pods(world)
    assert store.record is not None
    assert store.record.annotations[CAPABILITIES_ANNOTATION] == POD_SWITCHOVER
    ask(store, "pod-1", NOW)
    steps = 0
    while steps < 10 and not b.files.all_present():
        cycle(clock, a, b, c)
        steps += 1
        assert sum(p.files.all_present() for p in (a, b, c)) <= 1
    assert b.files.all_present() and not a.files.any_present() and not c.files.any_present()
    assert "settle 0.5" in a.lease.calls  # demoted and gave the node its budget before release
    assert store.record is not None and store.record.holder == "pod-1"
    annotations = store.record.annotations
    assert REQUEST_ANNOTATION not in annotations and PREFERRED_ANNOTATION not in annotations
    assert json.loads(annotations[RESULT_ANNOTATION])["outcome"] == "done"
    assert a.metric("cardano_forge_demotions_total", cause="switchover") == 1
    assert a.metric("cardano_forge_demotions_total", cause="lease_lost") is None
    # The old holder and the third pod stay followers.
    for _ in range(5):
        cycle(clock, a, b, c)
    assert store.record.holder == "pod-1" and b.files.all_present()


def test_annotation_writes_do_not_demote_the_holder(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    _, store, clock = world
    a, b, c = pods(world)
    c.node.view = NodeView(pids=(), socket_up=False, booted=False, flag_missing=False)
    ask(store, "pod-2", NOW)  # its node is down: it refuses
    for _ in range(4):
        cycle(clock, a, b, c)
    assert a.files.all_present() and a.sighups() == (1, 1)  # never interrupted
    assert store.record is not None and store.record.holder == "pod-0"
    result = json.loads(store.record.annotations[RESULT_ANNOTATION])
    assert result == {
        "id": "r1",
        "outcome": "refused",
        "reason": "pod-2: its cardano-node is not up",
    }
    assert REQUEST_ANNOTATION not in store.record.annotations


def test_a_request_nobody_answers_expires_and_the_holder_keeps_forging(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    _, store, clock = world
    a, b, c = pods(world)
    ask(store, "pod-9", NOW - 59)
    cycle(clock, a, b, c)
    for p in (a, b, c):
        p.manager._wall = lambda: NOW + 2  # type: ignore[method-assign]
    cycle(clock, a, b, c)
    assert store.record is not None
    assert json.loads(store.record.annotations[RESULT_ANNOTATION])["outcome"] == "expired"
    assert a.files.all_present() and a.sighups() == (1, 1)


def test_other_pods_stand_aside_until_a_lease_duration_when_the_target_vanishes(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    _, store, clock = world
    a, b, c = pods(world)
    ask(store, "pod-1", NOW)
    cycle(clock, b)  # it answers ready
    cycle(clock, a)  # the holder hands over
    assert store.record is not None and store.record.holder is None  # released to pod-1
    # pod-1 dies before it acquires: the others wait a lease duration, then one takes over.
    waited = 0
    while waited < 30 and (store.record is None or store.record.holder is None):
        cycle(clock, a, c)
        waited += 1
    assert store.record is not None and store.record.holder in ("pod-0", "pod-2")
    assert waited >= a.settings.lease_duration
    assert not b.files.any_present()


def test_a_renew_conflict_from_someone_elses_holder_change_still_demotes(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    _, store, clock = world
    a, _, _ = pods(world)
    assert store.record is not None
    store.write(store.record.resource_version, "intruder", "x")
    cycle(clock, a)
    assert not a.files.any_present()
    assert a.metric("cardano_forge_demotions_total", cause="lease_lost") == 1


# ---- with followers that watch the Lease ------------------------------------------------------
def test_a_switchover_among_watching_followers_hands_over_and_never_shortens_a_wait(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    """The followers take the Lease from their watches: pod-1 answers against the watched
    record, cycles at FAST_POLL_S while ready, and acquires after a quorum read finds the
    release; pod-2 times every annotation write as a change (never sooner) and stands aside."""
    tmp, store, clock = world
    watches = {name: FakeWatch() for name in ("pod-1", "pod-2")}
    a = Pod(tmp, store, clock, "pod-0")
    b = Pod(tmp, store, clock, "pod-1", lease_watch=watches["pod-1"])
    c = Pod(tmp, store, clock, "pod-2", lease_watch=watches["pod-2"])
    for p in (a, b, c):
        p.manager._wall = lambda: NOW  # type: ignore[method-assign]
    a.elect()

    def deliver() -> None:
        assert store.record is not None
        for w in watches.values():
            w.see(store.record, clock.now)

    deliver()
    b.manager.step()
    c.manager.step()  # the first cycles read; from now on the followers take the watch
    b.lease.calls.clear()
    c.lease.calls.clear()
    ask(store, "pod-1", NOW)
    deliver()
    seen_by_c: list[float] = []
    waits: list[float] = []
    steps = 0
    while steps < 10 and not b.files.all_present():
        clock.advance(1)
        for p in (a, b, c):
            p.manager.step()
            deliver()
            assert sum(q.files.any_present() for q in (a, b, c)) <= 1
        view = c.manager._view
        assert view is not None
        seen_by_c.append(view.observed_change_at)
        if b.manager._switchover_waiting:
            waits.append(b.manager.seconds_to_next_cycle(clock.now))
            assert c.manager.seconds_to_next_cycle(clock.now) > FAST_POLL_S
        steps += 1
    assert b.files.all_present() and not a.files.any_present() and not c.files.any_present()
    assert waits and max(waits) <= FAST_POLL_S  # ready: it cycles fast until the release
    assert "annotate" in b.lease.calls
    assert b.lease.calls[-2:] == ["read", "acquire"]  # a quorum read before the acquire
    assert c.lease.calls == []  # pod-2 only ever took the watched record
    assert seen_by_c == sorted(seen_by_c)  # no change moved pod-2's timer back
    assert store.record is not None and store.record.holder == "pod-1"
    assert json.loads(store.record.annotations[RESULT_ANNOTATION])["outcome"] == "done"


def test_a_watching_pod_that_stands_aside_waits_a_lease_duration_after_the_hand_over(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    watch = FakeWatch()
    a = Pod(tmp, store, clock, "pod-0")
    b = Pod(tmp, store, clock, "pod-1")
    c = Pod(tmp, store, clock, "pod-2", lease_watch=watch)
    for p in (a, b, c):
        p.manager._wall = lambda: NOW  # type: ignore[method-assign]
    a.elect()
    b.manager.step()
    c.manager.step()
    ask(store, "pod-1", NOW)
    cycle(clock, b)  # it answers ready
    cycle(clock, a)  # the holder hands over to pod-1, which then dies
    assert store.record is not None and store.record.holder is None
    released_at = clock.now
    watch.see(store.record, clock.now)
    c.lease.calls.clear()
    duration = c.settings.lease_duration
    while clock.now < released_at + duration - 1:
        assert "standing aside" in c.manager.step()
        assert not c.files.any_present() and "acquire" not in c.lease.calls
        clock.advance(1)
    clock.now = released_at + duration - 0.5  # its timer: a lease duration after the release
    assert abs(c.manager.seconds_to_next_cycle(clock.now) - 0.501) < 1e-6
    clock.now = released_at + duration
    assert "acquiring it" in c.manager.step()
    assert c.lease.calls[-2:] == ["read", "acquire"]
    assert c.files.all_present() and not a.files.any_present() and not b.files.any_present()
