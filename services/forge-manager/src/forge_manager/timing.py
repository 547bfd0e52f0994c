"""The startup safety check on election timing.

A leader believes it leads until ``t_sent + renew_deadline``, where ``t_sent`` is the monotonic
time at which its last *successful* renew request was sent. Past that moment it demotes itself:
it removes the credentials and signals the node. Detecting the passed deadline can be late by at
most one request timeout (every API call is bounded by it, and the deadline is checked before and
after each call and by an independent guard thread), and demotion itself takes a bounded time.

A follower takes over only when it has seen no change of the Lease record for ``lease_duration``
on its own monotonic clock, counted from when it *saw* the change, which is never earlier than
when the leader sent it. So the old leader has stopped forging before anyone can acquire when::

    retry_period + renew_deadline + request_timeout + demotion_budget + safety_margin
        <= lease_duration

(``retry_period`` is counted as well, conservatively, for a loop that wakes late.) This module
refuses configurations that break it, and the client-go rules
``lease_duration > renew_deadline > 1.2 * retry_period`` and ``request_timeout <= retry_period``.
"""

from __future__ import annotations

from dataclasses import dataclass

DEMOTION_BUDGET_S = 0.5
"""Time allowed for demotion: unlink three files in a tmpfs and send one signal."""

SAFETY_MARGIN_S = 1.0
"""Slack for scheduling delays and clock-rate differences between hosts."""

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
