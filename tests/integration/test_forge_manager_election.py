"""Forge manager + cardano-node stand-ins on the real control plane: one forger, always.

Each test runs three "pods" (a forge-manager process and a node stand-in each) against a real
kube-apiserver + etcd, drives a fault, waits (bounded) for the expected behaviour and checks
from the stand-ins' monotonic event logs that no two nodes ever forged at the same moment.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import (
    FAST_TIMING,
    ForgePod,
    all_events,
    wait_for,
    write_pool_secret,
)
from tests.harness.forging_log import forging_at, intervals, overlaps, summary
from tests.harness.node_standin import now

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RENEW_DEADLINE = float(FAST_TIMING["LEASE_RENEW_DEADLINE"])
RETRY_PERIOD = float(FAST_TIMING["LEASE_RETRY_PERIOD"])
REQUEST_TIMEOUT = float(FAST_TIMING["KUBE_REQUEST_TIMEOUT"])
LEASE_DURATION = float(FAST_TIMING["LEASE_DURATION"])
WAIT = 60.0  # upper bound for any wait below; behaviour, not speed, is asserted


class Pool:
    def __init__(self, pods: list[ForgePod]) -> None:
        self.pods = pods

    def forgers(self) -> list[ForgePod]:
        t = now()
        spans = intervals(all_events(self.pods))
        active = set(forging_at(spans, t))
        return [p for p in self.pods if any(a.startswith(p.node_name + "/") for a in active)]

    def one_forger(self, exclude: ForgePod | None = None) -> ForgePod:
        def check() -> bool:
            f = self.forgers()
            return len(f) == 1 and f[0] is not exclude

        wait_for(check, WAIT, "exactly one forging node" + (f" other than {exclude.name}"
                                                            if exclude else ""))  # fmt: skip
        return self.forgers()[0]

    def assert_never_two_forgers(self) -> None:
        spans = intervals(all_events(self.pods))
        found = overlaps(spans, until=now())
        assert not found, f"two nodes forged at once: {found}\n{summary(spans)}"


@contextlib.contextmanager
def three_pods(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Pool]:
    """Three pods, stopped (bounded) on the way out; the caller checks the overlap."""
    secret = write_pool_secret(tmp_path / "pool-secret")
    pods = [
        ForgePod(
            f"bp-{i}",
            tmp_path,
            control_plane.kubeconfig,
            namespace,
            secret,
            use_pid_file=(i == 2),
        )
        for i in range(3)
    ]
    try:
        for pod in pods:
            pod.start()
        yield Pool(pods)
    finally:
        for pod in pods:
            pod.stop()


@pytest.fixture
def pool(control_plane: ControlPlane, kube_namespace: str, tmp_path: Path) -> Iterator[Pool]:
    with three_pods(control_plane, kube_namespace, tmp_path) as pods:
        yield pods
    pods.assert_never_two_forgers()


def lease_holder(control_plane: ControlPlane, namespace: str) -> str | None:
    with control_plane.api_client() as api:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(
            "cardano-node-leader", namespace
        )
    return (lease.spec.holder_identity or None) if lease.spec else None


def test_exactly_one_forger_among_three_pods(
    pool: Pool, control_plane: ControlPlane, kube_namespace: str
) -> None:
    leader = pool.one_forger()
    assert lease_holder(control_plane, kube_namespace) == leader.name
    # Several retry periods later it is still the only one, and only it holds credential files.
    wait_for(lambda: all(not p.credentials_present() for p in pool.pods if p is not leader),
             WAIT, "standbys to remove their start-up credentials")  # fmt: skip
    for _ in range(3):
        time.sleep(RETRY_PERIOD)
        assert pool.forgers() == [leader]
    assert all(p.targets[0].exists() for p in [leader])
    for pod in pool.pods:
        assert pod.get("/startup-status")[0] == 200
        assert pod.get("/health")[0] == 200
        assert pod.metric("cardano_leader_status") == (1.0 if pod is leader else 0.0)
        assert pod.metric("cardano_forging_enabled") == (1.0 if pod is leader else 0.0)
    pool.assert_never_two_forgers()


def test_kill9_of_the_leader_pod_gives_a_new_forger_after_expiry(
    pool: Pool, control_plane: ControlPlane, kube_namespace: str
) -> None:
    old = pool.one_forger()
    old.kill9()
    new = pool.one_forger(exclude=old)
    assert lease_holder(control_plane, kube_namespace) == new.name
    assert "expired" in new.manager_log.read_text()
    pool.assert_never_two_forgers()


def test_sigterm_hands_over_through_release(
    pool: Pool, control_plane: ControlPlane, kube_namespace: str
) -> None:
    old = pool.one_forger()
    assert old.sigterm_manager() == 0
    # The old node was told to stop before the lease was released.
    assert not old.forging() and not old.credentials_present()
    new = pool.one_forger(exclude=old)
    assert lease_holder(control_plane, kube_namespace) == new.name
    assert f"lease was released by {old.name}; acquiring it" in new.manager_log.read_text()
    pool.assert_never_two_forgers()


def test_api_outage_stops_the_leader_within_the_renew_deadline(
    pool: Pool, control_plane: ControlPlane
) -> None:
    leader = pool.one_forger()
    outage_started = now()
    control_plane.stop_apiserver()
    try:
        wait_for(lambda: not pool.forgers(), WAIT, "the leader to stop forging")
        stopped = [e for e in leader.events() if e["event"] == "forging_stopped"][-1]["t"]
        # The last successful renew was sent before the outage began, so demotion is due by
        # then + renew deadline (+ one request timeout for detection, + 1 s of test slack).
        assert stopped - outage_started <= RENEW_DEADLINE + REQUEST_TIMEOUT + 1.0
        assert not any(p.credentials_present() for p in pool.pods)
        assert all(p.metric("cardano_leader_status") == 0.0 for p in pool.pods)
    finally:
        control_plane.start_apiserver()
    pool.one_forger()
    pool.assert_never_two_forgers()


def test_restarted_leader_node_is_signalled_again(pool: Pool) -> None:
    leader = pool.one_forger()
    leader.kill9_node()
    leader.start_node()
    wait_for(lambda: leader.forging() or any(p.forging() for p in pool.pods if p is not leader),
             WAIT, "forging to resume after the node restart")  # fmt: skip
    assert pool.one_forger() is leader
    pool.assert_never_two_forgers()


def delete_lease(control_plane: ControlPlane, namespace: str) -> None:
    with control_plane.api_client() as api:
        client.CoordinationV1Api(api).delete_namespaced_lease("cardano-node-leader", namespace)


def clear_holder(control_plane: ControlPlane, namespace: str) -> None:
    """What ``kubectl edit`` removing holderIdentity does: no release marker."""
    with control_plane.api_client() as api:
        api_ = client.CoordinationV1Api(api)
        lease = api_.read_namespaced_lease("cardano-node-leader", namespace)
        lease.spec.holder_identity = None
        api_.replace_namespaced_lease("cardano-node-leader", namespace, lease)


@pytest.mark.parametrize("fault", [delete_lease, clear_holder], ids=["deleted", "holder-cleared"])
def test_the_old_leader_demotes_before_anyone_takes_a_deleted_or_cleared_lease(
    control_plane: ControlPlane,
    kube_namespace: str,
    tmp_path: Path,
    fault: Callable[[ControlPlane, str], None],
) -> None:
    """The leader's manager is frozen (its renewals stop; its node keeps forging) while the Lease
    is deleted or its holder cleared by someone else. Nobody may forge until it could have
    demoted; when it resumes its next renew is lost (404 or 409) and it demotes at once."""
    with three_pods(control_plane, kube_namespace, tmp_path) as pool:
        old = pool.one_forger()
        old.freeze_manager()
        try:
            fault(control_plane, kube_namespace)
            time.sleep(3 * RETRY_PERIOD)  # followers have read the change several times
        finally:
            old.thaw_manager()
        wait_for(lambda: not old.forging(), WAIT, f"{old.name} to stop forging")
        new = pool.one_forger()
        assert lease_holder(control_plane, kube_namespace) == new.name
        pool.assert_never_two_forgers()


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"LEASE_DURATION": "12"}, "raise LEASE_DURATION to at least 14.5"),
        ({"LEASE_RETRY_PERIOD": "two"}, "LEASE_RETRY_PERIOD='two' is not valid"),
        ({"POD_NAME": ""}, "POD_NAME is not set"),
    ],
)
def test_invalid_configuration_exits_with_one_clear_line(
    tmp_path: Path, overrides: dict[str, str], fragment: str
) -> None:
    pod = ForgePod("bp-x", tmp_path, tmp_path / "no-kubeconfig", "ns", tmp_path / "secret",
                   timing={})  # fmt: skip
    env = {**pod.env(), **overrides}
    proc = subprocess.run(
        [sys.executable, "-m", "forge_manager"], env=env, capture_output=True, timeout=60
    )
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode != 0
    assert len(lines) == 1 and fragment in lines[0], lines
    assert not any(p.exists() for p in pod.targets)
    assert os.listdir(pod.dir / "secrets") == []
