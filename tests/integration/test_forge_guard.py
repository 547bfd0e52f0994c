"""forge-guard fences a node whose forge manager can no longer demote it.

Three "pods" on the real control plane, each a forge-manager process and a cardano-node stand-in
running as the child of ``forge-guard`` (as in the chart's node container), the manager writing
the forge permit into the pod's shared ``run/`` directory. The forging pod's manager alone is
frozen (SIGSTOP) or killed (SIGKILL) while its node goes on running: the guard must remove the
credentials and signal the node before any other pod can take the expired Lease, so the stand-ins'
monotonic logs show the old node's ``forging_stopped`` before the new node's ``forging_started``.

A test shows it is the guard that prevents the overlap: the same freeze without the guard leaves
two nodes forging until the manager is resumed. Others cover what the guard must not do or must
do besides: leave a node that is still booting alone (a SIGHUP would kill it), stop a node whose
credentials cannot be removed, and leave the credentials the manager provisions for a restarted
node's boot in place when the permit was already revoked before the restart.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import FAST_TIMING, ForgePod, all_events, wait_for, write_pool_secret
from tests.harness.forging_log import Interval, Overlap, forging_at, intervals, overlaps, summary
from tests.harness.node_standin import now
from tests.harness.regions import Regions, install_crd

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAIT = 60.0  # upper bound for any wait below; behaviour, not speed, is asserted
RETRY_PERIOD = float(FAST_TIMING["LEASE_RETRY_PERIOD"])


class Pool:
    def __init__(self, pods: list[ForgePod]) -> None:
        self.pods = pods

    def spans(self) -> list[Interval]:
        return intervals(all_events(self.pods))

    def forgers(self) -> list[ForgePod]:
        active = set(forging_at(self.spans(), now()))
        return [p for p in self.pods if any(a.startswith(p.node_name + "/") for a in active)]

    def one_forger(self, exclude: ForgePod | None = None) -> ForgePod:
        def check() -> bool:
            f = self.forgers()
            return len(f) == 1 and f[0] is not exclude

        try:
            wait_for(check, WAIT, "exactly one forging node")
        except AssertionError:
            raise AssertionError(self.diagnose()) from None
        return self.forgers()[0]

    def diagnose(self) -> str:
        logs = "\n".join(
            f"--- {p.name}\n{p.log_tail(12)}\n{_tail(p.node_log, 6)}" for p in self.pods
        )
        return f"forgers: {[p.name for p in self.forgers()]}\n{summary(self.spans())}\n{logs}"

    def overlap(self) -> list[Overlap]:
        return overlaps(self.spans(), until=now())

    def assert_never_two_forgers(self) -> None:
        found = self.overlap()
        assert not found, f"two nodes forged at once: {found}\n{self.diagnose()}"


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def make_pool(
    control_plane: ControlPlane, namespace: str, root: Path, *, guard: bool
) -> list[ForgePod]:
    secret = write_pool_secret(root / "pool-secret")
    return [
        ForgePod(f"bp-{i}", root, control_plane.kubeconfig, namespace, secret, guard=guard)
        for i in range(3)
    ]


@pytest.fixture
def guarded(control_plane: ControlPlane, kube_namespace: str, tmp_path: Path) -> Iterator[Pool]:
    pool = Pool(make_pool(control_plane, kube_namespace, tmp_path, guard=True))
    try:
        for pod in pool.pods:
            pod.start()
        yield pool
    finally:
        for pod in pool.pods:
            pod.stop()
    pool.assert_never_two_forgers()


@pytest.fixture
def unguarded(control_plane: ControlPlane, kube_namespace: str, tmp_path: Path) -> Iterator[Pool]:
    pool = Pool(make_pool(control_plane, kube_namespace, tmp_path, guard=False))
    try:
        for pod in pool.pods:
            pod.start()
        yield pool
    finally:
        for pod in pool.pods:
            pod.stop()


def lease_holder(control_plane: ControlPlane, namespace: str) -> str | None:
    with control_plane.api_client() as api:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(
            "cardano-node-leader", namespace
        )
    return (lease.spec.holder_identity or None) if lease.spec else None


def permit_deadline(pod: ForgePod) -> int | None:
    """The permit's deadline, ns of CLOCK_BOOTTIME (the stand-ins' clock), None when absent."""
    try:
        clock, ns, _boot = pod.permit_file.read_text().split()
    except (FileNotFoundError, ValueError):
        return None
    return int(ns) if clock == "boottime" else None


def last_event(pod: ForgePod, event: str, after: float) -> float:
    times = [float(e["t"]) for e in pod.events() if e["event"] == event and e["t"] > after]
    assert times, f"{pod.name}: no {event} after {after:.3f}"
    return times[-1]


def assert_fenced_before_takeover(pool: Pool, old: ForgePod, fault_at: float) -> ForgePod:
    """The guard stopped ``old``'s still running node before another node started forging."""
    new = pool.one_forger(exclude=old)
    stopped = last_event(old, "forging_stopped", fault_at)
    started = min(
        float(e["t"]) for e in new.events() if e["event"] == "forging_started" and e["t"] > fault_at
    )
    assert stopped < started, pool.diagnose()
    assert old.node_running(), "the old node must have been fenced, not killed"
    assert not old.credentials_present()
    # The guard never writes the manager's permit: it records what it revoked in its own file.
    deadline = permit_deadline(old)
    assert deadline is not None and deadline / 1e9 < now(), "the passed permit is left as written"
    assert old.revoked_file.read_text().startswith("revoked ")
    assert "revoked forging: permit passed" in old.node_log.read_text()
    assert "sent SIGHUP" in old.node_log.read_text()
    pool.assert_never_two_forgers()
    return new


def test_frozen_manager_is_fenced_by_the_guard(
    guarded: Pool, control_plane: ControlPlane, kube_namespace: str
) -> None:
    pool = guarded
    old = pool.one_forger()
    wait_for(lambda: permit_deadline(old) is not None, WAIT, "the leader's forge permit")
    assert all(permit_deadline(p) is None for p in pool.pods if p is not old)

    frozen_at = now()
    old.freeze_manager()
    try:
        new = assert_fenced_before_takeover(pool, old, frozen_at)
        assert lease_holder(control_plane, kube_namespace) == new.name
        assert old.manager_running()  # still frozen, never got to demote by itself
    finally:
        old.thaw_manager()

    # Resumed, the manager finds its leadership gone: it stays demoted and withdraws the permit.
    wait_for(lambda: old.metric("cardano_leader_status") == 0.0, WAIT, "the thawed manager's view")
    wait_for(lambda: not old.permit_file.exists(), WAIT, "the permit to be withdrawn")
    for _ in range(3):
        assert pool.forgers() == [new]
        assert not old.credentials_present()
        time.sleep(RETRY_PERIOD)
    assert old.node_up()  # the same node process, standing by
    pool.assert_never_two_forgers()


def test_killed_manager_is_fenced_by_the_guard(
    guarded: Pool, control_plane: ControlPlane, kube_namespace: str
) -> None:
    pool = guarded
    old = pool.one_forger()
    wait_for(lambda: permit_deadline(old) is not None, WAIT, "the leader's forge permit")

    killed_at = now()
    old.kill9_manager()
    new = assert_fenced_before_takeover(pool, old, killed_at)
    assert lease_holder(control_plane, kube_namespace) == new.name

    # The kubelet restarts the sidecar beside the running node: it comes back as a standby.
    # (Its /startup-status stays 503: a standby beside a running node holds no credentials.)
    old.restart_manager()
    wait_for(lambda: old.get("/health")[0] == 200, WAIT, "the restarted manager's /health")
    wait_for(lambda: old.metric("cardano_leader_status") == 0.0, WAIT, "the restarted manager")
    # The permit its previous incarnation left is withdrawn once demotion is confirmed.
    wait_for(lambda: not old.permit_file.exists(), WAIT, "the left-behind permit withdrawn")
    for _ in range(3):
        assert pool.forgers() == [new]
        assert not old.credentials_present()
        time.sleep(RETRY_PERIOD)
    pool.assert_never_two_forgers()


def test_without_the_guard_a_frozen_manager_leaves_two_forgers(unguarded: Pool) -> None:
    """The hole the guard closes: no fence, so the frozen leader's node forges on."""
    pool = unguarded
    old = pool.one_forger()
    old.freeze_manager()
    try:
        wait_for(lambda: len(pool.forgers()) == 2, WAIT, "a second forger beside the frozen one")
        assert old in pool.forgers()
        assert pool.overlap(), pool.diagnose()
    finally:
        old.thaw_manager()
    # Once resumed, the manager demotes its node: one forger again, and no new overlap begins.
    pool.one_forger(exclude=old)
    assert not old.credentials_present()


# ---- what the guard must not do, and must do besides ------------------------------------------
BOOT = 12.0  # the stand-in's start-up delay below: longer than a permit (renew deadline 5 s)


def test_a_booting_node_is_not_signalled_when_its_permit_passes(
    control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    """The permit passes while the leader's node is still booting (replaying its chain): the
    guard removes the credentials but sends no SIGHUP, which would kill a cardano-node that has
    not yet installed its handler. Started non-producing, the node cannot forge meanwhile, and it
    comes up not forging."""
    secret = write_pool_secret(tmp_path / "pool-secret")
    # The node sync check is off: with it, a pod leads only once its node is up and synced, so
    # a leader's node boots only after a restart; here it boots while this pod leads.
    pod = ForgePod("bp-0", tmp_path, control_plane.kubeconfig, kube_namespace, secret,
                   guard=True, startup_delay=BOOT,
                   extra_env={"NODE_SYNC_CHECK": "false"})  # fmt: skip
    try:
        pod.start_manager()
        wait_for(pod.startup_ready, WAIT, "start-up credentials")
        # The node starts once this pod leads (the first election waits a lease duration), so
        # that the permit, frozen at once, passes a renew deadline later: within the boot.
        wait_for(lambda: permit_deadline(pod) is not None, WAIT, "the leader's forge permit")
        pod.start_node()
        pod.freeze_manager()
        wait_for(lambda: not pod.credentials_present(), WAIT, "the guard to remove the credentials")
        assert not pod.node_up(), "the test needs the permit to pass while the node boots"
        wait_for(pod.node_up, WAIT, "the node up after its boot")
        events = [e["event"] for e in pod.events()]
        assert "sighup_ignored" not in events, "the guard signalled a booting node"
        assert "forging_started" not in events
        assert "not signalled: its socket has not answered yet" in pod.node_log.read_text()
        assert pod.node_running()
    finally:
        pod.thaw_manager()
        pod.stop()


def test_credentials_that_cannot_be_removed_stop_the_node(guarded: Pool) -> None:
    """A credential path the guard cannot unlink (EACCES, EROFS... here a non-empty directory in
    its place, which even root cannot unlink): the node is stopped (SIGTERM) before anyone else
    may take over, instead of forging on with the keys it holds."""
    pool = guarded
    old = pool.one_forger()
    wait_for(lambda: permit_deadline(old) is not None, WAIT, "the leader's forge permit")
    stuck = old.targets[1]
    frozen_at = now()
    old.freeze_manager()
    try:
        stuck.unlink()
        (stuck / "held").mkdir(parents=True)
        new = pool.one_forger(exclude=old)
        stopped = last_event(old, "forging_stopped", frozen_at)
        started = min(float(e["t"]) for e in new.events()
                      if e["event"] == "forging_started" and e["t"] > frozen_at)  # fmt: skip
        assert stopped < started, pool.diagnose()
        wait_for(lambda: not old.node_running(), WAIT, "the node container to end")
        log = old.node_log.read_text()
        assert "the credentials cannot be removed" in log and "sent SIGTERM" in log, log
        assert old.node is not None and old.node.returncode == 0  # the stand-in's clean exit
        assert not old.revoked_file.exists(), "a permit counted revoked with a file left"
    finally:
        old.thaw_manager()
        shutil.rmtree(stuck, ignore_errors=True)
    pool.assert_never_two_forgers()


def test_a_restarted_node_keeps_the_credentials_provisioned_for_its_boot(guarded: Pool) -> None:
    """The guard revoked a killed manager's permit; then the node crashes (its container, the
    guard with it, restarts) and the kubelet restarts the sidecar, which provisions credentials
    for the node's boot. The restarted guard finds the same passed permit already revoked (its
    own record, kept beside the permit) and must leave them: removing them again would keep the
    node from starting."""
    pool = guarded
    old = pool.one_forger()
    wait_for(lambda: permit_deadline(old) is not None, WAIT, "the leader's forge permit")
    killed_at = now()
    old.kill9_manager()
    new = assert_fenced_before_takeover(pool, old, killed_at)
    old.kill9_node()
    old.restart_manager()
    wait_for(old.startup_ready, WAIT, "start-up credentials from the restarted manager")
    assert permit_deadline(old) is not None, "the passed permit is still there"
    old.start_node()
    wait_for(old.node_up, WAIT, "the restarted node up")
    assert "refused_to_start" not in [e["event"] for e in old.events()]
    assert "revoked forging before starting the node" not in old.node_log.read_text()
    # A standby again: its manager removes the credentials and withdraws the old permit.
    wait_for(lambda: not old.permit_file.exists(), WAIT, "the left-behind permit withdrawn")
    assert not old.credentials_present()
    assert pool.forgers() == [new]
    pool.assert_never_two_forgers()


# ---- the permit under cluster coordination ----------------------------------------------------
@pytest.fixture
def partitionable(
    control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> Iterator[Regions]:
    install_crd(control_plane)
    regions = Regions(control_plane, kube_namespace, tmp_path, {"east": 1, "west": 2})
    try:
        regions.start()
        yield regions
    finally:
        regions.stop()
    found = overlaps(regions.spans(), until=now())
    assert not found, f"two nodes forged at once: {found}\n{regions.diagnose()}"


def test_permit_never_outlives_the_pool_lease_deadline(partitionable: Regions) -> None:
    """Cut off from the coordination API (local API fine), a forger's permit must not extend
    past the pool-wide Lease's renew deadline: otherwise a manager that stalls in that window
    leaves its node forging after another region may take the pool Lease."""
    r = partitionable
    wait_for(lambda: [p.name for p in r.forgers()][:1] == ["east-0"]
             or [p.name for p in r.forgers()][:1] == ["east-1"], WAIT, "east forging")  # fmt: skip
    east = r.forgers()[0]
    wait_for(lambda: permit_deadline(east) is not None, WAIT, "east's forge permit")
    cut = now()
    r.proxies["east"].partition("blackhole")
    renew_deadline = float(FAST_TIMING["LEASE_RENEW_DEADLINE"])
    latest = 0
    deadline = time.monotonic() + WAIT
    while east.forging() and time.monotonic() < deadline:
        latest = max(latest, permit_deadline(east) or 0)
        time.sleep(0.05)
    assert not east.forging()
    # Every pool-lease renewal that succeeded was sent before the cut.
    assert latest / 1e9 <= cut + renew_deadline, (
        f"permit reached {latest / 1e9 - cut:.2f} s after the cut; pool renew deadline is "
        f"{renew_deadline:g} s"
    )
