"""A follower that watches the Lease: it times changes from when the watch saw them, reads only
to acquire, falls back to reading while the watch is not live, and never acquires on a change
the watch missed."""

from __future__ import annotations

from pathlib import Path

from forge_manager.lease import LeaseRecord
from forge_manager.watch import LeaseObservation

from .fakes import Clock, FakeWatch, LeaseStore
from .test_manager import Pod

LEASE_DURATION = 15.0


def leader_and_follower(
    world: tuple[Path, LeaseStore, Clock],
) -> tuple[Pod, Pod, FakeWatch, LeaseStore, Clock]:
    """pod-0 leads (no watch); pod-1 follows with a live watch that has seen its record."""
    tmp, store, clock = world
    leader = Pod(tmp, store, clock, "pod-0")
    leader.elect()
    watch = FakeWatch()
    follower = Pod(tmp, store, clock, "pod-1", lease_watch=watch)
    assert store.record is not None
    watch.see(store.record, clock.now)
    follower.manager.step()  # the first cycle reads (nothing known yet)
    assert follower.lease.calls == ["read"]
    follower.lease.calls.clear()
    return leader, follower, watch, store, clock


def renew(leader: Pod, watch: FakeWatch, store: LeaseStore, clock: Clock) -> LeaseRecord:
    """The leader renews, and the watch delivers the new version at once."""
    leader.manager.step()
    assert store.record is not None and store.record.holder == "pod-0"
    watch.see(store.record, clock.now)
    return store.record


def test_a_watching_follower_reads_only_to_acquire_and_acquires_a_lease_duration_after_the_last_change_it_saw(  # noqa: E501
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    leader, follower, watch, store, clock = leader_and_follower(world)
    for _ in range(5):
        clock.advance(2.0)
        renew(leader, watch, store, clock)
        assert "following pod-0" in follower.manager.step()
    assert follower.lease.calls == []  # no request while following
    last_seen = clock.now
    # The leader dies. The timer is due a lease duration after the last renewal was seen.
    assert follower.manager.seconds_to_next_cycle(clock.now) == 2.0  # the retry period first
    clock.advance(LEASE_DURATION - 0.5)
    assert abs(follower.manager.seconds_to_next_cycle(clock.now) - 0.501) < 1e-6
    clock.now = last_seen + LEASE_DURATION - 0.001
    assert "lease expires in 0.0 s" in follower.manager.step()
    assert follower.lease.calls == []
    clock.now = last_seen + LEASE_DURATION
    reason = follower.manager.step()
    assert "lease of pod-0 expired" in reason, reason
    assert follower.lease.calls == ["read", "acquire"]  # a quorum read, then the write
    assert follower.manager.is_local_leader()
    assert watch.resyncs == 0


def test_a_renewal_the_watch_missed_is_found_by_the_quorum_read_and_nothing_is_acquired(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    leader, follower, watch, _store, clock = leader_and_follower(world)
    seen = clock.now
    clock.advance(LEASE_DURATION - 1)
    leader.manager.step()  # renewed, but the watch is stuck and never delivers it
    clock.now = seen + LEASE_DURATION
    reason = follower.manager.step()
    assert "following pod-0" in reason, reason
    assert follower.lease.calls == ["read"]
    assert not follower.manager.is_local_leader()
    assert watch.resyncs == 1  # the stream may be stuck: restart it
    # The version read is timed from when it was read, not from when the watch showed the
    # older one: still no acquisition a moment later.
    clock.advance(1.0)
    assert "following pod-0" in follower.manager.step()
    assert "acquire" not in follower.lease.calls


def test_while_the_watch_is_not_live_the_follower_reads_every_cycle(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    leader, follower, watch, store, clock = leader_and_follower(world)
    watch.observation = None  # broken: polling
    for _ in range(3):
        clock.advance(2.0)
        leader.manager.step()
        follower.manager.step()
    assert follower.lease.calls == ["read", "read", "read"]
    # Live again: a version older than the one read is not taken (it would move time back).
    older = store.record
    assert older is not None
    watch.see(LeaseRecord("pod-0", "1", 15, "old", 0), clock.now)
    clock.advance(2.0)
    assert "following pod-0" in follower.manager.step()
    assert follower.lease.calls == ["read", "read", "read"]
    view = follower.manager._view
    assert view is not None and view.resource_version == older.resource_version


def test_versions_that_cannot_be_compared_make_the_follower_read(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    _, follower, watch, store, clock = leader_and_follower(world)
    assert store.record is not None
    watch.observation = LeaseObservation(store.record, "v-not-a-number", clock.now)
    clock.advance(2.0)
    follower.manager.step()
    assert follower.lease.calls == ["read"]


def test_a_release_seen_by_the_watch_is_acquired_at_once_after_a_quorum_read(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    leader, follower, watch, store, clock = leader_and_follower(world)
    before = store.record
    leader.manager.shutdown()  # releases (after the node had its 0.5 s to act)
    released = store.record
    assert released is not None and released.released_by == "pod-0"
    watch.see(released, clock.now)
    follower.manager.lease_changed(before, released)
    assert follower.manager._wake.is_set()  # the loop runs now, not at its next tick
    assert follower.manager.seconds_to_next_cycle(clock.now) == 2.0
    reason = follower.manager.step()
    assert "released by pod-0" in reason, reason
    assert follower.lease.calls == ["read", "acquire"]
    assert follower.manager.is_local_leader()


def test_a_renewal_does_not_wake_the_loop(world: tuple[Path, LeaseStore, Clock]) -> None:
    leader, follower, watch, store, clock = leader_and_follower(world)
    before = store.record
    clock.advance(2.0)
    after = renew(leader, watch, store, clock)
    follower.manager.lease_changed(before, after)
    assert not follower.manager._wake.is_set()


def test_a_deletion_seen_by_the_watch_makes_the_follower_create_it_vacant_and_wait_that_out(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    """A deleted Lease is no evidence that its holder stopped: the follower creates it vacant at
    once (the watch woke it) and acquires only a lease duration after it saw that record."""
    leader, follower, watch, store, clock = leader_and_follower(world)
    before = store.record
    clock.advance(3.0)
    store.record = None  # kubectl delete lease
    watch.see(None, clock.now, version=str(next(store._versions)))
    follower.manager.lease_changed(before, None)
    assert follower.manager._wake.is_set()
    reason = follower.manager.step()
    assert "creating it vacant" in reason, reason
    assert follower.lease.calls == ["create"]
    vacant = store.record
    assert vacant is not None and vacant.holder is None
    created_at = clock.now
    # The watch delivers the ADDED event a little later: the same version, so the timer stays.
    clock.advance(0.2)
    watch.see(vacant, clock.now)
    assert follower.manager.seconds_to_next_cycle(clock.now) == 2.0
    clock.now = created_at + LEASE_DURATION - 0.01
    assert "acquiring it in 0.0 s" in follower.manager.step()
    assert follower.lease.calls == ["create"]
    clock.now = created_at + LEASE_DURATION
    reason = follower.manager.step()
    assert "without a holder unchanged" in reason, reason
    assert follower.lease.calls == ["create", "read", "acquire"]
    assert follower.manager.is_local_leader()
    del leader


def test_a_watched_record_never_makes_the_lease_ours(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    """Only a quorum read recognises a write of ours whose answer was lost (by its stamp): a
    watched record carrying this pod's name and one of its stamps is someone else's until
    then, so it never revives a leadership this pod gave up."""
    tmp, store, clock = world
    watch = FakeWatch()
    pod = Pod(tmp, store, clock, "pod-0", lease_watch=watch)
    pod.elect()
    clock.advance(2.0)
    pod.manager.step()
    renewed = store.record
    assert renewed is not None and renewed.renew_time is not None
    pod.manager.shutdown()
    assert store.record is not None and store.record.holder is None
    pod.manager._shutting_down = False  # as if it went on (an ineligible pod that recovered)
    pod.lease.calls.clear()
    clock.advance(1.0)
    watch.see(LeaseRecord("pod-0", "999", 15, renewed.renew_time, 0), clock.now)
    reason = pod.manager.step()
    assert "following pod-0" in reason, reason
    assert not pod.manager.is_local_leader()
    assert pod.lease.calls == []  # no renew against it
    assert not pod.files.any_present()
