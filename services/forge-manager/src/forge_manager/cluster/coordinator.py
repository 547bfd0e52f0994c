"""The cluster-wide loop: read the coordination API, decide (:mod:`.policy`), act.

It runs in a thread of its own beside the forge manager's loop, so a slow coordination API (often
a shared server in another region) never delays the renewal of the local Lease. The two meet at
two narrow seams:

* :meth:`ClusterCoordinator.permit` is the manager's ``permit`` input: granted only while this pod
  holds the pool-wide Lease within its renew deadline and the last decision allowed forging. It
  does no I/O and reads the monotonic clock at every call, so it turns false by itself at the
  deadline; the manager re-evaluates it at every reconcile.
* ``reconcile()`` (the manager's ``reconcile_now``) makes the manager bring the credential files
  and the node in line with the permit at once, and tells whether the demotion is complete
  (files gone, node signalled). A hand-over releases the pool-wide Lease only after that.

One cycle, for the local leader: list every CardanoForgeCluster and heartbeat Lease, seed this
region's resource from the environment if it is absent, read the pool-wide Lease, decide, renew
this region's heartbeat, write this region's status (before any Lease action, so that peers see
the new effective priority when the Lease becomes free), then acquire, renew or hand over. A
follower only reads the pool-wide Lease (so that, should it become the local leader, it already
knows how long the record has been unchanged) and never writes anything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from forge_manager.clock import now as boottime_now
from forge_manager.cluster.health_check import HealthChecker, HealthSnapshot
from forge_manager.cluster.liveness import LivenessTracker
from forge_manager.cluster.metrics import ClusterMetrics
from forge_manager.cluster.model import (
    HEALTH_PENALTY,
    RegionRecord,
    effective,
    format_time,
    parse_region,
)
from forge_manager.cluster.policy import (
    ClusterAction,
    ClusterDecision,
    ClusterView,
    PeerView,
    decide,
    wake_at,
)
from forge_manager.cluster.pool_lease import PoolLease
from forge_manager.cluster.resource import CoordinationError, ResourceConflict, ResourceNotFound
from forge_manager.cluster.round_trips import ProbeResult
from forge_manager.cluster.settings import ClusterSettings
from forge_manager.decision import Permit
from forge_manager.timing import DEMOTION_BUDGET_S
from forge_manager.watch import Runnable

log = logging.getLogger("forge_manager.cluster")

_CONDITION_REASON = {
    ClusterAction.ACQUIRE: "AcquiredPoolLease",
    ClusterAction.KEEP: "HoldingPoolLease",
    ClusterAction.HAND_OVER: "HandedOver",
    ClusterAction.STEP_DOWN: "SteppedDown",
    ClusterAction.STAND_BY: "StandingBy",
}
_EVENT_REASON = {
    ClusterAction.ACQUIRE: "AcquiredPoolLease",
    ClusterAction.HAND_OVER: "HandedOverPool",
    ClusterAction.STEP_DOWN: "SteppedDown",
}


class ResourceStore(Protocol):
    def list(self) -> list[dict[str, Any]]: ...
    def create(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def replace_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]: ...


class Heartbeats(Protocol):
    def list(self) -> dict[str, str]: ...
    def observed(self) -> dict[str, tuple[str, float]] | None:
        """(token, when first seen) by region from a live watch; None: call :meth:`list`."""

    def beat(self, region: str, pod: str) -> None: ...


class ClusterCoordinator:
    def __init__(
        self,
        settings: ClusterSettings,
        *,
        pod: str,
        renew_deadline: float,
        retry_period: float,
        store: ResourceStore,
        heartbeats: Heartbeats,
        pool: PoolLease,
        health: HealthChecker,
        seed: dict[str, Any],
        local_leader: Callable[[], bool],
        reconcile: Callable[[], tuple[bool, str]],
        metrics: ClusterMetrics | None = None,
        clock: Callable[[], float] = boottime_now,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        settle: Callable[[float], None] = time.sleep,
        api_probe: Callable[[], ProbeResult] | None = None,
        settle_left: Callable[[], float] = lambda: DEMOTION_BUDGET_S,
    ) -> None:
        self.settings = settings
        self.region = settings.crd_name
        self.pod = pod
        self._renew_deadline = renew_deadline
        self._retry_period = retry_period
        self._store = store
        self._heartbeats = heartbeats
        self.pool = pool
        self.health = health
        self._seed = seed
        self._local_leader = local_leader
        self._reconcile = reconcile
        self.metrics = metrics
        self._clock = clock
        self._wall = wall
        self._settle = settle
        self._api_probe = api_probe
        self._settle_left = settle_left
        """What is left of the node's time to act on its disabling SIGHUP (the manager's
        ``demotion_settle_left``): a release waits that long first, and no longer."""

        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._granted = False
        self._permit_reason = "cluster coordination has not decided yet"
        self._liveness = LivenessTracker()
        self._was_leader = False
        self._last_read_ok_at: float | None = None
        self._last_records: list[RegionRecord] = []
        self._own_obj: dict[str, Any] | None = None
        self._last_beat: float | None = None
        self._written_status: dict[str, Any] | None = None
        self._transitions: dict[str, tuple[str, str]] = {}
        self._write_failures = 0
        self._write_failure: tuple[float, str, float] = (0.0, "", 0.0)
        self._api_condition: tuple[str, str, str] = (
            "Unknown",
            "NoWritesYet",
            "no pool-lease write yet: measured while competing for or holding the pool lease",
        )
        self._last_reason = ""
        self._peers: tuple[PeerView, ...] = ()
        self._health_restored = False
        self.last_decision: ClusterDecision | None = None
        self.emit: Callable[[str, str, str], None] = lambda _reason, _message, _type: None
        """An Event on this region's CardanoForgeCluster (``events.EventRecorder.record``:
        never blocks, never raises)."""
        self._last_event: tuple[str, str] | None = None
        self._wake_at: float | None = None
        """When the pool-wide Lease expires, or a live region goes stale, in this pod's
        observation (``policy.wake_at``): the loop runs then rather than at its next tick."""
        self.watches: tuple[Runnable, ...] = ()
        """The watches the coordination reads through (started and stopped by the caller)."""

    # ---- the seam to the manager -----------------------------------------------------------------
    def permit(self) -> Permit:
        """No I/O: granted only while the pool-wide Lease is held within its renew deadline."""
        with self._lock:
            granted, reason = self._granted, self._permit_reason
        if granted and not self.pool.leading():
            return Permit(False, "pool lease not renewed within the renew deadline")
        # ``until`` caps the forge permit written for forge-guard at the pool-wide Lease's
        # deadline, so a manager that stalls while cut off from the coordination API is fenced
        # before another region may take the pool Lease.
        return Permit(granted, reason, until=self.pool.leading_until() if granted else None)

    def _set_permit(self, granted: bool, reason: str) -> None:
        with self._lock:
            self._granted, self._permit_reason = granted, reason
        if self.metrics:
            self.metrics.forge_enabled(granted)

    def check_api(self) -> None:
        """At start-up: time a read of the coordination API and log it; raises
        :class:`~.round_trips.CoordinationTooSlow` when it answers more slowly than the
        request timeout allows (the caller exits with that line)."""
        if self._api_probe is None:
            return
        result = self._api_probe()
        (log.warning if result.warning else log.info)("%s", result.message)

    # ---- one cycle -----------------------------------------------------------------------------
    def run_cycle(self) -> str:
        leader = self._local_leader()
        self.health.set_active(leader)
        self.pool.refresh()
        if leader and not self._was_leader:  # old observations are no evidence: start over
            self._liveness.forget()
            self._last_read_ok_at = None
            self._last_records = []
            self._peers = ()
            self._written_status = None
            self._health_restored = False
        self._was_leader = leader
        view = self._view(leader)
        decision = decide(view)
        self._wake_at = wake_at(view)
        self.last_decision = decision
        if self.metrics:
            self.metrics.decision(decision.action.value)
            if decision.effective is not None:
                self.metrics.effective_priority(decision.effective.priority)
        announced = True
        if leader:
            announced = self._publish(decision, forging=self.permit().granted)
        outcome = self._act(decision, announced=announced)
        if leader:
            self._event(decision, view.health.demoted, outcome)
        if (
            leader
            and view.lease.absent
            and decision.action is ClusterAction.STAND_BY
            and decision.ineligible is None
        ):
            error = self.pool.create_vacant()
            if error is not None:
                outcome = f"{outcome}; creating it vacant failed: {error}"
        self._check_round_trips()
        if leader:
            self._publish(decision, forging=self.permit().granted)
        return outcome

    def _event(self, d: ClusterDecision, demoted: bool, outcome: str) -> None:
        """An Event when the region's pool-level action changes (acquired, handed over, demoted
        by health, stepped down on a fail-closed check); the message is the decision's reason."""
        reason = _EVENT_REASON.get(d.action)
        if reason is None:
            self._last_event = None
            return
        if d.action is ClusterAction.HAND_OVER and demoted:
            reason = "DemotedByHealth"
        key = (reason, d.ineligible or "")
        if key == self._last_event:
            return
        self._last_event = key
        kind = "Warning" if d.action is ClusterAction.STEP_DOWN or demoted else "Normal"
        try:
            self.emit(reason, f"{self.pod}: {outcome}", kind)
        except Exception:  # an Event must never cost a transition
            log.debug("emitting an Event failed", exc_info=True)

    def _read(self) -> tuple[bool, str | None, str | None]:
        """Returns (read ok, read error, own error); updates the last good records."""
        try:
            items = self._store.list()
            records = [parse_region(i) for i in items]
            own_items = [i for i in items if (i.get("metadata") or {}).get("name") == self.region]
            if not own_items:
                try:
                    created = self._store.create(self._seed)
                except CoordinationError as exc:
                    self._own_obj = None
                    self._last_records = records
                    self._last_read_ok_at = self._clock()
                    return True, None, f"not found, and creating it failed: {exc}"
                log.info("created CardanoForgeCluster %s from the environment", self.region)
                items.append(created)
                records.append(parse_region(created))
                own_items = [created]
            watched = self._heartbeats.observed()
            if watched is None:
                heartbeats, seen_at = self._heartbeats.list(), None
            else:
                heartbeats = {region: token for region, (token, _) in watched.items()}
                seen_at = {region: at for region, (_, at) in watched.items()}
        except ResourceNotFound as exc:
            return False, f"{exc} (is the CardanoForgeCluster CRD installed?)", None
        except CoordinationError as exc:
            return False, str(exc), None
        self._own_obj = own_items[0]
        self._last_records = records
        self._last_read_ok_at = self._clock()
        self._peers = self._liveness.observe(
            [r for r in records if r.name != self.region], heartbeats, self._clock(), seen_at
        )
        return True, None, None

    def _view(self, leader: bool) -> ClusterView:
        read_ok: bool = False
        read_error: str | None = "not the local leader"
        own_error: str | None = None
        if leader:
            read_ok, read_error, own_error = self._read()
        own = next((r for r in self._last_records if r.name == self.region), None)
        if own is None and own_error is None:
            own_error = "not found" if read_ok else (read_error or "not read yet")
        if leader and own is not None and own.spec is not None:
            if own.spec.health_check is not None:
                self.health.configure(own.spec.health_check)
            if not self._health_restored:
                self._restore_health(own)
        now = self._clock()
        age = float("inf") if self._last_read_ok_at is None else now - self._last_read_ok_at
        return ClusterView(
            now=now,
            now_wall=self._wall(),
            region=self.region,
            pod=self.pod,
            local_leader=leader,
            own=own,
            own_error=own_error,
            peers=self._peers,
            read_ok=read_ok,
            read_error=read_error,
            view_age=age,
            max_view_age=self._renew_deadline,
            stale_after=self.settings.stale_after,
            health=self.health.snapshot().view(),
            lease=self.pool.view(),
        )

    def _restore_health(self, own: RegionRecord) -> None:
        """A new local leader continues the count its predecessor published."""
        self._health_restored = True
        st = own.status
        if st is None or own.spec is None:
            return
        base = effective(own.spec, demoted=False, now_wall=self._wall()).priority
        demoted = (
            st.effective_priority is not None and st.effective_priority >= base + HEALTH_PENALTY
        )
        self.health.tracker.restore(st.consecutive_failures, demoted)

    # ---- writing this region's status ----------------------------------------------------------
    def _status(self, d: ClusterDecision, forging: bool, snap: HealthSnapshot) -> dict[str, Any]:
        own = self._own_obj or {}
        generation = (own.get("metadata") or {}).get("generation")
        health: dict[str, Any] = {
            "healthy": snap.healthy,
            "consecutiveFailures": snap.consecutive_failures,
            "message": snap.message[:1024],
        }
        if snap.last_probe_time is not None:
            health["lastProbeTime"] = format_time(snap.last_probe_time)
        if snap.last_success_time is not None:
            health["lastSuccessTime"] = format_time(snap.last_success_time)
        status: dict[str, Any] = {
            "activeLeader": self.pod,
            "forgingEnabled": forging,
            "healthStatus": health,
        }
        if d.effective is not None:
            status["effectiveState"] = d.effective.state.value
            status["effectivePriority"] = d.effective.priority
        if isinstance(generation, int):
            status["observedGeneration"] = generation
        conditions = [
            self._condition(
                "Forging", "True" if forging else "False", _CONDITION_REASON[d.action], d.reason
            ),
            self._eligible_condition(d),
        ]
        if self.pool.round_trips is not None:
            conditions.append(self._condition("CoordinationAPIResponsive", *self._api_condition))
        if isinstance(generation, int):
            for condition in conditions:
                condition["observedGeneration"] = generation
        status["conditions"] = conditions
        return status

    def _eligible_condition(self, d: ClusterDecision) -> dict[str, Any]:
        """``Eligible``: whether the other regions may count on this one (defer to it, hand the
        pool-wide Lease to it). False, with the reason, when this cycle stopped on a fail-closed
        path or the region is Disabled."""
        if d.ineligible is not None:
            return self._condition("Eligible", "False", d.ineligible, d.reason)
        until, error, window = self._write_failure
        if self._write_failures and self._clock() < until:
            return self._condition(
                "Eligible",
                "False",
                "PoolLeaseWriteFailed",
                f"acquiring the pool lease failed ({error}); not a candidate for {window:g} s",
            )
        return self._condition(
            "Eligible",
            "True",
            "Competing",
            "this region's local leader reads the regions and the pool lease and competes for it",
        )

    def _condition(self, kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
        """A metav1.Condition; lastTransitionTime moves only when status or reason change."""
        key = f"{status}/{reason}"
        if self._transitions.get(kind, ("", ""))[0] != key:
            self._transitions[kind] = (key, format_time(self._wall()))
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message[:4096],
            "lastTransitionTime": self._transitions[kind][1],
        }

    def _check_round_trips(self) -> None:
        """Say so, once, when the pool-lease writes approach the request timeout (and when they
        no longer do): a log line, the metric, and the status condition."""
        trips = self.pool.round_trips
        if trips is None:
            return
        state = trips.state()
        if self._api_condition[0] == "Unknown" and state.message == "no pool-lease write yet":
            return
        slow = self._api_condition[0] == "False"
        if self._api_condition[0] != "Unknown" and state.slow == slow:
            return
        if state.slow:
            log.warning("%s", state.message)
            self._api_condition = ("False", "RoundTripsNearTimeout", state.message)
        else:
            if slow:
                log.info("coordination API answers within the timeouts again: %s", state.message)
            self._api_condition = (
                "True",
                "RoundTripsWithinTimeout",
                f"pool-lease writes answer within KUBE_REQUEST_TIMEOUT={trips.request_timeout:g} s",
            )
        if self.metrics:
            self.metrics.coordination_api_slow(state.slow)

    def _publish(self, d: ClusterDecision, *, forging: bool) -> bool:
        """Write this region's status, then renew its heartbeat, but only once the status is
        written: the heartbeat vouches for the status, so a region that cannot publish what it
        decided (that it is demoted, handing over, ineligible) stops counting as alive for the
        others after ``CLUSTER_STALE_AFTER`` instead of blocking them. Returns whether the
        status in the API is this cycle's."""
        current = self._write_status(d, forging)
        now = self._clock()
        due = self._last_beat is None or now - self._last_beat >= self.settings.heartbeat_interval
        if current and due:
            try:
                self._heartbeats.beat(self.region, self.pod)
                self._last_beat = now
            except CoordinationError as exc:
                log.warning("heartbeat of region %s failed: %s", self.region, exc)
        return current

    def _write_status(self, d: ClusterDecision, forging: bool) -> bool:
        own = self._own_obj
        if own is None:
            return False
        status = self._status(d, forging, self.health.snapshot())
        if status == self._written_status or status == own.get("status"):
            self._written_status = status
            return True
        try:
            updated = self._store.replace_status(own, status)
        except ResourceConflict:
            self._own_obj = None  # changed under us (an operator's edit): read again next cycle
            return False
        except CoordinationError as exc:
            log.warning(
                "writing the status of %s failed: %s; not renewing its heartbeat until it is "
                "written, so that the other regions do not wait for this one",
                self.region,
                exc,
            )
            return False
        self._own_obj = updated or own
        self._written_status = status
        return True

    # ---- acting ----------------------------------------------------------------------------------
    def _act(self, d: ClusterDecision, *, announced: bool = True) -> str:
        if d.action is ClusterAction.ACQUIRE:
            error = self.pool.acquire()
            if error is not None:
                self._set_permit(False, f"acquiring the pool lease failed: {error}")
                if not self.pool.last_write_lost:
                    self._write_failed(error)
                return f"{d.reason}; failed: {error}"
            self._write_failures = 0
            self._set_permit(True, d.reason)
            self._reconcile()
            return d.reason
        if d.action is ClusterAction.HAND_OVER and not announced:
            # The better region would see the Lease free but this region's old status (its old
            # priority) and defer to it: nobody would forge. Keep holding until it is written.
            return self._keep(
                f"{d.reason}; not handing over: the status announcing it could not be written, "
                f"and region {d.hand_over_to} would defer to this region's old status"
            )
        if d.action is ClusterAction.KEEP:
            return self._keep(d.reason)
        self._set_permit(False, d.reason)
        if d.releases:
            ok, why = self._reconcile()
            if not ok:
                self.pool.forget()
                return f"{d.reason}; not releasing ({why}); it will expire instead"
            if self.pool.view().mine:
                # cardano-node reconfigures asynchronously after SIGHUP: let it act first.
                self._wait_for_node()
            error = self.pool.release()
            if error is not None:
                return f"{d.reason}; release failed ({error}); it will expire instead"
            return f"{d.reason}; released"
        return d.reason

    def _write_failed(self, error: str) -> None:
        """An acquire failed for a reason of this region's own (403, 5xx, timeout): stop
        presenting this region as a candidate for a lease duration, doubling with each failure
        in a row (at most 16 lease durations), so that the others take the Lease instead of
        waiting for a region that cannot write it. Any successful pool-lease write ends it."""
        self._write_failures += 1
        window = self.pool.duration * 2 ** min(self._write_failures - 1, 4)
        self._write_failure = (self._clock() + window, error, window)
        log.warning(
            "acquiring the pool lease failed (%s): this region is not a candidate for %g s",
            error,
            window,
        )

    def _keep(self, reason: str) -> str:
        """Renew the pool-wide Lease and keep forging while it is held within its deadline."""
        error = self.pool.renew()
        if error is None:
            self._write_failures = 0
        if error is not None:
            if not self.pool.leading():
                self._set_permit(False, f"renewing the pool lease failed: {error}")
                self._reconcile()
                return f"{reason}; renewing failed: {error}"
            # Still within the deadline of the last write known to have been applied (an
            # answer that was lost is recognised by its stamp at the next read).
            reason = (
                f"{reason}; renewing failed ({error}); leading until the renew deadline of the "
                "last write known to be applied"
            )
        self._set_permit(True, reason)
        return reason

    def step(self) -> str:
        """One cycle, with any exception turned into "not forging"."""
        try:
            reason = self.run_cycle()
        except Exception:
            log.exception("cluster coordination cycle failed; not forging")
            self._set_permit(False, "cluster coordination cycle failed")
            try:
                self._reconcile()
            finally:
                self.pool.forget()
            return "cluster coordination cycle failed; not forging"
        if reason != self._last_reason:
            log.info("cluster: %s", reason)
            self._last_reason = reason
        return reason

    def run(self, stop: threading.Event) -> None:
        """Cycle every retry period until ``stop``; wakes at the pool-wide Lease deadline, at
        the instant the pool-wide Lease expires or a region goes stale in this pod's observation
        (``policy.wake_at``), and on :meth:`wake`."""
        self.health.start()
        try:
            while not stop.is_set():
                started = self._clock()
                self.step()
                pause = self._retry_period - (self._clock() - started)
                until = self.pool.leading_until()
                if until is not None and until > self._clock():
                    pause = min(pause, until - self._clock() + 0.001)
                due = self._wake_at
                if due is not None and due > self._clock():
                    pause = min(pause, due - self._clock() + 0.001)
                if self._wake.wait(max(0.0, pause)):
                    self._wake.clear()
                if self.permit().granted is False and self._granted_flag():
                    self._reconcile()  # the deadline passed: demote without waiting a cycle
        finally:
            self.health.stop()

    def wake(self) -> None:
        """Run the next cycle now (local leadership changed, or shutting down): a pod that
        has just won its local Lease competes for the pool-wide Lease without waiting out the
        rest of a retry period."""
        self._wake.set()

    def _granted_flag(self) -> bool:
        with self._lock:
            return self._granted

    def shutdown(self) -> str:
        """After the manager has removed the credentials and signalled the node: release."""
        self._set_permit(False, "shutting down")
        ok, why = self._reconcile()
        if not self.pool.view().mine:
            return "not holding the pool lease"
        if not ok:
            self.pool.forget()
            return f"not releasing the pool lease ({why}); it will expire"
        self._wait_for_node()
        error = self.pool.release()
        return "released the pool lease" if error is None else f"release failed: {error}"

    def _wait_for_node(self) -> None:
        """Before a release: the rest of the node's time to act on its disabling SIGHUP (none
        when the manager's own release already waited for it, or no node ran)."""
        left = min(DEMOTION_BUDGET_S, self._settle_left())
        if left > 0:
            self._settle(left)
