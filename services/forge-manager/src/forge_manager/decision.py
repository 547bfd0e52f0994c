"""The pure decision core: an immutable snapshot in, an action and a reason string out.

No I/O happens here (in the manner of Patroni's ``Ha.run_cycle``); ``manager.py`` takes the
snapshots, performs the actions and logs the reasons. Two decisions are taken per cycle:

* :func:`decide_election` — what to do with the Lease (acquire, renew, release, nothing);
* :func:`decide_forging` — whether the node should forge, what to do with the credential files,
  and whether the node must be signalled.

The one property: at most one node of a pool holds the credentials while it could forge. The
forging decision therefore wants credentials only while (a) this pod's own leadership deadline
(monotonic time the last successful renew was *sent* + renew deadline) lies in the future, (b) the
cluster permit is granted (always, until cluster-wide coordination adds its own input), (c) the
source credentials are sound and (d) the manager is not shutting down. Everything else — an
expired deadline, an API error, a lost Lease, an exception — ends in "remove and signal".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class Permit:
    """Permission from a level above the local Lease (cluster-wide coordination) to forge."""

    granted: bool
    reason: str
    until: float | None = None
    """Monotonic time at which the permission lapses unless renewed (the pool-wide Lease's
    renew deadline); caps the deadline written for ``forge-guard``."""


PERMIT_LOCAL_ONLY = Permit(granted=True, reason="cluster management disabled")


# ---- election --------------------------------------------------------------------------------
class LeaseAction(enum.Enum):
    NONE = "none"
    CREATE = "create"
    """Create the missing Lease *vacant* (no holder): the record it gets is then timed like any
    other, and taken only once it stayed unchanged for a lease duration."""
    ACQUIRE = "acquire"
    RENEW = "renew"
    RELEASE = "release"


@dataclass(frozen=True)
class LeaseView:
    """The Lease record as last read, with when this pod saw it change (its own clock).

    A missing Lease is a view too (``exists`` False). It is never taken as it is: a deleted Lease
    (or an etcd/Velero restore without it) is no evidence that its last holder stopped forging,
    and two reads that both find no Lease do not show that none existed between them. The pod
    creates it vacant (:attr:`LeaseAction.CREATE`) and times that record like any other."""

    holder: str | None
    resource_version: str
    """``""`` when the Lease does not exist."""
    duration: float
    """Seconds: max(the record's leaseDurationSeconds, our own LEASE_DURATION), and for a missing
    or foreign-cleared record also the duration of the record seen before it."""
    observed_change_at: float
    """Monotonic time at which this pod first saw this resourceVersion (for a missing Lease: when
    it was last read missing; not used to take it)."""
    ours: bool
    """Written by this process (not merely carrying our name, e.g. a previous incarnation's)."""
    released_by: str | None = None
    """Set only when ``holderIdentity`` was cleared by the release of the holder this pod last
    saw hold the Lease, in the term it saw (annotation ``cardano.io/released-by`` and an
    unchanged ``leaseTransitions``): the one evidence that the holder stopped before a lease
    duration passed. A record cleared by anyone else leaves it None."""
    exists: bool = True


@dataclass(frozen=True)
class ElectionSnapshot:
    now: float
    identity: str
    lease: LeaseView | None
    """None until the Lease was read once (a missing Lease is a view with ``exists`` False)."""
    lease_error: str | None
    eligible: bool
    ineligible_reason: str
    shutting_down: bool
    leading_until: float | None


@dataclass(frozen=True)
class ElectionDecision:
    action: LeaseAction
    reason: str


def decide_election(s: ElectionSnapshot) -> ElectionDecision:
    holds = s.lease is not None and s.lease.ours and s.lease.holder == s.identity
    if s.shutting_down:
        if holds:
            return ElectionDecision(LeaseAction.RELEASE, "releasing the lease on shutdown")
        return ElectionDecision(LeaseAction.NONE, "shutting down; not holding the lease")
    if s.lease_error is not None:
        if s.leading_until is not None and s.now < s.leading_until:
            return ElectionDecision(
                LeaseAction.NONE,
                f"lease API failed ({s.lease_error}); leading for at most "
                f"{s.leading_until - s.now:.1f} s more unless a renew succeeds",
            )
        return ElectionDecision(
            LeaseAction.NONE, f"lease API failed ({s.lease_error}); not leading"
        )
    if not s.eligible:
        if holds:
            return ElectionDecision(
                LeaseAction.RELEASE, f"releasing the lease: {s.ineligible_reason}"
            )
        return ElectionDecision(
            LeaseAction.NONE, f"staying out of the election: {s.ineligible_reason}"
        )
    lease = s.lease
    if lease is None:
        return ElectionDecision(LeaseAction.NONE, "the lease has not been read yet")
    if holds:
        return ElectionDecision(LeaseAction.RENEW, "renewing the lease")
    unchanged_for = s.now - lease.observed_change_at
    if not lease.exists:
        # Seeing no Lease at two reads is no evidence that none existed in between: a Lease
        # created, held and deleted between them leaves a leader that may forge until its renew
        # deadline. Only a record of our own making can be timed: create it vacant.
        return ElectionDecision(
            LeaseAction.CREATE,
            f"no lease exists; creating it vacant and acquiring it once it stays unchanged for "
            f"{lease.duration:g} s (a missing lease is no evidence that its last holder stopped)",
        )
    if not lease.holder:
        if lease.released_by is not None:
            return ElectionDecision(
                LeaseAction.ACQUIRE, f"lease was released by {lease.released_by}; acquiring it"
            )
        if unchanged_for >= lease.duration:
            return ElectionDecision(
                LeaseAction.ACQUIRE,
                f"lease without a holder unchanged for {unchanged_for:.1f} s >= "
                f"{lease.duration:g} s in our observation; acquiring it",
            )
        return ElectionDecision(
            LeaseAction.NONE,
            "lease has no holder but was not released by the holder we saw; acquiring it in "
            f"{lease.duration - unchanged_for:.1f} s unless it changes",
        )
    if unchanged_for >= lease.duration:
        who = "a previous incarnation of this pod" if lease.holder == s.identity else lease.holder
        return ElectionDecision(
            LeaseAction.ACQUIRE,
            f"lease of {who} expired (unchanged for {unchanged_for:.1f} s >= "
            f"{lease.duration:g} s in our observation); acquiring it",
        )
    return ElectionDecision(
        LeaseAction.NONE,
        f"following {lease.holder}; lease expires in {lease.duration - unchanged_for:.1f} s "
        "unless renewed",
    )


class StartupState(enum.Enum):
    """What ``/startup-status`` reports (see ``ForgeManager.startup_state``)."""

    PROVISIONED = "provisioned"
    NODE_RUNNING = "node_running"
    NOT_READY = "not_ready"


# ---- forging ---------------------------------------------------------------------------------
class CredentialAction(enum.Enum):
    NONE = "none"
    INSTALL = "install"
    """Make the three target files equal to the sources (atomically; a no-op when they are)."""
    REMOVE = "remove"


@dataclass(frozen=True)
class NodeView:
    """What the manager knows of cardano-node in this pod."""

    pids: tuple[int, ...]
    """Processes found by exact name or PID file; empty when none is found."""
    socket_up: bool
    """A connect() to the node's socket succeeded."""
    booted: bool
    """The socket has answered while the current processes ran (it is not starting up)."""
    flag_missing: bool
    """This node (or an earlier one in this pod) runs without --start-as-non-producing-node."""
    lookup_problem: str = ""
    """Why a process that claims to be the node is not taken for it (a PID file naming another
    process); empty when there is none."""
    fresh: bool = True
    """No node process runs, or it started after this manager did (or within the start grace
    before it): it may be in its start-up window. A node found already running when the manager
    started whose socket does not answer may be hung and forging on what an earlier manager gave
    it, or booting: nobody can tell, so it gets no start-up credentials, and it may be signalled
    to stop forging (its SIGHUP handler is installed by then)."""


@dataclass(frozen=True)
class Signalled:
    """The forging state the node processes ``pids`` were last successfully signalled with."""

    pids: tuple[int, ...]
    forging: bool


@dataclass(frozen=True)
class ForgingSnapshot:
    now: float
    leading_until: float | None
    permit: Permit
    eligible: bool
    ineligible_reason: str
    shutting_down: bool
    node: NodeView
    credentials_present: bool
    """Any of the three target files exists."""
    signalled: Signalled | None
    node_unsynced: str = ""
    """Why this pod's cardano-node must not forge although it may lead (not synced for longer
    than the grace, see ``node_sync.py``); empty when it may."""


@dataclass(frozen=True)
class ForgingDecision:
    forge: bool
    credentials: CredentialAction
    signal: bool
    """Send SIGHUP to the node after the credential action (it reads the files on SIGHUP)."""
    reason: str


def is_leading(leading_until: float | None, now: float) -> bool:
    return leading_until is not None and now < leading_until


def may_signal(node: NodeView, forge: bool) -> bool:
    """Whether a SIGHUP to this node is safe and useful: it answers (or answered while this
    instance ran); or, to stop forging, it was already running when the manager started."""
    return node.booted or node.socket_up or (not forge and not node.fresh)


def decide_forging(s: ForgingSnapshot) -> ForgingDecision:
    leading = is_leading(s.leading_until, s.now)
    if s.shutting_down:
        forge, why = False, "shutting down"
    elif not s.eligible:
        forge, why = False, s.ineligible_reason
    elif not leading:
        if s.leading_until is not None:
            forge, why = False, "leadership deadline passed without a successful renew"
        else:
            forge, why = False, "not the leader"
    elif s.node_unsynced:
        forge, why = False, f"leader, but not forging: {s.node_unsynced}"
    elif not s.permit.granted:
        forge, why = False, f"leader, but not permitted to forge: {s.permit.reason}"
    else:
        forge, why = True, f"leader ({s.permit.reason})"

    node = s.node
    if forge:
        action = CredentialAction.INSTALL
    else:
        startup_window = (
            not node.socket_up
            and not node.booted
            and node.fresh
            and s.eligible
            and not s.shutting_down
        )
        if startup_window and node.flag_missing:
            action = CredentialAction.REMOVE if s.credentials_present else CredentialAction.NONE
            why += (
                "; not provisioning for start-up: the node runs without "
                "--start-as-non-producing-node and would forge"
            )
        elif startup_window:
            action = CredentialAction.INSTALL
            why += "; node not running: provisioning credentials so it can boot non-producing"
        else:
            action = CredentialAction.REMOVE if s.credentials_present else CredentialAction.NONE

    # A node that has not yet answered on its socket ignores the forging part of a SIGHUP (and
    # one signalled before its handler is installed dies): signal it once it is up. A booted
    # node whose socket stopped answering is still signalled, and so is a node found running
    # when the manager started (not fresh), to stop forging.
    wanted = Signalled(node.pids, forge)
    needs_signal = may_signal(node, forge) and s.signalled != wanted
    if needs_signal and not node.pids:
        why += "; node process not found, cannot signal it"
    elif needs_signal:
        why += "; signalling the node to " + ("enable" if forge else "disable") + " forging"
    elif forge and not node.booted and not node.socket_up:
        why += "; node not up yet, will signal it once its socket answers"
    return ForgingDecision(forge=forge, credentials=action, signal=needs_signal, reason=why)
