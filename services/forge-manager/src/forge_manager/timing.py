"""The startup safety check on election timing.

A leader believes it leads until ``t_sent + renew_deadline``, where ``t_sent`` is the
CLOCK_BOOTTIME time at which its last *successful* renew request was sent. Past that moment it
demotes itself: it removes the credentials and signals the node. Detecting the passed deadline
can be late by at most one request timeout (every API call is bounded by it, and the deadline is
checked before and after each call and by an independent guard thread), and demotion itself
takes a bounded time. So the old leader has stopped forging by::

    t_stopped <= t_sent + retry_period + renew_deadline + request_timeout + demotion_budget

(``retry_period`` is counted as well, conservatively, for a loop that wakes late.)

A follower takes over only when it has seen no change of the Lease record for
``lease_duration`` on its own clock, counted from ``t_seen``, the moment it *saw* the version it
times. Followers see changes through a watch (:mod:`forge_manager.watch`), or by a quorum read
while the watch is broken. Either way the version was written after the leader sent it, and
the event or the answer that showed it was sent after it was written: a watch event can be late,
never early, so ``t_seen >= t_sent``. The acquisition happens at ``t_seen + lease_duration`` at
the soonest (the follower's timer), and only if a quorum read made then still finds that version
(and the write, carrying it as a precondition, finds it once more): a renewal the watch missed or
has not delivered yet stops it. A later write of the leader moves its ``t_sent`` and the
follower's ``t_seen`` alike. Hence::

    t_acquired >= t_seen + lease_duration >= t_sent + lease_duration

and the old leader has stopped forging first when::

    retry_period + renew_deadline + request_timeout + demotion_budget + safety_margin
        <= lease_duration

The inequality is the one that held when followers polled: its terms are all on the leader's
side, and the follower's side only ever needed ``t_seen >= t_sent``. What the watch changes is
the slack outside it. A polling follower saw a renewal up to ``retry_period`` (plus a read's
round trip) after it was written and acquired at its next retry tick, up to ``retry_period``
after expiry: up to about two retry periods in the old leader's favour that the check never
counted. A watching follower sees the renewal milliseconds after it was written and acquires
at the instant it expires, so the safety margin is now the only slack left in practice, not
one of several. It stays at one second; nothing in the check may be traded against the watch.
(The watch's own timeouts bound a thread that never delays a decision: while it is not live
the loop reads, each read bounded by ``request_timeout``.)

This module refuses configurations that break the inequality, and the client-go rules
``lease_duration > renew_deadline > 1.2 * retry_period`` and ``request_timeout <= retry_period``.
"""

from __future__ import annotations

from dataclasses import dataclass

DEMOTION_BUDGET_S = 0.5
"""Time allowed for demotion: unlink three files in a tmpfs and send one signal."""

SAFETY_MARGIN_S = 1.0
"""Slack for scheduling delays and clock-rate differences between hosts: with followers that
watch and acquire at the instant of expiry, the only slack between the old leader's demotion
and a takeover."""

JITTER_FACTOR = 1.2
"""client-go's rule: renew deadline must exceed 1.2 x retry period."""


class TimingError(ValueError):
    """One line saying which value is wrong and what to change."""


@dataclass(frozen=True)
class Timing:
    lease_duration: float
    renew_deadline: float
    retry_period: float
    request_timeout: float

    @property
    def worst_case_demotion(self) -> float:
        """Seconds after the last successful renew was sent by which the leader has demoted."""
        return (
            self.retry_period
            + self.renew_deadline
            + self.request_timeout
            + DEMOTION_BUDGET_S
            + SAFETY_MARGIN_S
        )


def check_timing(t: Timing) -> None:
    """Raise :class:`TimingError` naming the variable to change when ``t`` is unsafe."""
    if t.request_timeout <= 0 or t.retry_period <= 0:
        raise TimingError("KUBE_REQUEST_TIMEOUT and LEASE_RETRY_PERIOD must be positive")
    if t.request_timeout > t.retry_period:
        raise TimingError(
            f"KUBE_REQUEST_TIMEOUT={t.request_timeout:g} exceeds LEASE_RETRY_PERIOD="
            f"{t.retry_period:g}: lower KUBE_REQUEST_TIMEOUT to at most the retry period"
        )
    if not t.renew_deadline > JITTER_FACTOR * t.retry_period:
        raise TimingError(
            f"LEASE_RENEW_DEADLINE={t.renew_deadline:g} must exceed {JITTER_FACTOR:g} x "
            f"LEASE_RETRY_PERIOD={t.retry_period:g}: raise LEASE_RENEW_DEADLINE or lower "
            "LEASE_RETRY_PERIOD"
        )
    if not t.lease_duration > t.renew_deadline:
        raise TimingError(
            f"LEASE_DURATION={t.lease_duration:g} must exceed LEASE_RENEW_DEADLINE="
            f"{t.renew_deadline:g}: raise LEASE_DURATION or lower LEASE_RENEW_DEADLINE"
        )
    worst = t.worst_case_demotion
    if worst > t.lease_duration:
        raise TimingError(
            f"unsafe timing: LEASE_RETRY_PERIOD {t.retry_period:g} + LEASE_RENEW_DEADLINE "
            f"{t.renew_deadline:g} + KUBE_REQUEST_TIMEOUT {t.request_timeout:g} + demotion "
            f"{DEMOTION_BUDGET_S:g} + margin {SAFETY_MARGIN_S:g} = {worst:g} s exceeds "
            f"LEASE_DURATION {t.lease_duration:g} s: raise LEASE_DURATION to at least "
            f"{worst:g} or lower LEASE_RENEW_DEADLINE to at most "
            f"{t.renew_deadline - (worst - t.lease_duration):g}"
        )
