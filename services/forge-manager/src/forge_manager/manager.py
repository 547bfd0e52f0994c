"""The control loop: snapshots in, decisions out, side effects performed here.

Safety design (see also ``README.md``):

* **Leadership is a deadline, not a flag.** The leader believes it leads only until
  ``t_sent + renew_deadline``, ``t_sent`` being the monotonic time its last *successful* renew (or
  acquire) request was sent. The deadline is checked before and after every API call (each one
  bounded by the request timeout, except the host name lookup, see :mod:`forge_manager.lease`)
  and by an independent guard thread that wakes at the deadline even when the loop is blocked:
  the loop holds no lock during API calls, and a write that succeeds late counts from when it
  was sent. Past it, the credentials are removed and the node is signalled.
  Followers take over only when they have seen no change of the Lease for the lease duration,
  counted from when *they* saw the change; :mod:`forge_manager.timing` refuses timings in which
  demotion would not finish first. A follower sees changes through a watch
  (:mod:`forge_manager.watch`; it reads every cycle while the watch is not live), wakes at the
  instant the Lease expires in its observation (``decision.acquire_at``), and acquires only after
  a quorum read finds the version it timed.
* **Writes only against the version last read.** 409 means lost: demote at once.
* **SIGHUP after every change of the desired forging state,** tracked per node instance (its PIDs):
  a restarted node is signalled again once its socket answers. No node found = no success: the
  failure is counted and retried every cycle.
* **Every error path ends in "not forging".** An exception in a cycle demotes; SIGTERM removes the
  credentials, signals the node, waits for the node to act, then releases the Lease.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from forge_manager import failpoints
from forge_manager.clock import now as boottime_now
from forge_manager.config import Settings
from forge_manager.credentials import CredentialError, CredentialFiles, SourceError
from forge_manager.decision import (
    PERMIT_LOCAL_ONLY,
    CredentialAction,
    ElectionDecision,
    ElectionSnapshot,
    ForgingDecision,
    ForgingSnapshot,
    LeaseAction,
    LeaseView,
    NodeView,
    Permit,
    Signalled,
    StartupState,
    acquire_at,
    decide_election,
    decide_forging,
    is_leading,
    may_signal,
    worth_waking,
)
from forge_manager.lease import LeaseError, LeaseLost, LeaseRecord
from forge_manager.metrics import ForgeMetrics, StateSample
from forge_manager.node_signal import SignalError
from forge_manager.node_sync import OPEN, NodeSyncCheck, SyncGate
from forge_manager.permit_file import PermitError, PermitFile
from forge_manager.switchover import (
    CAPABILITIES,
    CAPABILITIES_ANNOTATION,
    FAST_POLL_S,
    PREFERRED_ANNOTATION,
    Edits,
    Plan,
    Step,
    acquire_edits,
    plan_follower,
    plan_holder,
    stands_aside,
)
from forge_manager.timing import DEMOTION_BUDGET_S
from forge_manager.watch import LeaseWatch, take_watched

log = logging.getLogger("forge_manager")

_ADOPTED = "the lease's annotations changed; renewing against the new version"


class LeaseBackend(Protocol):
    """The seam to the API (``lease.LeaseClient``); unit tests provide their own."""

    def read(self) -> LeaseRecord | None: ...
    def create_vacant(self) -> LeaseRecord: ...
    def acquire(
        self, current: LeaseRecord | None, stamp: str, edits: Edits | None = None
    ) -> LeaseRecord: ...
    def renew(
        self, current: LeaseRecord, stamp: str, edits: Edits | None = None
    ) -> LeaseRecord: ...
    def release(self, current: LeaseRecord, edits: Edits | None = None) -> LeaseRecord: ...
    def annotate(self, current: LeaseRecord, edits: Edits) -> LeaseRecord: ...
    def new_renew_stamp(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class _Election:
    """One election decision and what acting on it needs: the record it was made from, this
    cycle's pod switchover plan, the pod the holder hands the Lease to, and the wall clock."""

    decision: ElectionDecision
    current: LeaseRecord | None
    plan: Plan
    hand_over_to: str | None
    wall: float


TIMER_SLACK_S = 0.001

RELEASE_ATTEMPTS = 5
"""Attempts at a release on shutdown (each bounded by the request timeout, all of them within
the renew deadline): there is no next cycle to send it again, and a release lost to a timeout
or a 409 from an annotation write leaves the Lease to expire, a lease duration instead of at
once."""
RELEASE_RETRY_PAUSE_S = 0.2
"""Waking this much after the follower's acquisition instant: the decision is then due."""


class NodeObserver(Protocol):
    def observe(self) -> NodeView: ...


def view_is_holder(rec: LeaseRecord | None, view: LeaseView | None, identity: str) -> bool:
    return rec is not None and view is not None and view.ours and rec.holder == identity


class ForgeManager:
    def __init__(
        self,
        settings: Settings,
        *,
        lease: LeaseBackend,
        files: CredentialFiles,
        node: NodeObserver,
        signal_node: Callable[[tuple[int, ...]], None],
        metrics: ForgeMetrics | None = None,
        permit: Callable[[], Permit] = lambda: PERMIT_LOCAL_ONLY,
        clock: Callable[[], float] = boottime_now,
        settle: Callable[[float], None] = time.sleep,
        permit_file: PermitFile | None = None,
        wall: Callable[[], float] = time.time,
        on_leadership_change: Callable[[], None] = lambda: None,
        node_sync: NodeSyncCheck | None = None,
        stop_node: Callable[[tuple[int, ...]], str] | None = None,
        emit: Callable[[str, str, str], None] = lambda _reason, _message, _type: None,
        lease_watch: LeaseWatch | None = None,
    ) -> None:
        self.settings = settings
        self._lease = lease
        self._files = files
        self._node = node
        self._signal_node = signal_node
        self._stop_node = stop_node
        """SIGTERM, then SIGKILL after a bound (``NodeWatcher.stop``); returns the signal that
        ended the node. Used when the credentials cannot be removed."""
        self._permit = permit
        self._clock = clock
        self._settle = settle
        self._permit_file = permit_file
        self._wall = wall
        self.on_leadership_change = on_leadership_change
        self.emit = emit
        """An Event on this pod: (reason, message, Normal|Warning). Must not block or raise
        (``events.EventRecorder.record``); called with the lock held."""
        self._forging_since = 0.0
        self.metrics = metrics
        self.identity = settings.pod_name

        self._lock = threading.RLock()
        self._leading_until: float | None = None
        self._view: LeaseView | None = None
        self._record: LeaseRecord | None = None
        self._last_holder: tuple[str, int] | None = None
        """(holderIdentity, leaseTransitions) of the last held record seen: whose release is
        evidence that the holder stopped."""
        self._own_rv: str | None = None
        self._need_read = True
        self._sent: collections.deque[tuple[str, float]] = collections.deque(maxlen=8)
        self._signalled: Signalled | None = None
        self._disabled_at: float | None = None
        """When the node was last signalled to stop forging: a release waits for it to act."""
        self._eligible = True
        self._ineligible_reason = ""
        self._write_error_until = 0.0
        self._write_error = ""
        self._shutting_down = False
        self._last_node = NodeView(pids=(), socket_up=False, booted=False, flag_missing=False)
        self._last_forge_decision = False
        self._forging = False
        self._was_leading = False
        self._flag_reported: tuple[int, ...] | None = None
        self._lookup_reported = ""
        self._last_signal_error = ""
        self.startup_credentials_provisioned = False
        self.last_cycle_completed = clock()
        self._last_reason = ""
        # The node's sync state (node_sync.py): what it forbids this pod, refreshed each cycle.
        self._node_sync = node_sync
        self._sync_gate: SyncGate = OPEN
        # Pod switchover (switchover.py): the last plan's reason (logged once) and whether this
        # pod answered ready to a live request (it then reads the Lease every FAST_POLL_S).
        self._switchover_reason = ""
        self._switchover_waiting = False
        self._handed_over_to: str | None = None
        self._handing_over = False
        self._last_election = ""

        # ---- following the Lease through a watch (``lease_watch``) ----
        self._watch = lease_watch
        self._view_version = ""
        """resourceVersion of what the view shows (for a missing Lease, the last one known):
        a watched record replaces the view only when newer."""
        self._wake = threading.Event()
        """Set to run the next cycle now: a watched change that may free the Lease, shutdown."""

        self._guard_wake = threading.Event()
        self._guard_stop = threading.Event()
        self._guard_thread: threading.Thread | None = None

    # ---- state for the server and the metrics -----------------------------------------------
    def is_local_leader(self) -> bool:
        """Holds the local Lease within its deadline (the input cluster coordination builds on)."""
        with self._lock:
            return is_leading(self._leading_until, self._clock())

    def sample(self) -> StateSample:
        with self._lock:
            return StateSample(
                leader=is_leading(self._leading_until, self._clock()),
                forging=self._forging,
                credentials_present=self._files.any_present(),
                sources_ok=self._eligible or not self._ineligible_reason.startswith("source"),
                node_socket_up=self._last_node.socket_up,
                node_flag_missing=self._last_node.flag_missing,
                seconds_since_cycle=max(0.0, self._clock() - self.last_cycle_completed),
                forging_since=self._forging_since,
            )

    def startup_state(self) -> StartupState:
        """What ``/startup-status`` reports.

        Ready, as the seed says, once the credentials were provisioned or all three target files
        exist; and also when cardano-node already answers on its socket. The startup probe gates
        the node's *start*; a sidecar restarted beside a running node (the kubelet probes a
        restarted native sidecar again) finds no credentials on a standby and must not fail its
        probe until the kubelet restarts it in a loop. A node found running when this manager
        started counts as running even while its socket does not answer (it gets no start-up
        credentials, see ``NodeView.fresh``)."""
        with self._lock:
            node = self._last_node
        if self.startup_credentials_provisioned or self._files.all_present():
            return StartupState.PROVISIONED
        if node.socket_up or (node.pids and not node.fresh):
            return StartupState.NODE_RUNNING
        return StartupState.NOT_READY

    def startup_ready(self) -> bool:
        return self.startup_state() is not StartupState.NOT_READY

    def seconds_since_cycle(self) -> float:
        return self._clock() - self.last_cycle_completed

    # ---- cluster coordination hook (forge_manager.cluster.coordinator) ----------------------
    def reconcile_now(self) -> tuple[bool, str]:
        """Apply a changed permit at once; returns whether demotion is complete (credential
        files gone and the node signalled), which a pool-wide Lease release waits for."""
        with self._lock:
            self._reconcile()
            return self._demotion_confirmed()

    def demotion_settle_left(self) -> float:
        """Seconds left of the node's :data:`DEMOTION_BUDGET_S` to act on its last disabling
        SIGHUP; 0 when it had them, or was never signalled to stop (no node ran: a demotion is
        confirmed only once a running node was signalled). A pool-wide Lease release waits this
        long first, as the local release does."""
        with self._lock:
            if self._disabled_at is None:
                return 0.0
            return max(0.0, self._disabled_at + DEMOTION_BUDGET_S - self._clock())

    # ---- the cycle -------------------------------------------------------------------------------
    def run_cycle(self) -> str:
        """One pass: check sources, reconcile, lease I/O, reconcile. Returns the reason."""
        self._check_sources()
        self._check_node_sync()
        with self._lock:
            self._reconcile()
        election = self._election()
        with self._lock:
            self._last_election = election.reason
            forging = self._reconcile()
        self.last_cycle_completed = self._clock()
        return f"{election.reason}; {forging.reason}"

    def _check_sources(self) -> None:
        try:
            self._files.read_sources()
            problem = ""
        except SourceError as exc:
            problem = str(exc)
            if self.metrics:
                self.metrics.source_errors.inc()
        now = self._clock()
        if not problem and now < self._write_error_until:
            problem = self._write_error
        with self._lock:
            if problem and problem != self._ineligible_reason:
                log.error("credentials unusable, staying out of the election: %s", problem)
                self._event("RefusedToForge", f"credentials unusable: {problem}", "Warning")
            elif not problem and not self._eligible:
                log.info("credentials usable again; taking part in the election")
            self._eligible = not problem
            self._ineligible_reason = problem

    def _check_node_sync(self) -> None:
        """A node that is not synced keeps a standby out of the election; a leader's, after the
        grace, stops forging and then releases (node_sync.decide_gate). Never blocks."""
        if self._node_sync is None:
            return
        gate = self._node_sync.gate(leading=self.is_local_leader())
        with self._lock:
            blocked = gate.forge or gate.election
            if blocked and blocked != (self._sync_gate.forge or self._sync_gate.election):
                self._event("RefusedToForge", blocked, "Warning")
            self._sync_gate = gate

    # ---- election ------------------------------------------------------------------------------
    def _observe_record(
        self,
        rec: LeaseRecord | None,
        seen_at: float,
        *,
        watched: bool = False,
        version: str | None = None,
    ) -> None:
        """Record a read; must hold the lock.

        A record that changed is timed from ``seen_at``. A record whose holder was cleared by
        anyone but the holder (and term) we last saw carries no evidence that the old holder
        stopped: it is timed like an unchanged record (a lease duration from when we first saw
        it so), with at least the duration of the record seen before. A missing Lease is never
        timed (see :class:`LeaseView`): the election creates it vacant, and that record is timed
        with at least the duration of the record seen before the Lease went missing. The same
        holds for a watched Lease seen missing twice (a relist after a broken watch is "two
        reads"): only its vacant record is timed.

        ``watched``: the record comes from the watch (``version`` is its resourceVersion, or
        the one at which the Lease was seen missing). Only a follower takes it, and it never
        makes the record ours: a write of ours whose answer was lost is recognised by a quorum
        read only."""
        if version is not None:
            self._view_version = version
        elif rec is not None:
            self._view_version = rec.resource_version
        self._record = rec
        prev = self._view
        own_duration = float(self.settings.lease_duration)
        if rec is None:
            if self._own_rv is not None:
                self._lost("the lease was deleted")
            self._view = LeaseView(
                holder=None,
                resource_version="",
                duration=max(own_duration, prev.duration if prev is not None else 0.0),
                observed_change_at=seen_at,
                ours=False,
                exists=False,
            )
            return
        ours = rec.resource_version == self._own_rv
        if not ours and not watched and rec.holder == self.identity and rec.renew_time:
            sent = dict(self._sent).get(rec.renew_time)
            if sent is not None:  # our write whose response we never got
                ours = True
                self._own_rv = rec.resource_version
                deadline = sent + self.settings.renew_deadline
                if self._leading_until is None or deadline > self._leading_until:
                    self._leading_until = deadline
        if not ours and self._own_rv is not None:
            self._lost(f"the lease is now held by {rec.holder or 'nobody'}")
        same = prev is not None and prev.resource_version == rec.resource_version
        duration = max(float(rec.duration_seconds or 0), own_duration)
        released_by: str | None = None
        handed_to: str | None = None
        if not rec.holder:
            if rec.released_by is not None and self._last_holder == (
                rec.released_by,
                rec.transitions,
            ):
                released_by = rec.released_by
                handed_to = stands_aside(rec.annotations, self.identity)
            elif prev is not None:
                duration = max(duration, prev.duration)
        else:
            self._last_holder = (rec.holder, rec.transitions)
        self._view = LeaseView(
            holder=rec.holder,
            resource_version=rec.resource_version,
            duration=duration,
            observed_change_at=prev.observed_change_at if prev is not None and same else seen_at,
            ours=ours,
            released_by=released_by,
            handed_to=handed_to,
        )

    def _lost(self, why: str) -> None:
        if is_leading(self._leading_until, self._clock()):
            log.warning("lost the lease: %s; demoting", why)
        self._own_rv = None
        self._leading_until = None
        self._guard_wake.set()

    def _election(self) -> ElectionDecision:
        decision = self._election_once()
        if decision.action is LeaseAction.RENEW and decision.reason.startswith(_ADOPTED):
            decision = self._election_once()  # once: renew against the version just read
        return decision

    def _switchover_plan(self, error: str | None) -> Plan:
        """This cycle's pod switchover step (lock held); logs a new reason once."""
        rec, view = self._record, self._view
        plan = Plan(Step.NONE, "", {})
        if error is None and rec is not None and view is not None and not self._shutting_down:
            wall = self._wall()
            if view.ours and rec.holder == self.identity:
                plan = plan_holder(rec.annotations, self.identity, wall)
            elif not view.ours:
                unable = (
                    self._ineligible_reason
                    or self._sync_gate.election
                    or ("" if self._last_node.socket_up else "its cardano-node is not up")
                )
                plan = plan_follower(
                    rec.annotations, self.identity, wall, held=bool(rec.holder), unable=unable
                )
        self._switchover_waiting = plan.waiting
        if plan.reason and plan.reason != self._switchover_reason:
            log.info("%s", plan.reason)
            if plan.step is Step.WRITE and not view_is_holder(rec, view, self.identity):
                refused = "refused" in plan.reason
                self._event(
                    "SwitchoverRefused" if refused else "SwitchoverReady",
                    plan.reason,
                    "Warning" if refused else "Normal",
                )
        self._switchover_reason = plan.reason
        return plan

    def _election_once(self) -> ElectionDecision:
        error: str | None = None
        with self._lock:
            skip_read = (
                not self._need_read and self._own_rv is not None and self._record is not None
            )
            # A follower (no write of ours outstanding) takes the watched record when the watch
            # is live; otherwise, and after any failed write, a quorum read as before.
            may_watch = not self._need_read and self._own_rv is None
        watched = False
        if not skip_read:
            watched = may_watch and self._take_watched()
            if not watched:
                error = self._read_lease()
        e = self._decide_election(error)
        if e.decision.action is LeaseAction.ACQUIRE and watched:
            # The acquisition rests on a quorum read, not on the watch: the record must still
            # be the version timed (the write's resourceVersion precondition checks it again).
            timed = e.current.resource_version if e.current is not None else ""
            error = self._read_lease()
            e = self._decide_election(error)
            now_version = e.current.resource_version if e.current is not None else ""
            if error is None and now_version != timed and self._watch is not None:
                self._watch.resync()
        decision, current, plan = e.decision, e.current, e.plan
        if decision.action is LeaseAction.CREATE:
            # Needs no quorum read: the create fails (409) if the Lease exists after all.
            return self._create_vacant(decision)
        if decision.action is LeaseAction.ACQUIRE:
            edits = acquire_edits(current.annotations if current else {}, self.identity, e.wall)
            return self._write(decision, lambda stamp: self._lease.acquire(current, stamp, edits))
        if decision.action is LeaseAction.RENEW and current is not None:
            edits = {CAPABILITIES_ANNOTATION: CAPABILITIES, **plan.edits}
            return self._write(decision, lambda stamp: self._lease.renew(current, stamp, edits))
        elif decision.action is LeaseAction.RELEASE:
            return self._release(hand_over_to=e.hand_over_to)
        if (
            plan.step is Step.WRITE
            and decision.action is LeaseAction.NONE
            and current is not None
            and current.holder != self.identity
        ):
            self._annotate(current, plan)
        return decision

    def _read_lease(self) -> str | None:
        """A quorum read of the Lease into the view; returns why it failed, or None."""
        try:
            rec = self._lease.read()
        except LeaseError as exc:
            if self.metrics:
                self.metrics.lease_errors.labels("read").inc()
            return str(exc)
        with self._lock:
            self._observe_record(rec, self._clock())
            self._need_read = False
        return None

    def _take_watched(self) -> bool:
        """Take the watched record into the view when it is newer than what the view shows;
        False when the watch cannot be used (not live, or versions that cannot be compared)."""
        return take_watched(
            self._watch, self._lock, lambda: self._view_version, self._observe_record
        )

    def _decide_election(self, error: str | None) -> _Election:
        """Decide from the view (and this cycle's switchover plan); no I/O."""
        with self._lock:
            snap = ElectionSnapshot(
                now=self._clock(),
                identity=self.identity,
                lease=self._view,
                lease_error=error,
                eligible=self._eligible and not self._sync_gate.election,
                ineligible_reason=self._ineligible_reason or self._sync_gate.election,
                shutting_down=self._shutting_down,
                leading_until=self._leading_until,
                hand_over_to=None,
            )
            plan = self._switchover_plan(error)
            if plan.step is Step.HAND_OVER and snap.eligible:
                snap = dataclasses.replace(snap, hand_over_to=plan.to)
            return _Election(
                decide_election(snap), self._record, plan, snap.hand_over_to, self._wall()
            )

    def lease_changed(self, before: LeaseRecord | None, after: LeaseRecord | None) -> None:
        """The watch saw the Lease change (its thread): run the next cycle now when the change
        may free the Lease sooner than the timer (a release, a new holder, a deletion)."""
        if worth_waking(before, after):
            log.info(
                "the watch saw the lease change (holder %s -> %s%s, resourceVersion %s); "
                "deciding now",
                (before.holder or "none") if before is not None else "(no lease)",
                (after.holder or "none") if after is not None else "(no lease)",
                f", released by {after.released_by}"
                if after is not None and after.released_by
                else "",
                after.resource_version if after is not None else "-",
            )
            self._wake.set()

    def wake(self) -> None:
        """Run the next cycle now (shutdown, or a watched change)."""
        self._wake.set()

    def seconds_to_next_cycle(self, started: float) -> float:
        """Seconds until the next cycle: the rest of the retry period, or less when the
        leadership deadline or the acquisition timer (``decision.acquire_at``) falls earlier,
        and at most ``switchover.FAST_POLL_S`` while this pod answered ready to a pod switchover
        (so that it takes the release at once). Only ever a shorter pause: what the next cycle
        may do is still decided from the record and the clock alone."""
        now = self._clock()
        pause = self.settings.retry_period - (now - started)
        with self._lock:
            until = self._leading_until
            due = acquire_at(self._view, self.identity)
            waiting = self._switchover_waiting
        if until is not None and until > now:
            pause = min(pause, until - now)
        if due is not None and due > now:
            pause = min(pause, due - now + TIMER_SLACK_S)
        if waiting:
            pause = min(pause, FAST_POLL_S)
        return max(0.0, pause)

    def _annotate(self, current: LeaseRecord, plan: Plan) -> None:
        """A follower's answer to a switchover request (a write of annotations only)."""
        try:
            rec = self._lease.annotate(current, plan.edits)
        except LeaseError as exc:
            with self._lock:
                self._need_read = True
            log.info("switchover answer not written (%s); trying again", exc)
            return
        with self._lock:
            self._observe_record(rec, self._clock())

    def _adopt_annotated(self, current: LeaseRecord | None) -> bool:
        """After a 409 on renew: whether the Lease is still our own last write with only its
        annotations changed (a switchover request or answer); if so its new version is adopted,
        the leadership deadline unchanged (lock not held)."""
        if current is None:
            return False
        try:
            rec = self._lease.read()
        except LeaseError:
            return False
        with self._lock:
            if (
                rec is None
                or rec.holder != self.identity
                or rec.uid != current.uid
                or rec.renew_time is None
                or rec.renew_time != current.renew_time
                or rec.renew_time not in dict(self._sent)
                or not is_leading(self._leading_until, self._clock())
            ):
                return False
            self._own_rv = rec.resource_version
            self._observe_record(rec, self._clock())
            self._need_read = False
            return True

    def _create_vacant(self, decision: ElectionDecision) -> ElectionDecision:
        """Create the missing Lease without a holder; never a leadership write (no deadline, no
        stamp). A 409 means another pod created it first: read it next cycle."""
        try:
            rec = self._lease.create_vacant()
        except LeaseError as exc:
            with self._lock:
                self._need_read = True
            if self.metrics:
                self.metrics.lease_errors.labels("create").inc()
            level = logging.INFO if isinstance(exc, LeaseLost) else logging.WARNING
            log.log(level, "creating the vacant lease failed: %s", exc)
            return ElectionDecision(LeaseAction.NONE, f"creating the vacant lease failed: {exc}")
        with self._lock:
            self._observe_record(rec, self._clock())
        return decision

    def _write(
        self, decision: ElectionDecision, call: Callable[[str], LeaseRecord]
    ) -> ElectionDecision:
        op = decision.action.value
        stamp = self._lease.new_renew_stamp()
        t_sent = self._clock()
        with self._lock:
            self._sent.append((stamp, t_sent))
        try:
            rec = call(stamp)
        except LeaseLost as exc:
            if decision.action is LeaseAction.RENEW and self._adopt_annotated(self._record):
                log.info("the lease's annotations changed since our renew; renewing again")
                return ElectionDecision(LeaseAction.RENEW, f"{_ADOPTED} ({exc})")
            with self._lock:
                self._need_read = True
                self._lost(str(exc))
            if self.metrics:
                self.metrics.lease_errors.labels(op).inc()
            log.info("%s failed: %s", op, exc)
            return ElectionDecision(LeaseAction.NONE, f"{op} failed, lease lost: {exc}")
        except LeaseError as exc:
            with self._lock:
                self._need_read = True
            if self.metrics:
                self.metrics.lease_errors.labels(op).inc()
                if decision.action is LeaseAction.RENEW:
                    self.metrics.lease_renew_latency.observe(self._clock() - t_sent)
            log.warning("%s failed: %s", op, exc)
            with self._lock:
                until = self._leading_until
            left = "" if until is None else f"; leading for at most {until - self._clock():.1f} s"
            return ElectionDecision(LeaseAction.NONE, f"{op} failed ({exc}){left}")
        received = self._clock()
        if self.metrics and decision.action is LeaseAction.RENEW:
            self.metrics.lease_renew_latency.observe(received - t_sent)
        if decision.action is LeaseAction.ACQUIRE:
            log.info(
                "acquired the lease at resourceVersion %s (the write took %.0f ms)",
                rec.resource_version,
                (received - t_sent) * 1000,
            )
        with self._lock:
            self._own_rv = rec.resource_version
            self._observe_record(rec, received)
            self._leading_until = t_sent + self.settings.renew_deadline
            self._guard_wake.set()
        return decision

    def _demotion_confirmed(self) -> tuple[bool, str]:
        """Credentials gone and the running node told so (must hold the lock)."""
        if self._files.any_present():
            return False, "credential files are still present"
        node = self._last_node
        if node.pids and self._signalled != Signalled(node.pids, False):
            return False, "the node has not been signalled to stop forging"
        if not node.pids and node.socket_up:
            return False, "the node answers on its socket but its process cannot be signalled"
        return True, ""

    def _release(self, hand_over_to: str | None = None) -> ElectionDecision:
        """Release after demotion is complete and the node had :data:`DEMOTION_BUDGET_S` since
        its disabling SIGHUP to act on it (cardano-node reconfigures asynchronously), whatever
        the cause: shutdown, an ineligible pod, or a pod switchover (``hand_over_to``: this pod
        stops leading first, and the release names the pod in ``cardano.io/preferred-holder``)."""
        with self._lock:
            if hand_over_to is not None:
                self._leading_until = None
                self._handing_over = True
                self._guard_wake.set()
            try:
                self._reconcile()
            finally:
                self._handing_over = False
            ok, why = self._demotion_confirmed()
            current = self._record
            self._leading_until = None
            settle = (
                0.0
                if self._disabled_at is None
                else self._disabled_at + DEMOTION_BUDGET_S - self._clock()
            )
        if not ok or current is None:
            return ElectionDecision(
                LeaseAction.NONE,
                f"not releasing the lease ({why}); it will expire instead",
            )
        if settle > 0:
            self._settle(settle)
        edits: Edits | None = {PREFERRED_ANNOTATION: hand_over_to} if hand_over_to else None
        t_sent = self._clock()
        try:
            rec = self._lease.release(current, edits)
        except LeaseError as exc:
            if self.metrics:
                self.metrics.lease_errors.labels("release").inc()
            with self._lock:
                self._need_read = True
                again = self._shutting_down
            if again:
                log.warning("releasing the lease failed (%s); sending it again", exc)
            found = self._release_again(current, edits, exc) if again else None
            if found is None:
                return ElectionDecision(
                    LeaseAction.NONE, f"releasing the lease failed ({exc}); it will expire instead"
                )
            rec = found
        log.info(
            "released the lease at resourceVersion %s (%.0f ms after the first attempt)",
            rec.resource_version,
            (self._clock() - t_sent) * 1000,
        )
        with self._lock:
            self._own_rv = None
            self._observe_record(rec, self._clock())
            self._handed_over_to = hand_over_to
        if hand_over_to:
            with self._lock:
                self._event("HandedOver", f"handed the lease over to {hand_over_to} (switchover)")
            return ElectionDecision(LeaseAction.RELEASE, f"handed the lease over to {hand_over_to}")
        return ElectionDecision(LeaseAction.RELEASE, "released the lease")

    def _release_again(
        self, sent: LeaseRecord, edits: Edits | None, first: LeaseError
    ) -> LeaseRecord | None:
        """On shutdown, after a failed release of ``sent`` (lock not held): read the Lease
        (quorum) and send the release again while the record is still this pod's own term (its
        name, the object's UID and the same ``leaseTransitions``: only annotations may have
        changed, or nothing). The released record once it is (also when a quorum read shows that
        an earlier attempt was applied although its answer was lost); None when the Lease went
        to anyone else or was deleted (never released: a release names its holder, and another
        pod's record cleared in its name would be taken at once while it may forge), or after
        :data:`RELEASE_ATTEMPTS` or the renew deadline."""
        give_up = self._clock() + self.settings.renew_deadline
        error: LeaseError = first
        for _attempt in range(RELEASE_ATTEMPTS - 1):
            if self._clock() >= give_up:
                break
            self._settle(RELEASE_RETRY_PAUSE_S)
            try:
                rec = self._lease.read()
            except LeaseError as exc:
                error = exc
                continue
            same_term = (
                rec is not None and rec.uid == sent.uid and rec.transitions == sent.transitions
            )
            if (
                rec is not None
                and same_term
                and not rec.holder
                and rec.released_by == self.identity
            ):
                log.info("the release was applied although its answer was lost (%s)", error)
                return rec
            if rec is None or not same_term or rec.holder != self.identity:
                log.warning(
                    "not releasing the lease again: it is now %s",
                    "deleted" if rec is None else f"held by {rec.holder or 'nobody'}",
                )
                return None
            log.info("releasing the lease again (%s)", error)
            try:
                return self._lease.release(rec, edits)
            except LeaseError as exc:
                error = exc
                if self.metrics:
                    self.metrics.lease_errors.labels("release").inc()
        return None

    # ---- forging -------------------------------------------------------------------------------
    def _forging_snapshot(self, node: NodeView) -> ForgingSnapshot:
        return ForgingSnapshot(
            now=self._clock(),
            leading_until=self._leading_until,
            permit=self._permit(),
            eligible=self._eligible,
            ineligible_reason=self._ineligible_reason,
            shutting_down=self._shutting_down,
            node=node,
            credentials_present=self._files.any_present(),
            signalled=self._signalled,
            node_unsynced=self._sync_gate.forge,
        )

    def _reconcile(self) -> ForgingDecision:
        """Bring files and node in line with the decision; must hold the lock.

        What a decision to forge rests on (the leadership deadline, the cluster permit) is
        checked again immediately before the install and before the enabling SIGHUP: a manager
        frozen after deciding (SIGSTOP, CPU throttling, a long GC pause) may resume after its
        deadline passed and another pod took over."""
        node = self._node.observe()
        self._last_node = node
        self._report_flag(node)
        self._report_lookup(node)
        decision = decide_forging(self._forging_snapshot(node))
        install = decision.credentials is CredentialAction.INSTALL
        if decision.forge and not self._grant_permit(rewrite=install):
            decision = decide_forging(self._forging_snapshot(node))
        if decision.forge and decision.credentials is CredentialAction.INSTALL:
            failpoints.hit("before_install")
        decision = self._confirm(decision, node, "install")
        decision, wrote = self._apply_credentials(decision, node)

        wanted = Signalled(node.pids, decision.forge)
        rotated = wrote and decision.forge and self._signalled == wanted and node.booted
        if decision.forge and (decision.signal or rotated):
            failpoints.hit("before_enable_signal")
            confirmed = self._confirm(decision, node, "enable")
            if confirmed is not decision:
                decision, _ = self._apply_credentials(confirmed, node)
                wanted = Signalled(node.pids, decision.forge)
                rotated = False
        if decision.signal or rotated:
            reason = (
                "credentials_updated"
                if rotated and not decision.signal
                else ("enable" if decision.forge else "disable")
            )
            if decision.forge:
                failpoints.hit("after_enable_check")
            self._sighup(node, wanted, reason)

        if not decision.forge:
            self._withdraw_permit()
        self._track_transitions(decision, node)
        self._last_forge_decision = decision.forge
        return decision

    def _confirm(self, decision: ForgingDecision, node: NodeView, action: str) -> ForgingDecision:
        """``decision`` when it still holds right now, else the decision taken now (lock held).

        The clock is read last, immediately before the caller acts."""
        if not decision.forge:
            return decision
        permit = self._permit()
        present = self._files.any_present()
        now = self._clock()
        if is_leading(self._leading_until, now) and permit.granted:
            return decision
        snapshot = ForgingSnapshot(
            now=now,
            leading_until=self._leading_until,
            permit=permit,
            eligible=self._eligible,
            ineligible_reason=self._ineligible_reason,
            shutting_down=self._shutting_down,
            node=node,
            credentials_present=present,
            signalled=self._signalled,
        )
        current = decide_forging(snapshot)
        if self.metrics:
            self.metrics.stale_decisions.labels(action).inc()
        log.warning(
            "not acting (%s) on a decision to forge taken before a pause: %s",
            action,
            current.reason,
        )
        return current

    def _apply_credentials(
        self, decision: ForgingDecision, node: NodeView
    ) -> tuple[ForgingDecision, bool]:
        """Install or remove as decided (lock held); returns the decision acted on (another one
        when the install failed) and whether files were written."""
        wrote = False
        if decision.credentials is CredentialAction.INSTALL:
            try:
                wrote = self._files.install()
            except (SourceError, CredentialError) as exc:
                self._credential_failure("install", exc)
                decision = decide_forging(self._forging_snapshot(node))
            else:
                self.startup_credentials_provisioned = True
                if wrote:
                    self._count_credentials("install")
                    log.info("credentials installed (%s)", decision.reason)
        if decision.credentials is CredentialAction.REMOVE:
            try:
                if self._files.remove():
                    self._count_credentials("remove")
                    log.info("credentials removed (%s)", decision.reason)
            except CredentialError as exc:
                self._credential_failure("remove", exc)
                self._stop(node, str(exc))
        return decision, wrote

    def _stop(self, node: NodeView, why: str) -> None:
        """The credentials could not be removed, so a SIGHUP cannot stop forging: stop the node
        (SIGTERM, then SIGKILL after a bound). Lock held."""
        if not node.pids:
            log.critical("%s, and no cardano-node process was found to stop", why)
            return
        if self._stop_node is None:
            log.critical("%s, and this manager cannot stop cardano-node", why)
            return
        try:
            how = self._stop_node(node.pids)
        except SignalError as exc:
            if self.metrics:
                self.metrics.signal_failures.labels(exc.reason).inc()
            log.critical("%s, and stopping cardano-node %s failed: %s", why, list(node.pids), exc)
            return
        self._signalled = None
        if self.metrics:
            self.metrics.node_stops.labels(how.lower()).inc()
        log.critical(
            "%s: stopped cardano-node %s with %s so that it cannot forge with them",
            why,
            list(node.pids),
            how,
        )

    def _grant_permit(self, *, rewrite: bool = False) -> bool:
        """Extend forge-guard's permit to the leadership deadline before forging (lock held).

        ``rewrite``: before an install, a new permit file even under an unchanged deadline, so
        credentials installed again after forge-guard revoked the previous file are fenced.
        False when it cannot be written: the pod then stays out of the election for a lease
        duration, like a failed credential write."""
        if self._permit_file is None or self._leading_until is None:
            return True
        until = self._leading_until
        cluster_until = self._permit().until
        if cluster_until is not None:
            until = min(until, cluster_until)
        try:
            self._permit_file.grant(until, rewrite=rewrite)
        except PermitError as exc:
            self._credential_failure("install", CredentialError(str(exc)))
            return False
        return True

    def _withdraw_permit(self) -> None:
        """Delete the permit (ours, or one a previous incarnation left) once demotion is
        complete; until then its deadline stands (lock held)."""
        if self._permit_file is None or not self._permit_file.outstanding:
            return
        if not self._demotion_confirmed()[0]:
            return
        try:
            self._permit_file.withdraw()
        except PermitError as exc:
            log.error("%s; forge-guard will act when its deadline passes", exc)

    def _sighup(self, node: NodeView, wanted: Signalled, reason: str) -> None:
        try:
            self._signal_node(node.pids)
        except SignalError as exc:
            if self.metrics:
                self.metrics.signal_failures.labels(exc.reason).inc()
            if str(exc) != self._last_signal_error:
                log.error("cannot signal cardano-node to %s forging: %s; retrying", reason, exc)
            self._last_signal_error = str(exc)
            return
        self._last_signal_error = ""
        self._signalled = wanted
        if not wanted.forging:
            self._disabled_at = self._clock()
        if self.metrics:
            self.metrics.sighup_signals.labels(reason).inc()
        log.info("sent SIGHUP to cardano-node %s (%s forging)", list(node.pids), reason)

    def _count_credentials(self, op: str) -> None:
        if self.metrics:
            self.metrics.credential_operations.labels(op).inc()

    def _credential_failure(self, op: str, exc: Exception) -> None:
        if self.metrics:
            self.metrics.credential_failures.labels(op).inc()
        log.error("credential %s failed: %s", op, exc)
        if op in ("install", "remove"):
            # A pod that cannot write or remove the credentials stays out of the election.
            self._eligible = False
            self._ineligible_reason = str(exc)
            if isinstance(exc, CredentialError):
                self._write_error = str(exc)
                self._write_error_until = self._clock() + self.settings.lease_duration

    def _report_flag(self, node: NodeView) -> None:
        if node.flag_missing and node.pids and self._flag_reported != node.pids:
            self._flag_reported = node.pids
            if self.metrics:
                self.metrics.flag_missing_events.inc()
            log.error(
                "cardano-node %s runs WITHOUT --start-as-non-producing-node: it forges whenever "
                "it boots with credentials present; add the flag to its command line",
                list(node.pids),
            )

    def _report_lookup(self, node: NodeView) -> None:
        if node.lookup_problem and node.lookup_problem != self._lookup_reported:
            if self.metrics:
                self.metrics.pid_file_mismatches.inc()
            log.error("%s", node.lookup_problem)
        self._lookup_reported = node.lookup_problem

    def _track_transitions(self, decision: ForgingDecision, node: NodeView) -> None:
        leading = is_leading(self._leading_until, self._clock())
        if leading != self._was_leading:
            self._was_leading = leading
            if self.metrics:
                self.metrics.leadership_changes.inc()
            log.info("leadership %s", "gained" if leading else "lost")
            if leading:
                self._event("LeaderElected", f"{self.identity} leads: {self._last_election}")
            else:
                self._event(
                    "LeadershipLost",
                    f"{self.identity} no longer leads ({self._demotion_cause()}): "
                    f"{self._last_election}",
                    "Normal" if self._handing_over or self._shutting_down else "Warning",
                )
            self.on_leadership_change()
        forging = (
            decision.forge
            and self._files.all_present()
            and self._signalled == Signalled(node.pids, True)
            and bool(node.pids)
        )
        if self._forging and not forging:
            cause = self._demotion_cause()
            if self.metrics:
                self.metrics.demotions.labels(cause).inc()
            self._event("ForgingDisabled", f"forging stopped ({cause}): {decision.reason}")
        if forging and not self._forging:
            self._event("ForgingEnabled", f"forging: {decision.reason}")
        if forging and not self._forging:
            # Taken right after the SIGHUP: within the signal latency of the node's real start.
            self._forging_since = self._wall()
        elif not forging:
            self._forging_since = 0.0
        self._forging = forging

    def _event(self, reason: str, message: str, type_: str = "Normal") -> None:
        try:
            self.emit(reason, message, type_)
        except Exception:  # an Event must never cost a transition
            log.debug("emitting an Event failed", exc_info=True)

    def _demotion_cause(self) -> str:
        if self._shutting_down:
            return "shutdown"
        if self._handing_over:
            return "switchover"
        if not self._eligible:
            return "credentials"
        if self._sync_gate.forge:
            return "node_not_synced"
        if self._leading_until is None:
            return "lease_lost"
        if not is_leading(self._leading_until, self._clock()):
            return "renew_deadline"
        return "not_permitted"

    # ---- the guard -----------------------------------------------------------------------------
    def _guard(self) -> None:
        """Demote at the leadership deadline even while the loop is blocked."""
        while not self._guard_stop.is_set():
            with self._lock:
                until = self._leading_until
            wait = 1.0 if until is None else min(1.0, max(0.0, until - self._clock()) + 0.001)
            self._guard_wake.wait(wait)
            self._guard_wake.clear()
            with self._lock:
                if (
                    self._leading_until is not None
                    and self._last_forge_decision
                    and not is_leading(self._leading_until, self._clock())
                ):
                    decision = self._reconcile()
                    log.warning("deadline guard: %s", decision.reason)

    def start_guard(self) -> None:
        self._guard_thread = threading.Thread(
            target=self._guard, name="deadline-guard", daemon=True
        )
        self._guard_thread.start()

    def stop_guard(self) -> None:
        self._guard_stop.set()
        self._guard_wake.set()
        if self._guard_thread is not None:
            self._guard_thread.join(timeout=2)

    # ---- running ---------------------------------------------------------------------------------
    def emergency_demote(self, why: str) -> None:
        """After an unexpected error: forget leadership, remove credentials, signal the node."""
        with self._lock:
            self._leading_until = None
            self._own_rv = None
            self._need_read = True
            try:
                self._reconcile()
                return
            except Exception:
                log.exception("reconciling after %s failed; removing credentials directly", why)
            node = self._last_node
            removed = True
            try:
                self._files.remove()
            except CredentialError as exc:
                removed = False  # a SIGHUP cannot help: stop the node
                self._credential_failure("remove", exc)
                self._stop(node, str(exc))
            # A node that may still be booting is not signalled: before its handler is installed
            # a SIGHUP kills it, and during start-up it does nothing for forging.
            if removed and node.pids and may_signal(node, forge=False):
                try:
                    self._signal_node(node.pids)
                    self._signalled = Signalled(node.pids, False)
                    self._disabled_at = self._clock()
                except SignalError as exc:
                    log.critical("cannot signal cardano-node: %s", exc)
            self._forging = False
            self._forging_since = 0.0

    def step(self) -> str:
        """One cycle, with any exception turned into demotion."""
        try:
            reason = self.run_cycle()
        except Exception:
            log.exception("control loop cycle failed; demoting")
            if self.metrics:
                self.metrics.loop_exceptions.inc()
            self.emergency_demote("an exception")
            return "cycle failed with an exception; demoted"
        if reason != self._last_reason:
            log.info("%s", reason)
            self._last_reason = reason
        else:
            log.debug("%s", reason)
        return reason

    def run(self, stop: threading.Event) -> None:
        """Cycle every retry period (sooner at the leadership deadline, at the acquisition
        timer, or when :meth:`wake` is called) until ``stop`` is set (call :meth:`wake` with it),
        then shut down."""
        self.start_guard()
        try:
            while not stop.is_set():
                started = self._clock()
                self.step()
                if self._wake.wait(self.seconds_to_next_cycle(started)):
                    self._wake.clear()
        finally:
            self.shutdown()
            self.stop_guard()

    def shutdown(self) -> str:
        """Remove credentials, signal the node, let it act, then release the lease."""
        with self._lock:
            self._shutting_down = True
            try:
                self._reconcile()
            except Exception:
                log.exception("reconciling on shutdown failed")
                self.emergency_demote("shutdown")
        # The release (in _release) gives the node time to act on the disabling SIGHUP first.
        try:
            decision = self._election()
        except Exception:
            log.exception("releasing the lease on shutdown failed")
            decision = ElectionDecision(LeaseAction.NONE, "release failed; the lease will expire")
        log.info("shutdown: %s", decision.reason)
        return decision.reason
