"""The pure core: snapshot in, action and reason out."""

from __future__ import annotations

import dataclasses

import pytest
from forge_manager.decision import (
    PERMIT_LOCAL_ONLY,
    CredentialAction,
    ElectionSnapshot,
    ForgingSnapshot,
    LeaseAction,
    LeaseView,
    NodeView,
    Permit,
    Signalled,
    decide_election,
    decide_forging,
)

ME = "pod-0"
NODE_UP = NodeView(pids=(42,), socket_up=True, booted=True, flag_missing=False)
NODE_ABSENT = NodeView(pids=(), socket_up=False, booted=False, flag_missing=False)
NODE_BOOTING = NodeView(pids=(43,), socket_up=False, booted=False, flag_missing=False)


def election(**kw: object) -> ElectionSnapshot:
    base = ElectionSnapshot(
        now=100.0,
        identity=ME,
        lease=None,
        lease_error=None,
        eligible=True,
        ineligible_reason="",
        shutting_down=False,
        leading_until=None,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def view(holder: str | None, *, seen: float = 95.0, ours: bool = False) -> LeaseView:
    return LeaseView(
        holder=holder, resource_version="7", duration=15.0, observed_change_at=seen, ours=ours
    )


def forging(**kw: object) -> ForgingSnapshot:
    base = ForgingSnapshot(
        now=100.0,
        leading_until=None,
        permit=PERMIT_LOCAL_ONLY,
        eligible=True,
        ineligible_reason="",
        shutting_down=False,
        node=NODE_UP,
        credentials_present=False,
        signalled=None,
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


# ---- election --------------------------------------------------------------------------------
def missing(*, seen: float = 95.0) -> LeaseView:
    return LeaseView(holder=None, resource_version="", duration=15.0, observed_change_at=seen,
                     ours=False, exists=False)  # fmt: skip


@pytest.mark.parametrize("now", [95.0, 110.0, 1000.0])
def test_a_missing_lease_is_created_vacant_never_taken(now: float) -> None:
    """Two reads that both find no Lease do not show that none existed between them."""
    d = decide_election(election(now=now, lease=missing(seen=95.0)))
    assert (d.action, d.reason) == (
        LeaseAction.CREATE,
        "no lease exists; creating it vacant and acquiring it once it stays unchanged for 15 s "
        "(a missing lease is no evidence that its last holder stopped)",
    )


def test_not_yet_read_is_no_reason_to_act() -> None:
    d = decide_election(election(lease=None))
    assert (d.action, d.reason) == (LeaseAction.NONE, "the lease has not been read yet")


def test_follower_waits_until_expiry_in_its_own_observation() -> None:
    d = decide_election(election(lease=view("pod-1", seen=95.0)))
    assert d.action is LeaseAction.NONE
    assert d.reason == "following pod-1; lease expires in 10.0 s unless renewed"


def test_follower_acquires_after_lease_duration_without_change() -> None:
    d = decide_election(election(now=110.0, lease=view("pod-1", seen=95.0)))
    assert d.action is LeaseAction.ACQUIRE
    assert d.reason == (
        "lease of pod-1 expired (unchanged for 15.0 s >= 15 s in our observation); acquiring it"
    )


def test_a_release_by_the_holder_we_saw_is_acquired_at_once() -> None:
    released = dataclasses.replace(view(None, seen=99.9), released_by="pod-1")
    d = decide_election(election(lease=released))
    assert (d.action, d.reason) == (
        LeaseAction.ACQUIRE,
        "lease was released by pod-1; acquiring it",
    )


def test_a_holder_cleared_by_anyone_else_waits_a_lease_duration() -> None:
    d = decide_election(election(lease=view(None, seen=99.0)))
    assert (d.action, d.reason) == (
        LeaseAction.NONE,
        "lease has no holder but was not released by the holder we saw; acquiring it in "
        "14.0 s unless it changes",
    )
    d = decide_election(election(now=114.0, lease=view(None, seen=99.0)))
    assert (d.action, d.reason) == (
        LeaseAction.ACQUIRE,
        "lease without a holder unchanged for 15.0 s >= 15 s in our observation; acquiring it",
    )


def test_holder_renews_only_its_own_write() -> None:
    assert decide_election(election(lease=view(ME, ours=True))).action is LeaseAction.RENEW
    # Our name written by an earlier incarnation: wait for expiry like any other holder.
    d = decide_election(election(lease=view(ME, seen=99.0, ours=False)))
    assert d.action is LeaseAction.NONE
    later = decide_election(election(now=114.0, lease=view(ME, seen=99.0, ours=False)))
    assert later.action is LeaseAction.ACQUIRE
    assert "a previous incarnation of this pod" in later.reason


def test_api_error_never_acquires() -> None:
    d = decide_election(election(lease_error="HTTP 503 Service Unavailable", leading_until=104.0))
    assert d.action is LeaseAction.NONE
    assert d.reason == (
        "lease API failed (HTTP 503 Service Unavailable); leading for at most 4.0 s more "
        "unless a renew succeeds"
    )
    d = decide_election(election(lease_error="timeout"))
    assert d.reason == "lease API failed (timeout); not leading"


def test_ineligible_pod_releases_or_stays_out() -> None:
    bad = "source KES key /s/kes.skey (SOURCE_KES_KEY) does not exist"
    held = election(eligible=False, ineligible_reason=bad, lease=view(ME, ours=True))
    d = decide_election(held)
    assert (d.action, d.reason) == (LeaseAction.RELEASE, f"releasing the lease: {bad}")
    d = decide_election(election(eligible=False, ineligible_reason=bad))
    assert (d.action, d.reason) == (LeaseAction.NONE, f"staying out of the election: {bad}")


def test_shutdown_releases_only_a_held_lease() -> None:
    d = decide_election(election(shutting_down=True, lease=view(ME, ours=True)))
    assert (d.action, d.reason) == (LeaseAction.RELEASE, "releasing the lease on shutdown")
    d = decide_election(election(shutting_down=True, lease=view("pod-1")))
    assert d.action is LeaseAction.NONE


# ---- forging -----------------------------------------------------------------------------------
def test_leader_installs_and_signals_even_when_files_already_exist() -> None:
    d = decide_forging(forging(leading_until=105.0, credentials_present=True))
    assert d.forge and d.credentials is CredentialAction.INSTALL and d.signal
    assert d.reason == (
        "leader (cluster management disabled); signalling the node to enable forging"
    )


def test_leader_already_signalled_does_nothing_more() -> None:
    d = decide_forging(
        forging(leading_until=105.0, credentials_present=True, signalled=Signalled((42,), True))
    )
    assert d.forge and not d.signal
    assert d.reason == "leader (cluster management disabled)"


def test_expired_deadline_removes_and_signals() -> None:
    d = decide_forging(
        forging(leading_until=100.0, credentials_present=True, signalled=Signalled((42,), True))
    )
    assert not d.forge
    assert d.credentials is CredentialAction.REMOVE and d.signal
    assert d.reason == (
        "leadership deadline passed without a successful renew; "
        "signalling the node to disable forging"
    )


def test_permit_denied_means_not_forging() -> None:
    d = decide_forging(
        forging(
            leading_until=105.0,
            permit=Permit(False, "region us-west-2 holds the pool lease"),
            credentials_present=True,
            signalled=Signalled((42,), True),
        )
    )
    assert not d.forge and d.credentials is CredentialAction.REMOVE and d.signal
    assert d.reason.startswith(
        "leader, but not permitted to forge: region us-west-2 holds the pool lease"
    )


def test_startup_window_provisions_for_a_node_that_is_not_running() -> None:
    d = decide_forging(forging(node=NODE_ABSENT))
    assert not d.forge and d.credentials is CredentialAction.INSTALL and not d.signal
    assert d.reason == (
        "not the leader; node not running: provisioning credentials so it can boot non-producing"
    )
    d = decide_forging(forging(node=NODE_BOOTING))
    assert d.credentials is CredentialAction.INSTALL and not d.signal


def test_window_closes_once_the_socket_answers() -> None:
    d = decide_forging(forging(node=NODE_UP, credentials_present=True))
    assert d.credentials is CredentialAction.REMOVE and d.signal
    assert d.reason == "not the leader; signalling the node to disable forging"


def test_a_booted_node_whose_socket_stopped_answering_gets_no_credentials() -> None:
    hung = NodeView(pids=(42,), socket_up=False, booted=True, flag_missing=False)
    d = decide_forging(forging(node=hung, credentials_present=False))
    assert d.credentials is CredentialAction.NONE
    # ... and it is still signalled when its state must change.
    d = decide_forging(
        forging(node=hung, credentials_present=True, signalled=Signalled((42,), True))
    )
    assert d.credentials is CredentialAction.REMOVE and d.signal


def test_no_startup_provisioning_for_a_node_without_the_non_producing_flag() -> None:
    flagless = NodeView(pids=(), socket_up=False, booted=False, flag_missing=True)
    d = decide_forging(forging(node=flagless))
    assert d.credentials is CredentialAction.NONE
    assert "runs without --start-as-non-producing-node and would forge" in d.reason


def test_restarted_node_is_signalled_again_once_up() -> None:
    before = Signalled((42,), True)
    booting = decide_forging(forging(leading_until=105.0, node=NODE_BOOTING, signalled=before))
    assert booting.credentials is CredentialAction.INSTALL and not booting.signal
    assert booting.reason.endswith("node not up yet, will signal it once its socket answers")
    up = NodeView(pids=(43,), socket_up=True, booted=True, flag_missing=False)
    d = decide_forging(forging(leading_until=105.0, node=up, signalled=before))
    assert d.signal


def test_socket_up_but_process_not_found_is_reported_not_hidden() -> None:
    ghost = NodeView(pids=(), socket_up=True, booted=True, flag_missing=False)
    d = decide_forging(forging(leading_until=105.0, node=ghost))
    assert d.signal
    assert d.reason.endswith("node process not found, cannot signal it")


def test_shutdown_and_bad_sources_never_forge_nor_provision() -> None:
    d = decide_forging(forging(shutting_down=True, leading_until=105.0, node=NODE_ABSENT))
    assert not d.forge and d.credentials is CredentialAction.NONE
    d = decide_forging(
        forging(eligible=False, ineligible_reason="source VRF key is empty", node=NODE_ABSENT,
                credentials_present=True, leading_until=105.0)
    )  # fmt: skip
    assert not d.forge and d.credentials is CredentialAction.REMOVE
    assert d.reason == "source VRF key is empty"


def test_a_node_running_before_the_manager_started_is_not_in_its_start_up_window() -> None:
    found = NodeView(pids=(42,), socket_up=False, booted=False, flag_missing=False, fresh=False)
    d = decide_forging(forging(node=found, credentials_present=True))
    assert d.credentials is CredentialAction.REMOVE and d.signal  # told to stop forging
    assert d.reason == "not the leader; signalling the node to disable forging"
    d = decide_forging(forging(node=found, credentials_present=False))
    assert d.credentials is CredentialAction.NONE
    # As leader it gets the credentials, but no enabling SIGHUP before its socket answers.
    d = decide_forging(forging(node=found, leading_until=105.0))
    assert d.forge and d.credentials is CredentialAction.INSTALL and not d.signal
