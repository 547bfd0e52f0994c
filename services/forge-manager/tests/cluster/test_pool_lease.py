"""The pool-wide Lease in this pod's observation: when it may be taken, and what counts as ours."""

from __future__ import annotations

from forge_manager.cluster.pool_lease import PoolLease
from forge_manager.lease import LeaseRecord

from ..fakes import FakeWatch
from .doubles import LEASE_DURATION, RENEW_DEADLINE, Api, Clock, Faults, Lease

EAST = "east/bp-0"
WEST = "west/bp-0"


def pool(api: Api, clock: Clock, identity: str = WEST, faults: Faults | None = None) -> PoolLease:
    lease = Lease(api, faults or Faults(), clock, identity)
    return PoolLease(
        lease,
        identity=identity,
        lease_duration=LEASE_DURATION,
        renew_deadline=RENEW_DEADLINE,
        clock=clock,
        create_vacant=lease.create_vacant,
    )


def held_by(api: Api, holder: str) -> None:
    api.lease = LeaseRecord(holder, str(next(api.rv)), 15, "2026-01-01T00:00:00.000000Z", 1)


def released_by(api: Api, holder: str | None) -> None:
    api.lease = LeaseRecord(None, str(next(api.rv)), 15, "2026-01-01T00:00:01.000000Z", 1, holder)


def observe_for(p: PoolLease, clock: Clock, seconds: float) -> None:
    """Read every retry period for ``seconds`` (nothing changes in between)."""
    end = clock.now + seconds
    while clock.now < end:
        p.refresh()
        clock.now += 2.0
    clock.now = end
    p.refresh()


def test_a_deleted_pool_lease_is_taken_only_once_a_vacant_record_stayed_unchanged() -> None:
    api, clock = Api(), Clock()
    held_by(api, EAST)
    p = pool(api, clock)
    p.refresh()
    api.delete_lease()
    observe_for(p, clock, 2 * LEASE_DURATION)  # missing at every read: never free
    assert not p.view().expired and p.view().absent
    assert p.create_vacant() is None  # what a local leader does
    created = api.lease
    assert created is not None and created.holder is None
    observe_for(p, clock, LEASE_DURATION - 0.1)
    assert not p.view().expired
    observe_for(p, clock, 0.1)
    assert p.view().expired and not p.view().absent


def test_creating_the_vacant_record_when_someone_else_did_first_just_reads_it() -> None:
    api, clock = Api(), Clock()
    p = pool(api, clock)
    p.refresh()
    api.lease = LeaseRecord(None, str(next(api.rv)), 15, None, 0)  # created since our read
    assert p.create_vacant() is None
    assert not p.view().absent and not p.view().expired


def test_a_holder_cleared_by_someone_else_is_waited_for_like_an_unchanged_record() -> None:
    api, clock = Api(), Clock()
    held_by(api, EAST)
    p = pool(api, clock)
    p.refresh()
    api.clear_holder()  # no released-by: not a release of the holder
    observe_for(p, clock, LEASE_DURATION - 0.1)
    assert not p.view().expired
    observe_for(p, clock, 0.1)
    assert p.view().expired


def test_a_release_naming_another_holder_than_the_one_last_seen_is_waited_for() -> None:
    api, clock = Api(), Clock()
    held_by(api, EAST)
    p = pool(api, clock)
    p.refresh()
    released_by(api, "east/bp-1")  # bp-1 took it and released it between two of our reads
    p.refresh()
    assert not p.view().expired


def test_a_lease_first_seen_released_is_waited_for() -> None:
    """Who held it before is unknown to a pod that has just started watching."""
    api, clock = Api(), Clock()
    released_by(api, EAST)
    p = pool(api, clock)
    p.refresh()
    assert not p.view().expired
    observe_for(p, clock, LEASE_DURATION)
    assert p.view().expired


def test_a_lease_that_never_existed_is_taken_only_a_lease_duration_after_its_creation() -> None:
    api, clock = Api(), Clock()
    p = pool(api, clock)
    p.refresh()
    assert not p.view().expired
    assert p.create_vacant() is None
    observe_for(p, clock, LEASE_DURATION)
    assert p.view().expired


def test_a_lease_missing_at_every_read_is_never_free_by_itself() -> None:
    api, clock = Api(), Clock()
    held_by(api, EAST)
    p = pool(api, clock)
    p.refresh()
    api.delete_lease()
    p.refresh()
    clock.now += 1.9  # between two reads, west/bp-1 creates it, forges, and it is deleted again
    observe_for(p, clock, 3 * LEASE_DURATION)
    assert not p.view().expired


def test_a_release_by_the_holder_last_seen_is_free_at_once() -> None:
    api, clock = Api(), Clock()
    held_by(api, EAST)
    p = pool(api, clock)
    p.refresh()
    released_by(api, EAST)
    p.refresh()
    assert p.view().expired and p.view().holder is None


def test_a_404_on_renew_means_lost() -> None:
    api, clock = Api(), Clock()
    p = pool(api, clock, EAST)
    clock.now += LEASE_DURATION
    p.refresh()
    assert p.acquire() is None and p.leading()
    api.delete_lease()  # deleted after our last read
    error = p.renew()
    assert error is not None and "404" in error
    assert not p.leading() and not p.view().mine


def leading_pool(api: Api, clock: Clock, faults: Faults) -> PoolLease:
    p = pool(api, clock, EAST, faults)
    clock.now += LEASE_DURATION
    p.refresh()
    assert p.acquire() is None and p.leading()
    return p


def test_an_acquire_applied_whose_answer_was_lost_is_recognised_on_the_next_read() -> None:
    api, clock, faults = Api(), Clock(), Faults(lose_answers=1)
    p = pool(api, clock, EAST, faults)
    clock.now += LEASE_DURATION
    p.refresh()
    sent = clock.now
    assert p.acquire() is not None  # applied, but the answer never came
    assert not p.leading()
    clock.now += 2.0
    p.refresh()
    assert p.view().mine and p.leading()
    assert p.leading_until() == sent + RENEW_DEADLINE  # counted from when it was sent


def test_a_renew_applied_whose_answer_was_lost_extends_the_deadline_from_its_sending() -> None:
    api, clock, faults = Api(), Clock(), Faults()
    p = leading_pool(api, clock, faults)
    clock.now += 2.0
    p.refresh()
    faults.lose_answers = 1
    sent = clock.now
    assert p.renew() is not None
    clock.now += 2.0
    p.refresh()
    assert p.view().mine
    assert p.leading_until() == sent + RENEW_DEADLINE
    assert p.renew() is None  # against the version it recognised


def test_a_record_with_our_name_but_not_our_stamp_is_not_ours() -> None:
    """A previous incarnation of this pod wrote it: wait for it like anyone else's."""
    api, clock = Api(), Clock()
    held_by(api, EAST)
    p = pool(api, clock, EAST)
    p.refresh()
    assert not p.view().mine and not p.view().expired


# ---- followed through a watch --------------------------------------------------------------------
class Counting(Lease):
    def __init__(self, api: Api, clock: Clock, identity: str) -> None:
        super().__init__(api, Faults(), clock, identity)
        self.reads = 0

    def read(self) -> LeaseRecord | None:
        self.reads += 1
        return super().read()


def watching(api: Api, clock: Clock) -> tuple[PoolLease, Counting, FakeWatch]:
    lease, watch = Counting(api, clock, WEST), FakeWatch()
    p = PoolLease(lease, identity=WEST, lease_duration=LEASE_DURATION,
                  renew_deadline=RENEW_DEADLINE, clock=clock, watch=watch)  # fmt: skip
    return p, lease, watch


def test_a_watching_pod_times_the_pool_lease_from_when_the_watch_saw_it_and_reads_to_acquire() -> (
    None
):
    api, clock = Api(), Clock()
    held_by(api, EAST)
    p, lease, watch = watching(api, clock)
    assert api.lease is not None
    seen = clock.now
    watch.see(api.lease, seen)
    clock.now += 5.0  # the pod looks later; the change was seen then
    p.refresh()
    v = p.view()
    assert (v.holder, v.expired, v.expires_at) == (EAST, False, seen + LEASE_DURATION)
    clock.now = seen + LEASE_DURATION
    p.refresh()
    assert p.view().expired and lease.reads == 0  # no request while following
    assert p.acquire() is None
    assert lease.reads == 1 and lease.writes == 1  # a quorum read, then the write
    assert p.leading() and p.view().expires_at is None
    assert watch.resyncs == 0


def test_a_renewal_the_watch_missed_stops_the_acquisition_as_a_race_lost() -> None:
    api, clock = Api(), Clock()
    held_by(api, EAST)
    p, lease, watch = watching(api, clock)
    assert api.lease is not None
    watch.see(api.lease, clock.now)
    clock.now += LEASE_DURATION
    held_by(api, EAST)  # renewed; the watch never delivers it
    p.refresh()
    assert p.view().expired
    error = p.acquire()
    assert error is not None and "changed since the watch showed it" in error
    assert p.last_write_lost  # a race, not a fault of this region
    assert lease.writes == 0 and not p.leading()
    assert watch.resyncs == 1
    assert not p.view().expired  # timed from the read now


def test_a_failed_read_before_acquiring_is_a_failure_of_this_region() -> None:
    api, clock = Api(), Clock()
    held_by(api, EAST)
    faults = Faults()
    lease, watch = Lease(api, faults, clock, WEST), FakeWatch()
    p = PoolLease(lease, identity=WEST, lease_duration=LEASE_DURATION,
                  renew_deadline=RENEW_DEADLINE, clock=clock, watch=watch)  # fmt: skip
    assert api.lease is not None
    watch.see(api.lease, clock.now)
    clock.now += LEASE_DURATION
    p.refresh()
    faults.cut = True
    error = p.acquire()
    assert error is not None and "reading the pool lease before acquiring it failed" in error
    assert not p.last_write_lost


def test_a_holder_reads_and_an_older_watched_record_is_ignored() -> None:
    api, clock = Api(), Clock()
    p, lease, watch = watching(api, clock)
    held_by(api, EAST)
    assert api.lease is not None
    watch.see(api.lease, clock.now)
    p.refresh()
    released_by(api, EAST)
    before = api.lease
    assert before is not None
    watch.see(before, clock.now)
    p.refresh()
    assert p.view().released
    assert p.acquire() is None and p.leading()
    reads = lease.reads
    clock.now += 2.0
    p.refresh()  # the holder reads: its own writes are newer than anything watched
    assert lease.reads == reads + 1
    assert p.renew() is None
    p.release()
    watch.see(before, clock.now)  # the watch lags behind the release
    p.refresh()
    assert p.view().holder is None and not p.view().mine
    assert api.lease is not None and p.view().expires_at is not None
