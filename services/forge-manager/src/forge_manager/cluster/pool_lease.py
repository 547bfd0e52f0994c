"""The pool-wide Lease, held by at most one region's local leader (``<region>/<pod>``).

Same rules as the local Lease (:mod:`forge_manager.lease` does the I/O): writes only against the
resourceVersion last read (409 or 404 = lost), expiry judged on this pod's monotonic clock from
when it *saw* the record change, and the holder believes it holds the Lease only until the
monotonic time its last successful write was *sent* plus the renew deadline. Because the pool-wide
Lease uses the local Lease's durations, the start-up timing check of :mod:`forge_manager.timing`
covers it too.

A write whose answer was lost but which the API server applied is recognised on the next read by
its stamp (:class:`~forge_manager.write_stamps.SentWrites`), and the deadline counts from when
that write was sent, so one lost answer (or a remote API that answers every write after the
request timeout) does not make the holder wait for its own record to expire.

A vacant Lease is free at once only when it was *released by the holder this pod saw last*
(``released_by`` names it, and the record before it was that holder's). A Lease whose holder was
cleared by anyone else is no evidence that the old holder stopped forging: it counts like an
unchanged record, free only once this pod has seen the same resourceVersion for the lease
duration. A Lease that does not exist (deleted, restored without it, never created) is never free
by itself: with no resourceVersion to compare, two reads that find it missing do not prove that
nobody created, held and deleted it in between. A local leader that finds it missing creates it
*vacant* (:meth:`PoolLease.create_vacant`: no holder) and then waits for that record like any
other, so a pool's first election, and any deletion, cost one lease duration.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from forge_manager.cluster.policy import PoolLeaseView
from forge_manager.cluster.round_trips import RoundTrips
from forge_manager.lease import LeaseError, LeaseLost, LeaseRecord
from forge_manager.watch import LeaseWatch, take_watched
from forge_manager.write_stamps import SentWrites


class LeaseBackend(Protocol):
    def read(self) -> LeaseRecord | None: ...
    def acquire(self, current: LeaseRecord | None, stamp: str) -> LeaseRecord: ...
    def renew(self, current: LeaseRecord, stamp: str) -> LeaseRecord: ...
    def release(self, current: LeaseRecord) -> LeaseRecord: ...
    def new_renew_stamp(self) -> str: ...


class PoolLease:
    """Thread-safe: :meth:`leading` is called from the manager's threads."""

    def __init__(
        self,
        backend: LeaseBackend,
        *,
        identity: str,
        lease_duration: float,
        renew_deadline: float,
        clock: Callable[[], float],
        round_trips: RoundTrips | None = None,
        on_write: Callable[[float], None] = lambda _seconds: None,
        create_vacant: Callable[[], object] | None = None,
        watch: LeaseWatch | None = None,
    ) -> None:
        self._backend = backend
        self._watch = watch
        """While it is live, a pod that does not hold the Lease takes its record from the watch
        instead of reading every cycle; a quorum read precedes every acquisition."""
        self._version = ""
        """resourceVersion of what the record shows (the last one known while it is missing)."""
        self._watched = False
        """The last refresh took the record from the watch."""
        self.round_trips = round_trips
        """Round trips of the writes, against the request timeout (None: not measured)."""
        self._on_write = on_write
        self._create_vacant = create_vacant
        self.identity = identity
        self._duration = lease_duration
        self._renew_deadline = renew_deadline
        self._clock = clock
        self._lock = threading.Lock()
        self._record: LeaseRecord | None = None
        self._read_once = False
        self._seen_at = clock()
        self._released = False
        """The current record was cleared by a release of the holder we saw before it."""
        self._last_duration = lease_duration
        self._own_rv: str | None = None
        self._leading_until: float | None = None
        self._error: str | None = None
        self._sent = SentWrites()
        self.last_write_lost = False
        """The last failed write failed because someone else wrote first (409, 404): a race
        lost, not a fault of this region."""

    # ---- observation -------------------------------------------------------------------------
    def _observe(
        self,
        rec: LeaseRecord | None,
        now: float,
        *,
        watched: bool = False,
        version: str | None = None,
    ) -> None:
        """``watched``: from the watch, which never makes the record ours (a write of ours
        whose answer was lost is recognised by a quorum read only)."""
        if version is not None:
            self._version = version
        elif rec is not None:
            self._version = rec.resource_version
        prev = self._record
        if rec is None:
            changed = prev is not None or not self._read_once
        else:
            changed = prev is None or prev.resource_version != rec.resource_version
        if changed:
            self._seen_at = now
            self._released = (
                rec is not None
                and rec.holder is None
                and rec.released_by is not None
                and prev is not None
                and prev.holder == rec.released_by
            )
        self._read_once = True
        self._record = rec
        if rec is not None and rec.duration_seconds:
            self._last_duration = float(rec.duration_seconds)
        if not watched and rec is not None and rec.resource_version != self._own_rv:
            sent = self._sent.sent_at(rec, self.identity)
            if sent is not None:  # our write, applied, whose answer we never got
                self._own_rv = rec.resource_version
                deadline = sent + self._renew_deadline
                if self._leading_until is None or deadline > self._leading_until:
                    self._leading_until = deadline
        if self._own_rv is not None and (rec is None or rec.resource_version != self._own_rv):
            self._own_rv = None
            self._leading_until = None

    def refresh(self) -> None:
        with self._lock:
            follower = self._own_rv is None
        if follower and self._take_watched():
            return
        self._read()

    def _read(self) -> bool:
        """A quorum read into the record; False (and the error kept) when it failed."""
        try:
            rec = self._backend.read()
        except LeaseError as exc:
            with self._lock:
                self._error = str(exc)
            return False
        with self._lock:
            self._error = None
            self._watched = False
            self._observe(rec, self._clock())
        return True

    def _take_watched(self) -> bool:
        """Take the watched record when it is newer than the one held; False when the watch
        cannot be used (not live, or versions that cannot be compared)."""
        return take_watched(
            self._watch, self._lock, lambda: self._version, self._observe, self._took_watched
        )

    def _took_watched(self) -> None:
        """The watch was usable (the lock held): the record is the watched one."""
        self._error = None
        self._watched = True

    def _confirm_current(self) -> str | None:
        """Before acquiring on what the watch showed: a quorum read must find the same version
        (the write's resourceVersion precondition checks it once more). None when it does."""
        with self._lock:
            if not self._watched:
                return None
            timed = self._version if self._record is not None else None
        if not self._read():
            self.last_write_lost = False
            with self._lock:
                return f"reading the pool lease before acquiring it failed: {self._error}"
        with self._lock:
            now_version = self._version if self._record is not None else None
        if now_version == timed:
            return None
        self.last_write_lost = True  # a change, not a fault of this region
        if self._watch is not None:
            self._watch.resync()
        return "the pool lease changed since the watch showed it; it has not expired"

    @property
    def duration(self) -> float:
        """This pod's lease duration (seconds)."""
        return self._duration

    def leading_until(self) -> float | None:
        with self._lock:
            return self._leading_until

    def leading(self) -> bool:
        with self._lock:
            return self._leading_until is not None and self._clock() < self._leading_until

    def view(self) -> PoolLeaseView:
        with self._lock:
            now = self._clock()
            rec = self._record
            mine = self._own_rv is not None and rec is not None
            duration = max(self._last_duration, self._duration)
            left = 0.0 if self._released else max(0.0, duration - (now - self._seen_at))
            expires_at = (
                None
                if mine or rec is None
                else self._seen_at
                if self._released
                else self._seen_at + duration
            )
            return PoolLeaseView(
                holder=rec.holder if rec else None,
                expired=rec is not None and left <= 0.0,
                mine=mine,
                leading=mine and self._leading_until is not None and now < self._leading_until,
                error=self._error,
                absent=rec is None,
                released=self._released,
                duration=duration,
                expires_at=expires_at,
            )

    # ---- writes -------------------------------------------------------------------------------
    def _write(self, fn: Callable[[str], LeaseRecord]) -> str | None:
        stamp = self._backend.new_renew_stamp()
        sent = self._clock()
        with self._lock:
            self._sent.sent(stamp, sent)
        try:
            rec = fn(stamp)
        except LeaseLost as exc:
            self._timed(sent)
            self.last_write_lost = True
            with self._lock:
                self._own_rv = None
                self._leading_until = None
            self.refresh()
            return str(exc)
        except LeaseError as exc:
            self._timed(sent)
            self.last_write_lost = False
            with self._lock:
                self._error = str(exc)
            return str(exc)
        self._timed(sent)
        with self._lock:
            self._own_rv = rec.resource_version
            self._observe(rec, self._clock())
            self._leading_until = sent + self._renew_deadline
            self._error = None
        return None

    def _timed(self, sent: float) -> None:
        seconds = self._clock() - sent
        if self.round_trips is not None:
            self.round_trips.record(seconds)
        self._on_write(seconds)

    def acquire(self) -> str | None:
        """None on success, else why it failed."""
        error = self._confirm_current()
        if error is not None:
            return error
        with self._lock:
            current = self._record
        return self._write(lambda stamp: self._backend.acquire(current, stamp))

    def renew(self) -> str | None:
        with self._lock:
            current = self._record
        if current is None:
            return "the pool lease does not exist"
        return self._write(lambda stamp: self._backend.renew(current, stamp))

    def create_vacant(self) -> str | None:
        """Create the missing Lease with no holder, so that it has a resourceVersion whose
        staying unchanged can be observed; then read it. None on success (or when someone else
        created it first), else why it failed. Only a local leader calls this."""
        with self._lock:
            if self._record is not None or not self._read_once:
                return None
        if self._create_vacant is None:
            return "cannot create the pool lease"
        try:
            self._create_vacant()
        except LeaseLost:
            pass  # created by someone else since our read
        except LeaseError as exc:
            return str(exc)
        self.refresh()
        return None

    def release(self) -> str | None:
        """Clear the holder; only call after the credentials are gone and the node signalled."""
        with self._lock:
            current = self._record
            self._leading_until = None
        if current is None or self._own_rv is None:
            return "not holding the pool lease"
        sent = self._clock()
        try:
            rec = self._backend.release(current)
        except LeaseError as exc:
            self._timed(sent)
            with self._lock:
                self._own_rv = None
            return str(exc)
        self._timed(sent)
        with self._lock:
            self._own_rv = None
            self._observe(rec, self._clock())
        return None

    def forget(self) -> None:
        """Stop believing we hold it (a demotion without a release)."""
        with self._lock:
            self._own_rv = None
            self._leading_until = None
