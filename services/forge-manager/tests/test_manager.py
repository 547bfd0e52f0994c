"""The loop glue against in-memory doubles of the Lease, the node and the clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from forge_manager.config import Settings, load_settings
from forge_manager.credentials import CredentialFiles
from forge_manager.decision import NodeView, Permit, StartupState
from forge_manager.manager import RELEASE_RETRY_PAUSE_S, ForgeManager, LeaseWatch
from forge_manager.metrics import ForgeMetrics
from forge_manager.permit_file import PermitFile
from prometheus_client import CollectorRegistry

from .fakes import (
    Clock,
    FakeLease,
    FakeNode,
    FreezingFiles,
    LeaseStore,
    Signals,
    Stops,
)


def settings_for(tmp: Path, pod: str) -> Settings:
    src = tmp / "secret"
    return load_settings(
        {
            "POD_NAME": pod,
            "NAMESPACE": "cardano",
            "SOURCE_KES_KEY": str(src / "kes.skey"),
            "SOURCE_VRF_KEY": str(src / "vrf.skey"),
            "SOURCE_OP_CERT": str(src / "node.cert"),
            "TARGET_KES_KEY": str(tmp / pod / "kes.skey"),
            "TARGET_VRF_KEY": str(tmp / pod / "vrf.skey"),
            "TARGET_OP_CERT": str(tmp / pod / "node.cert"),
            "NODE_SOCKET": str(tmp / pod / "node.socket"),
        }
    )


class Pod:
    def __init__(
        self,
        tmp: Path,
        store: LeaseStore,
        clock: Clock,
        name: str = "pod-0",
        permit_file: PermitFile | None = None,
        lease_watch: LeaseWatch | None = None,
    ) -> None:
        self.settings = settings_for(tmp, name)
        self.clock = clock
        self.lease = FakeLease(store, name)
        self.node = FakeNode()
        self.signals = Signals()
        self.files = FreezingFiles(CredentialFiles(self.settings.sources, self.settings.targets))
        self.registry = CollectorRegistry()
        self.permit = Permit(True, "cluster management disabled")
        self.manager = ForgeManager(
            self.settings,
            lease=self.lease,
            files=self.files,
            node=self.node,
            signal_node=self.signals,
            permit=lambda: self.permit,
            clock=clock,
            settle=lambda s: self.lease.calls.append(f"settle {s:g}"),
            permit_file=permit_file,
            lease_watch=lease_watch,
        )
        self.manager.metrics = ForgeMetrics(
            self.registry, pod=name, cluster="c1", sample=self.manager.sample
        )

    def elect(self) -> str:
        """Become the first leader: a pod that sees no Lease creates it vacant and takes that
        record once it stayed unchanged for a lease duration (a deleted Lease is no evidence
        that nobody forges)."""
        self.manager.step()
        self.clock.advance(self.settings.lease_duration)
        return self.manager.step()

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def sighups(self) -> tuple[int, int]:
        """(disable, enable) signals delivered."""
        return tuple(  # type: ignore[return-value]
            int(self.metric("cardano_sighup_signals_total", reason=r) or 0)
            for r in ("disable", "enable")
        )


def test_first_pod_creates_lease_installs_and_signals(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    reason = pod.elect()
    assert reason == (
        "lease without a holder unchanged for 15.0 s >= 15 s in our observation; acquiring it; "
        "leader (cluster management disabled); signalling the node to enable forging"
    )
    # A node of unknown state is first told to stop, then (as leader) to start.
    assert pod.files.all_present() and pod.sighups() == (1, 1)
    assert pod.metric("cardano_leader_status", pod="pod-0", cluster="c1") == 1
    assert pod.metric("cardano_forging_enabled", pod="pod-0", cluster="c1") == 1
    assert pod.metric("cardano_sighup_signals_total", reason="enable") == 1
    assert pod.metric("cardano_credential_operations_total", operation="install") == 1
    assert pod.metric("cardano_leadership_changes_total") == 1
    # The next cycle renews without reading and does not signal again.
    clock.advance(2)
    assert pod.manager.step().startswith("renewing the lease; leader")
    assert pod.lease.calls == ["read", "create", "read", "acquire", "renew"]
    assert pod.sighups() == (1, 1)
    assert pod.metric("cardano_lease_renew_duration_seconds_count") == 1


def test_follower_removes_credentials_and_waits_for_expiry(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    a, b = Pod(tmp, store, clock, "pod-0"), Pod(tmp, store, clock, "pod-1")
    a.elect()
    b.files.install()  # left from the startup window
    reason = b.manager.step()
    assert reason.startswith(
        "following pod-0; lease expires in 15.0 s unless renewed; not the leader"
    )
    assert not b.files.any_present()
    assert b.signals.sent == [(42,)]  # told to disable once
    assert b.metric("cardano_forging_enabled", pod="pod-1", cluster="c1") == 0
    # The leader stalls (no more cycles); pod-1 takes over only after lease duration.
    for _ in range(7):
        clock.advance(2)
        assert b.manager.step().startswith("following pod-0")
    clock.advance(2)
    assert b.manager.step().startswith("lease of pod-0 expired")
    assert (
        b.files.all_present() and b.metric("cardano_leader_status", pod="pod-1", cluster="c1") == 1
    )


def test_leader_demotes_at_renew_deadline_during_api_outage(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    pod.elect()
    store.down = True
    for _ in range(4):
        clock.advance(2)
        reason = pod.manager.step()
        assert "failed (ConnectionRefusedError: connection refused); leading for at most" in reason
        assert pod.files.all_present()
    clock.advance(2)  # 10 s after the last successful renew was sent
    reason = pod.manager.step()
    assert reason == (
        "lease API failed (ConnectionRefusedError: connection refused); not leading; "
        "leadership deadline passed without a successful renew"
    )
    assert not pod.files.any_present() and pod.sighups() == (2, 1)
    assert pod.metric("cardano_forge_demotions_total", cause="renew_deadline") == 1
    # The API returns; nobody else wrote, so the same pod renews and forges again.
    store.down = False
    clock.advance(2)
    assert pod.manager.step().startswith("renewing the lease; leader")
    assert pod.files.all_present() and pod.sighups() == (2, 2)


def test_conflict_on_renew_demotes_at_once(world: tuple[Path, LeaseStore, Clock]) -> None:
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    pod.elect()
    assert store.record is not None
    store.write(store.record.resource_version, "intruder", "x")
    clock.advance(2)
    pod.manager.step()
    assert not pod.files.any_present()
    assert pod.metric("cardano_forge_demotions_total", cause="lease_lost") == 1
    assert pod.metric("cardano_leader_status", pod="pod-0", cluster="c1") == 0


def test_a_renew_applied_without_response_is_recognised_as_ours(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    pod.elect()
    pod.lease.apply_but_fail = True
    clock.advance(2)
    pod.manager.step()
    pod.lease.apply_but_fail = False
    clock.advance(2)
    assert pod.manager.step().startswith("renewing the lease; leader")
    assert pod.files.all_present() and pod.sighups() == (1, 1)


def test_shutdown_removes_signals_then_releases(world: tuple[Path, LeaseStore, Clock]) -> None:
    tmp, store, clock = world
    a, b = Pod(tmp, store, clock, "pod-0"), Pod(tmp, store, clock, "pod-1")
    a.elect()
    b.manager.step()
    assert a.manager.shutdown() == "released the lease"
    assert not a.files.any_present() and a.sighups() == (2, 1)
    assert a.lease.calls[-2:] == ["settle 0.5", "release"]  # the node had time to act
    assert store.record is not None and store.record.holder is None
    clock.advance(2)
    assert b.manager.step().startswith("lease was released by pod-0; acquiring it")
    assert b.files.all_present()


def test_shutdown_does_not_release_when_the_node_cannot_be_signalled(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    pod.elect()
    pod.signals.fail = True
    reason = pod.manager.shutdown()
    assert reason == (
        "not releasing the lease (the node has not been signalled to stop forging); "
        "it will expire instead"
    )
    assert store.record is not None and store.record.holder == "pod-0"
    assert not pod.files.any_present()
    assert (pod.metric("cardano_node_signal_failures_total", reason="not_found") or 0) >= 1


def test_node_not_found_is_counted_and_retried_never_reported_as_forging(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    pod.node.view = NodeView(pids=(), socket_up=True, booted=True, flag_missing=False)
    pod.manager.step()  # sees no Lease: creates it a lease duration later
    clock.advance(pod.settings.lease_duration)
    failures = []
    for _ in range(3):
        assert pod.manager.step().endswith("node process not found, cannot signal it")
        failures.append(pod.metric("cardano_node_signal_failures_total", reason="not_found") or 0)
        clock.advance(2)
    assert failures[0] and failures[0] < failures[1] < failures[2]  # retried every cycle
    assert pod.metric("cardano_forging_enabled", pod="pod-0", cluster="c1") == 0
    pod.node.view = NodeView(pids=(42,), socket_up=True, booted=True, flag_missing=False)
    pod.manager.step()
    assert pod.signals.sent == [(42,)] and pod.sighups() == (0, 1)
    assert pod.metric("cardano_forging_enabled", pod="pod-0", cluster="c1") == 1


def test_startup_window_and_restart(world: tuple[Path, LeaseStore, Clock]) -> None:
    tmp, store, clock = world
    leader, standby = Pod(tmp, store, clock, "pod-0"), Pod(tmp, store, clock, "pod-1")
    leader.elect()
    standby.node.view = NodeView(pids=(), socket_up=False, booted=False, flag_missing=False)
    assert not standby.manager.startup_ready()
    standby.manager.step()
    assert standby.files.all_present() and standby.manager.startup_ready()
    assert standby.signals.sent == []
    standby.node.view = NodeView(pids=(7,), socket_up=False, booted=False, flag_missing=False)
    clock.advance(2)
    standby.manager.step()
    assert standby.files.all_present()  # still booting
    standby.node.view = NodeView(pids=(7,), socket_up=True, booted=True, flag_missing=False)
    clock.advance(2)
    standby.manager.step()
    assert not standby.files.any_present() and standby.signals.sent == [(7,)]
    # The node crashes and restarts: the window opens again, and closes with a new signal.
    standby.node.view = NodeView(pids=(8,), socket_up=False, booted=False, flag_missing=False)
    clock.advance(2)
    standby.manager.step()
    assert standby.files.all_present()
    standby.node.view = NodeView(pids=(8,), socket_up=True, booted=True, flag_missing=False)
    clock.advance(2)
    standby.manager.step()
    assert not standby.files.any_present() and standby.signals.sent == [(7,), (8,)]


def test_missing_source_keeps_the_pod_out_and_releases(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    pod.elect()
    (tmp / "secret" / "vrf.skey").unlink()
    clock.advance(2)
    reason = pod.manager.step()
    assert reason.startswith("released the lease; source VRF key")
    assert "(SOURCE_VRF_KEY) does not exist" in reason
    assert not pod.files.any_present()
    assert pod.metric("cardano_source_credential_errors_total") == 1
    assert pod.metric("cardano_forge_source_credentials_ok", pod="pod-0", cluster="c1") == 0
    assert store.record is not None and store.record.holder is None
    assert (tmp / "secret" / "kes.skey").exists()  # sources untouched


def test_permit_withdrawn_stops_forging_but_keeps_local_leadership(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    pod.elect()
    pod.permit = Permit(False, "another region forges")
    clock.advance(2)
    assert "not permitted to forge: another region forges" in pod.manager.step()
    assert not pod.files.any_present() and pod.manager.is_local_leader()


def test_key_rotation_while_leading_is_signalled(world: tuple[Path, LeaseStore, Clock]) -> None:
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    pod.elect()
    (tmp / "secret" / "node.cert").write_text('{"type": "cert", "cborHex": "82"}\n')
    clock.advance(2)
    pod.manager.step()
    assert pod.settings.target_op_cert.read_text().endswith('"82"}\n')
    assert pod.metric("cardano_sighup_signals_total", reason="credentials_updated") == 1


def test_an_exception_in_a_cycle_demotes(
    world: tuple[Path, LeaseStore, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    pod.elect()

    def boom() -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(pod.lease, "renew", lambda *_a: boom())
    clock.advance(2)
    assert pod.manager.step() == "cycle failed with an exception; demoted"
    assert not pod.files.any_present() and pod.sighups() == (2, 1)
    assert pod.metric("cardano_forge_manager_loop_exceptions_total") == 1


def test_guard_demotes_while_the_loop_is_blocked(world: tuple[Path, LeaseStore, Clock]) -> None:
    tmp, store, _ = world

    clock = Clock(time.monotonic())
    pod = Pod(tmp, store, clock)
    pod.elect()
    assert pod.files.all_present()
    pod.manager.start_guard()
    try:
        clock.advance(10.5)  # the loop is stuck somewhere; only the guard runs
        deadline = time.monotonic() + 5
        while pod.files.any_present() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not pod.files.any_present()
        assert pod.sighups() == (2, 1)
    finally:
        pod.manager.stop_guard()


def test_guard_demotes_while_a_lease_call_hangs_and_its_late_success_does_not_revive(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    """A renew stuck where the request timeout does not reach (the name lookup): the guard
    thread demotes at the deadline, and the write that succeeds afterwards does not extend a
    deadline counted from when it was sent."""
    tmp, store, _ = world
    clock = Clock(time.monotonic())
    pod = Pod(tmp, store, clock)
    pod.elect()
    pod.lease.hang = threading.Event()
    pod.manager.start_guard()
    loop = threading.Thread(target=pod.manager.step)
    try:
        clock.advance(2)
        loop.start()
        assert pod.lease.hanging.wait(5)
        clock.advance(pod.settings.renew_deadline)  # the loop is stuck in the renew call
        deadline = time.monotonic() + 5
        while pod.files.any_present() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not pod.files.any_present() and pod.sighups() == (2, 1)
        pod.lease.hang.set()  # the renew goes through at last
        loop.join(5)
        assert not loop.is_alive()
        assert store.record is not None and store.record.holder == "pod-0"
        assert not pod.manager.is_local_leader() and not pod.files.any_present()
        assert pod.sighups() == (2, 1)
    finally:
        pod.lease.hang.set()
        pod.manager.stop_guard()


def test_run_stops_and_releases_on_event(world: tuple[Path, LeaseStore, Clock]) -> None:
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    pod.elect()
    stop = threading.Event()
    calls = 0
    original = pod.manager.run_cycle

    def counted() -> str:
        nonlocal calls
        calls += 1
        if calls == 2:
            stop.set()
        return original()

    pod.manager.run_cycle = counted  # type: ignore[method-assign]
    pod.manager.run(stop)
    assert calls == 2
    assert store.record is not None and store.record.holder is None
    assert not pod.files.any_present()


def test_forging_since_is_the_wall_time_forging_started_and_zero_after(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    before = time.time()
    pod.elect()
    since = pod.metric("cardano_forging_since_timestamp_seconds", pod="pod-0", cluster="c1")
    assert since is not None and before <= since <= time.time()
    clock.advance(2)
    pod.manager.step()  # renewing does not move it
    assert pod.metric("cardano_forging_since_timestamp_seconds", pod="pod-0", cluster="c1") == since
    pod.permit = Permit(False, "a better region asked for a hand-over")
    pod.manager.step()
    assert pod.metric("cardano_forging_since_timestamp_seconds", pod="pod-0", cluster="c1") == 0


def test_leadership_changes_are_announced_to_the_cluster_coordinator(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    announced: list[bool] = []
    pod.manager.on_leadership_change = lambda: announced.append(pod.manager.is_local_leader())
    pod.elect()
    assert announced == [True]
    clock.advance(2)
    pod.manager.step()  # a renewal is no change
    assert announced == [True]
    store.down = True  # an API outage: no renewal, the deadline passes
    clock.advance(pod.settings.renew_deadline + 1)
    pod.manager.step()
    assert announced == [True, False]


def test_a_sidecar_restarted_beside_a_running_node_passes_its_startup_probe(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    leader, standby = Pod(tmp, store, clock, "pod-0"), Pod(tmp, store, clock, "pod-1")
    leader.elect()
    # A fresh manager process (nothing provisioned by it) beside a node that already runs.
    standby.node.view = NodeView(pids=(7,), socket_up=True, booted=True, flag_missing=False)
    assert standby.manager.startup_state() is StartupState.NOT_READY  # before its first cycle
    standby.manager.step()
    assert not standby.files.any_present()
    assert standby.manager.startup_state() is StartupState.NODE_RUNNING
    assert standby.manager.startup_ready()


# ---- a missing Lease, or one whose holder was cleared by someone else --------------------------
def test_a_fresh_pod_that_sees_no_lease_creates_it_vacant_and_waits_a_lease_duration(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    """It cannot know that no leader forges: the Lease may have been deleted under one."""
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    assert pod.manager.step().startswith("no lease exists; creating it vacant")
    assert store.record is not None and store.record.holder is None
    assert pod.lease.calls == ["read", "create"]
    for _ in range(7):
        clock.advance(2)
        assert pod.manager.step().startswith("lease has no holder but was not released")
        assert store.record.holder is None and pod.sighups()[1] == 0
    clock.advance(1)  # 15 s after it created the vacant record
    pod.manager.step()
    assert store.record.holder == "pod-0"
    assert pod.files.all_present() and pod.sighups()[1] == 1


def test_a_deleted_lease_is_not_taken_while_the_old_leader_may_still_forge(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    a, b = Pod(tmp, store, clock, "pod-0"), Pod(tmp, store, clock, "pod-1")
    a.elect()
    b.manager.step()
    assert a.files.all_present() and store.record is not None
    store.record = None  # kubectl delete lease, or a restore without it
    clock.advance(1)
    assert b.manager.step().startswith("no lease exists; creating it vacant")
    assert store.record is not None and store.record.holder is None
    assert not b.files.any_present()
    # The old leader's renew finds the Lease gone or created anew (409): it demotes at once.
    clock.advance(1)
    a.manager.step()
    assert not a.files.any_present() and a.sighups() == (2, 1)
    assert a.metric("cardano_forge_demotions_total", cause="lease_lost") == 1
    for _ in range(6):
        clock.advance(2)
        b.manager.step()
        assert store.record.holder is None
    clock.advance(2)  # 15 s after pod-1 created the vacant record
    b.manager.step()
    assert store.record.holder == "pod-1"
    assert b.files.all_present()


def test_two_pods_that_see_no_lease_create_one_vacant_record(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    a, b = Pod(tmp, store, clock, "pod-0"), Pod(tmp, store, clock, "pod-1")
    b.manager.step()
    a.lease.read = lambda: None  # type: ignore[method-assign]  # read before pod-1's create
    assert a.manager.step().startswith(
        "creating the vacant lease failed: lease exists already (409)"
    )
    assert b.lease.calls == ["read", "create"] and store.record is not None
    assert store.record.resource_version == "1" and store.record.holder is None


def test_a_lease_created_held_and_deleted_between_two_reads_is_not_taken_at_once(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    """A follower that saw no Lease, and sees none again, cannot tell that nobody created, held
    and deleted it between its two reads: the leader of that unseen term may still forge."""
    tmp, store, clock = world
    b = Pod(tmp, store, clock, "pod-1")
    b.manager.step()  # its first read
    clock.advance(b.settings.lease_duration + 1)
    # Between two of pod-1's reads pod-0 takes the Lease (whatever pod-1 left there) and leads;
    # then the Lease is deleted (kubectl delete lease, a restore without it) while pod-0 forges.
    store.record = None
    store.write(None, "pod-0", "s0")
    store.record = None
    b.manager.step()
    assert store.record is None or store.record.holder != "pod-1"
    assert not b.files.any_present() and b.sighups()[1] == 0


@pytest.mark.parametrize("released_by", [None, "pod-9"])
def test_a_holder_cleared_by_anyone_but_that_holder_is_waited_out(
    world: tuple[Path, LeaseStore, Clock], released_by: str | None
) -> None:
    """kubectl edit clears holderIdentity, or a restore brings back someone else's release."""
    tmp, store, clock = world
    a, b = Pod(tmp, store, clock, "pod-0"), Pod(tmp, store, clock, "pod-1")
    a.elect()
    b.manager.step()
    assert store.record is not None and store.record.holder == "pod-0"
    store.write(store.record.resource_version, None, "edited", released_by)
    clock.advance(1)
    for _ in range(7):
        assert b.manager.step().startswith("lease has no holder")
        assert store.record.holder is None and not b.files.any_present()
        clock.advance(2)
    clock.advance(1)  # 15 s after pod-1 first saw the cleared record
    b.manager.step()
    assert store.record.holder == "pod-1" and b.files.all_present()
    # The old leader's next renew conflicts: it demotes at once.
    a.manager.step()
    assert not a.files.any_present()


def test_a_fresh_pod_that_never_saw_the_holder_waits_out_a_released_lease(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    """It cannot tell a release from a restored record of an old one."""
    tmp, store, clock = world
    store.write(None, "pod-0", "s0")
    assert store.record is not None
    store.write(store.record.resource_version, None, "s1", released_by="pod-0")
    b = Pod(tmp, store, clock, "pod-1")
    assert b.manager.step().startswith("lease has no holder but was not released by the holder")
    clock.advance(15)
    assert b.manager.step().startswith("lease without a holder unchanged for 15.0 s")
    assert store.record.holder == "pod-1"


def test_a_restored_release_of_an_earlier_term_is_waited_out(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    """A backup taken after pod-0 released an earlier term, restored while pod-0 leads again."""
    tmp, store, clock = world
    store.write(None, "pod-0", "s0", transitions=2)  # pod-0 holds its third term
    b = Pod(tmp, store, clock, "pod-1")
    assert b.manager.step().startswith("following pod-0")
    assert store.record is not None
    store.write(store.record.resource_version, None, "restored", "pod-0", transitions=0)
    clock.advance(1)
    assert b.manager.step().startswith("lease has no holder but was not released by the holder")
    assert store.record.holder is None and not b.files.any_present()
    # The same marker in the term it saw is a release: taken at once.
    store.write(store.record.resource_version, "pod-0", "s1", transitions=2)
    b.manager.step()
    store.write(store.record.resource_version, None, "s2", "pod-0", transitions=2)
    assert b.manager.step().startswith("lease was released by pod-0; acquiring it")


def test_a_404_on_renew_demotes_at_once(world: tuple[Path, LeaseStore, Clock]) -> None:
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    pod.elect()
    store.record = None
    clock.advance(2)
    assert pod.manager.step().startswith(
        "renew failed, lease lost: lease was deleted since it was read (404)"
    )
    assert not pod.files.any_present()
    assert pod.metric("cardano_forge_demotions_total", cause="lease_lost") == 1
    clock.advance(2)  # it too creates it vacant and waits a lease duration
    assert pod.manager.step().startswith("no lease exists; creating it vacant")
    assert store.record is not None and store.record.holder is None


# ---- a decision taken before a freeze is not acted on after it ----------------------------------
def _leader_told_to_stand_by(
    world: tuple[Path, LeaseStore, Clock],
) -> tuple[Pod, Pod, Clock]:
    """pod-0 leads but does not forge (the cluster permit is withheld); pod-1 follows."""
    tmp, store, clock = world
    a, b = Pod(tmp, store, clock, "pod-0"), Pod(tmp, store, clock, "pod-1")
    a.elect()
    a.permit = Permit(False, "another region forges")
    a.manager.step()
    b.manager.step()
    assert not a.files.any_present() and a.sighups() == (2, 1)
    return a, b, clock


def _frozen_past_the_lease(a: Pod, b: Pod, clock: Clock) -> Callable[[], None]:
    def freeze() -> None:
        clock.advance(a.settings.lease_duration + 1)  # pod-0 stands still; the Lease expires
        assert b.manager.step().startswith("lease of pod-0 expired")

    return freeze


@pytest.mark.parametrize("point", ["any_present", "install", "installed"])
def test_a_manager_frozen_between_decision_and_action_neither_installs_nor_enables(
    world: tuple[Path, LeaseStore, Clock], point: str
) -> None:
    a, b, clock = _leader_told_to_stand_by(world)
    a.permit = Permit(True, "this region forges again")
    clock.advance(1)
    a.files.freeze_at(point, _frozen_past_the_lease(a, b, clock))
    a.manager.step()
    assert b.files.all_present() and b.sighups()[1] == 1  # pod-1 forges now
    assert a.sighups()[1] == 1, "pod-0 sent an enabling SIGHUP after its deadline"
    assert not a.files.any_present()
    assert not a.manager.is_local_leader()
    caught_before = "install" if point == "any_present" else "enable"
    assert a.metric("cardano_forge_stale_decisions_total", action=caught_before) == 1


def test_a_permit_withdrawn_during_a_freeze_is_honoured_before_acting(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    a, _b, clock = _leader_told_to_stand_by(world)
    a.permit = Permit(True, "this region forges again")
    clock.advance(1)

    def withdrawn() -> None:
        a.permit = Permit(False, "the pool lease moved to another region")

    a.files.freeze_at("installed", withdrawn)
    a.manager.step()
    assert a.sighups()[1] == 1 and not a.files.any_present()


def test_a_pid_file_naming_another_process_is_node_not_found(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    """Never reported as forging, counted once per problem, and a release waits for the node."""
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    problem = "CARDANO_NODE_PID_FILE /run/node.pid names PID 7 (sh), not a process named 'x'"
    pod.node.view = NodeView(
        pids=(), socket_up=True, booted=True, flag_missing=False, lookup_problem=problem
    )
    assert pod.elect().endswith("node process not found, cannot signal it")
    clock.advance(2)
    pod.manager.step()
    assert pod.metric("cardano_node_pid_file_mismatches_total") == 1
    assert pod.metric("cardano_forging_enabled", pod="pod-0", cluster="c1") == 0
    assert pod.signals.sent == []
    assert pod.manager.shutdown().startswith("not releasing the lease (the node answers")


# ---- a credential removal that fails stops the node -------------------------------------------
def _stopping_pod(tmp: Path, store: LeaseStore, clock: Clock) -> tuple[Pod, Stops]:
    pod = Pod(tmp, store, clock)
    stops = Stops(pod.node)
    kwargs = {
        "lease": pod.lease,
        "files": pod.files,
        "node": pod.node,
        "signal_node": pod.signals,
        "permit": lambda: pod.permit,
        "clock": clock,
        "settle": lambda _s: None,
    }
    pod.manager = ForgeManager(pod.settings, stop_node=stops, **kwargs)  # type: ignore[arg-type]
    pod.registry = CollectorRegistry()
    pod.manager.metrics = ForgeMetrics(
        pod.registry, pod="pod-0", cluster="c1", sample=pod.manager.sample
    )
    return pod, stops


@pytest.mark.parametrize("cause", ["deadline", "permit", "exception"])
def test_a_failed_removal_stops_the_node(
    world: tuple[Path, LeaseStore, Clock], cause: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp, store, clock = world
    pod, stops = _stopping_pod(tmp, store, clock)
    pod.elect()
    assert pod.files.all_present()
    pod.files.fail_remove = "Permission denied"
    if cause == "deadline":
        store.down = True
        clock.advance(pod.settings.renew_deadline + 1)
    elif cause == "permit":
        pod.permit = Permit(False, "another region forges")
    else:
        monkeypatch.setattr(pod.manager, "run_cycle", lambda: 1 / 0)
    pod.manager.step()
    assert pod.files.all_present()  # the keys could not be removed ...
    assert stops.stopped == [(42,)]  # ... so the node was stopped
    assert pod.metric("cardano_node_stops_total", signal="sigterm") == 1
    assert pod.metric("cardano_credential_operation_failures_total", operation="remove") >= 1
    assert pod.metric("cardano_forging_enabled", pod="pod-0", cluster="c1") == 0
    assert not pod.manager.is_local_leader()


def test_a_manager_restarted_beside_an_unresponsive_node_removes_and_disables(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    """The node was running before this manager started and its socket does not answer: it may
    be hung and forging on an earlier manager's keys. No start-up credentials; it is told to stop
    (its SIGHUP handler is installed by then), and the startup probe passes."""
    tmp, store, clock = world
    leader, standby = Pod(tmp, store, clock, "pod-0"), Pod(tmp, store, clock, "pod-1")
    leader.elect()
    standby.files.install()  # left by the previous incarnation of the manager
    standby.node.view = NodeView(
        pids=(7,), socket_up=False, booted=False, flag_missing=False, fresh=False
    )
    standby.manager.step()
    assert not standby.files.any_present() and standby.signals.sent == [(7,)]
    assert standby.manager.startup_state() is StartupState.NODE_RUNNING
    # A fresh instance (started with or after this manager) is booting: its window is open.
    standby.node.view = NodeView(pids=(8,), socket_up=False, booted=False, flag_missing=False)
    clock.advance(2)
    standby.manager.step()
    assert standby.files.all_present() and standby.signals.sent == [(7,)]


def test_emergency_demotion_does_not_signal_a_booting_node(
    world: tuple[Path, LeaseStore, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGHUP before the node installed its handler kills it (and one during start-up does
    nothing for forging)."""
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    pod.node.view = NodeView(pids=(43,), socket_up=False, booted=False, flag_missing=False)
    pod.manager.step()  # start-up window: provisioned, not signalled
    assert pod.files.all_present() and pod.signals.sent == []

    def broken() -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(pod.manager, "_reconcile", broken)
    pod.manager.emergency_demote("a test")
    assert not pod.files.any_present()
    assert pod.signals.sent == []
    # A booted node is signalled on the same path.
    pod.node.view = NodeView(pids=(43,), socket_up=True, booted=True, flag_missing=False)
    pod.manager._last_node = pod.node.view
    pod.manager.emergency_demote("a test")
    assert pod.signals.sent == [(43,)]


def test_an_ineligible_leader_lets_its_node_act_before_releasing(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    """The same settle time as shutdown: a standby takes a released Lease at once."""
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    pod.elect()
    (tmp / "secret" / "kes.skey").unlink()
    clock.advance(2)
    assert pod.manager.step().startswith("released the lease")
    assert pod.lease.calls[-2:] == ["settle 0.5", "release"]
    assert pod.sighups() == (2, 1)


# ---- the release on shutdown is retried: there is no next cycle to do it -------------------------


def test_a_release_lost_on_shutdown_is_sent_again(world: tuple[Path, LeaseStore, Clock]) -> None:
    tmp, store, clock = world
    a, b = Pod(tmp, store, clock, "pod-0"), Pod(tmp, store, clock, "pod-1")
    a.elect()
    b.manager.step()
    a.lease.lose_writes = 1  # the release times out before it reaches the API server
    assert a.manager.shutdown() == "released the lease"
    assert not a.files.any_present()
    assert a.lease.calls.count("release") == 2
    assert a.lease.calls[-2:] == ["read", "release"]  # against a quorum read of its own record
    assert store.record is not None and store.record.holder is None
    assert store.record.released_by == "pod-0"
    assert b.manager.step().startswith("lease was released by pod-0; acquiring it")


def test_a_release_applied_but_unanswered_is_not_sent_again(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    a, b = Pod(tmp, store, clock, "pod-0"), Pod(tmp, store, clock, "pod-1")
    a.elect()
    b.manager.step()
    a.lease.apply_but_fail = True  # applied, but the answer is lost
    assert a.manager.shutdown() == "released the lease"
    assert a.lease.calls.count("release") == 1 and a.lease.calls[-1] == "read"
    assert store.record is not None and store.record.holder is None
    assert b.manager.step().startswith("lease was released by pod-0; acquiring it")


def test_a_release_meeting_an_annotation_write_is_sent_against_the_new_version(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    a, b = Pod(tmp, store, clock, "pod-0"), Pod(tmp, store, clock, "pod-1")
    a.elect()
    b.manager.step()
    store.annotate(None, {"example.com/note": "an operator's annotation"})  # 409 for pod-0
    assert a.manager.shutdown() == "released the lease"
    assert store.record is not None and store.record.holder is None
    assert store.record.annotations.get("example.com/note") == "an operator's annotation"
    assert b.manager.step().startswith("lease was released by pod-0; acquiring it")


def test_a_shutdown_never_releases_a_lease_another_pod_took_meanwhile(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    a, b = Pod(tmp, store, clock, "pod-0"), Pod(tmp, store, clock, "pod-1")
    a.elect()
    b.manager.step()
    a.lease.lose_writes = 1
    taken: list[str] = []

    def pod1_takes_it(seconds: float) -> None:  # during the pause before a second attempt
        if seconds == RELEASE_RETRY_PAUSE_S and not taken:
            clock.advance(a.settings.lease_duration)
            taken.append(b.manager.step())

    a.manager._settle = pod1_takes_it
    reason = a.manager.shutdown()
    assert taken and taken[0].startswith("lease of pod-0 expired")
    assert store.record is not None and store.record.holder == "pod-1"
    assert a.lease.calls.count("release") == 1 and a.lease.calls[-1] == "read"
    assert "released" not in reason


def test_demotion_settle_left_is_what_remains_of_the_nodes_time_since_its_disabling_sighup(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    pod = Pod(tmp, store, clock)
    pod.elect()
    clock.advance(1)
    assert pod.manager.demotion_settle_left() == 0.0  # signalled to stop once, long ago
    pod.node.view = NodeView(pids=(), socket_up=False, booted=False, flag_missing=False)
    clock.advance(2)
    pod.manager.step()  # the node went away: nothing to signal
    pod.manager.shutdown()
    assert pod.manager.demotion_settle_left() == 0.0
    other = Pod(tmp, store, clock, "pod-1")
    other.manager.step()
    clock.advance(pod.settings.lease_duration)
    other.manager.step()  # it leads now (the first pod released)
    assert other.manager.is_local_leader()
    other.manager.shutdown()  # disabling SIGHUP now; the release waited its 0.5 s (settle)
    assert other.lease.calls[-2:] == ["settle 0.5", "release"]
    assert other.manager.demotion_settle_left() == pytest.approx(0.5)  # the fake settle
    clock.advance(0.2)
    assert other.manager.demotion_settle_left() == pytest.approx(0.3)
