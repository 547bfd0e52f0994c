"""A follower that watches the Lease: it times changes from when the watch saw them, reads only
to acquire, falls back to reading while the watch is not live, and never acquires on a change
the watch missed."""

from __future__ import annotations

from pathlib import Path

from forge_manager.lease import LeaseRecord
from forge_manager.watch import LeaseObservation, WatchedLease, WatchGone

from .fakes import Clock, FakeWatch, LeaseStore
from .test_manager import Pod, settings_for
from .test_watch import Source, until

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


def test_a_lease_created_held_and_deleted_while_the_watch_was_broken_is_not_missing_throughout(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    """The follower sees no Lease (through the watch), the stream breaks, and meanwhile another
    pod creates the Lease, leads, renews and the Lease is deleted; etcd compacts, so the watch
    lists again and finds no Lease, more than a lease duration after it first found none. The
    other pod may forge until its renew deadline: the follower creates the Lease vacant and
    acquires only a lease duration after that, past the other pod's deadline."""
    tmp, store, clock = world
    name = settings_for(tmp, "pod-1").lease_name
    src = Source()
    src.version = str(max(next(store._versions) for _ in range(5)))  # the API's version: 5
    watched = WatchedLease(src, name, what="the lease", clock=clock, retry_period=0.01)
    vrf = tmp / "secret" / "vrf.skey"
    key = vrf.read_text()
    vrf.write_text("")  # out of the election at first (sources unusable), watching all along
    follower = Pod(tmp, store, clock, "pod-1", lease_watch=watched)
    watched.start()
    try:
        first = src.stream(1)
        until(lambda: watched.observed() is not None, "live")
        first_seen = clock.now
        assert "staying out of the election" in follower.manager.step()
        assert follower.lease.calls == ["read"]  # the first cycle reads
        follower.lease.calls.clear()
        assert "staying out of the election" in follower.manager.step()
        assert follower.lease.calls == []  # then the watch shows it: no read
        # The stream breaks. pod-2 creates the Lease and leads; it renews at +15 s, then
        # someone deletes the Lease. pod-2 may forge until its renew deadline (+25 s).
        clock.advance(1.0)
        store.write(None, "pod-2", "stamp-1")
        clock.advance(14.0)
        assert store.record is not None
        store.write(store.record.resource_version, "pod-2", "stamp-2")
        other_leads_until = clock.now + follower.settings.renew_deadline
        clock.advance(0.5)
        store.record = None
        deleted = next(store._versions)
        clock.advance(0.5)
        src.watch_errors.append(WatchGone("HTTP 410"))
        src.version = str(deleted + 1)
        first.put("fail")
        src.stream(2)
        until(lambda: watched.observed() is not None and src.lists == 2, "listed again")
        assert clock.now - first_seen >= follower.settings.lease_duration
        vrf.write_text(key)  # eligible again
        reason = follower.manager.step()
        assert "creating it vacant" in reason, reason
        assert follower.lease.calls == ["create"]
        assert not follower.manager.is_local_leader()
        created_at = clock.now
        assert created_at + follower.settings.lease_duration > other_leads_until
        clock.now = created_at + follower.settings.lease_duration - 0.01
        follower.manager.step()
        assert follower.lease.calls == ["create"]
        assert not follower.manager.is_local_leader()
        clock.now = created_at + follower.settings.lease_duration
        reason = follower.manager.step()
        assert "without a holder unchanged" in reason, reason
        assert follower.lease.calls == ["create", "read", "acquire"]
        assert follower.manager.is_local_leader()
    finally:
        watched.stop()
