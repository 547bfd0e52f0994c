"""Cluster-wide coordination end to end: two regions of two pods each on the real control plane.

Every pod is a real forge-manager process with ENABLE_CLUSTER_MANAGEMENT=true and a cardano-node
stand-in; each region has its own local Lease and its own health endpoint (a tiny HTTP server in
this process whose answer the test switches). The CardanoForgeCluster CRD is the repository's.
Each test drives the seed's scenarios and checks, from the stand-ins' monotonic event logs, that
no two nodes ever forged at the same moment.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.harness.controlplane import REPO_ROOT, ControlPlane, b64_file
from tests.harness.forge_pod import (
    FAST_TIMING,
    ForgePod,
    all_events,
    wait_for,
    write_pool_secret,
)
from tests.harness.forging_log import forging_at, intervals, longest_gap, overlaps, summary
from tests.harness.node_standin import now
from tests.harness.regions import (
    POOL_LEASE,
    HealthServer,
    install_crd,
    patch_cfc_spec,
    pool_lease_holder,
    read_cfc,
)
from tests.harness.regions import Regions as RegionPods
from tests.harness.tcpproxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CRD_FILE = REPO_ROOT / "crds" / "cardanoforgeclusters.cardano.io.yaml"
WAIT = 90.0  # upper bound for any wait; behaviour, not speed, is asserted
FAST_LEASE_DURATION = FAST_TIMING["LEASE_DURATION"]
CLUSTER_TIMING = {
    "HEALTH_CHECK_INTERVAL": "1",
    "HEALTH_CHECK_TIMEOUT": "0.5",
    "HEALTH_CHECK_FAILURE_THRESHOLD": "3",
    "CLUSTER_HEARTBEAT_INTERVAL": "1",
    "CLUSTER_STALE_AFTER": "4",
}


@pytest.fixture(scope="module")
def cfc_crd(control_plane: ControlPlane) -> None:
    install_crd(control_plane)


class Regions:
    def __init__(
        self, control_plane: ControlPlane, namespace: str, root: Path, priorities: dict[str, int]
    ) -> None:
        self.cp = control_plane
        self.namespace = namespace
        self.root = root
        self.secret = write_pool_secret(root / "pool-secret")
        self.health = {region: HealthServer() for region in priorities}
        self.proxies: dict[str, TcpProxy] = {}
        self.priorities = priorities
        self.pods: dict[str, list[ForgePod]] = {}
        self.token = uuid.uuid4().hex[:6]

    def region_pods(self, region: str, count: int = 2, *, via_proxy: bool = False) -> None:
        env = {
            "ENABLE_CLUSTER_MANAGEMENT": "true",
            "CLUSTER_NAME": region,
            "CLUSTER_PRIORITY": str(self.priorities[region]),
            "HEALTH_CHECK_ENDPOINT": self.health[region].url,
            **CLUSTER_TIMING,
        }
        if via_proxy:
            proxy = TcpProxy(self.cp.apiserver_port).start()
            self.proxies[region] = proxy
            kubeconfig = self.cp.write_kubeconfig(
                self.root / f"{region}-coordination.kubeconfig",
                user={
                    "client-certificate-data": b64_file(self.cp.pki / "admin.crt"),
                    "client-key-data": b64_file(self.cp.pki / "admin.key"),
                },
                user_name="admin",
                server=proxy.url,
            )
            env["COORDINATION_KUBECONFIG"] = str(kubeconfig)
        self.pods[region] = [
            ForgePod(
                f"{region}-{i}",
                self.root,
                self.cp.kubeconfig,
                self.namespace,
                self.secret,
                lease_name=f"{region}-leader",
                # Unique per test: managers find their node by exact process name, and on a
                # shared test host another run's stand-ins must never match.
                node_name=f"n{self.token}{region[:3]}{i}",
                extra_env=env,
            )
            for i in range(count)
        ]

    @property
    def all_pods(self) -> list[ForgePod]:
        return [p for pods in self.pods.values() for p in pods]

    def start(self) -> None:
        for pod in self.all_pods:
            pod.start()

    def stop(self) -> None:
        for pod in self.all_pods:
            pod.stop()
        for server in self.health.values():
            server.stop()
        for proxy in self.proxies.values():
            proxy.stop()

    # ---- observation -----------------------------------------------------------------------------
    def forgers(self) -> list[ForgePod]:
        active = set(forging_at(intervals(all_events(self.all_pods)), now()))
        return [p for p in self.all_pods if any(a.startswith(p.node_name + "/") for a in active)]

    def wait_forger(self, region: str, exclude: ForgePod | None = None) -> ForgePod:
        def check() -> bool:
            f = self.forgers()
            return len(f) == 1 and f[0].name.startswith(region + "-") and f[0] is not exclude

        try:
            wait_for(check, WAIT, f"exactly one forging node, in region {region}")
        except AssertionError:
            raise AssertionError(self.diagnose()) from None
        return self.forgers()[0]

    def diagnose(self) -> str:
        spans = intervals(all_events(self.all_pods))
        logs = "\n".join(f"--- {p.name}\n{p.log_tail(15)}" for p in self.all_pods)
        return f"forgers now: {[p.name for p in self.forgers()]}\n{summary(spans)}\n{logs}"

    def assert_never_two_forgers(self) -> None:
        spans = intervals(all_events(self.all_pods))
        found = overlaps(spans, until=now())
        assert not found, f"two nodes forged at once: {found}\n{summary(spans)}"

    def cfc(self, region: str) -> dict[str, Any]:
        return read_cfc(self.cp, self.namespace, region)

    def published(self, region: str) -> dict[str, Any]:
        """A region's published status; empty until its local leader has created the resource
        (a pod that sees no local Lease waits a lease duration before creating it)."""
        try:
            return dict(self.cfc(region).get("status", {}))
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise

    def patch_spec(self, region: str, spec: dict[str, Any]) -> None:
        patch_cfc_spec(self.cp, self.namespace, region, spec)

    def pool_lease_holder(self) -> str | None:
        return pool_lease_holder(self.cp, self.namespace)


def _start(regions: Regions) -> Iterator[Regions]:
    try:
        regions.start()
        yield regions
    finally:
        regions.stop()
        regions.assert_never_two_forgers()


@pytest.fixture
def two_regions(
    cfc_crd: None, control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> Iterator[Regions]:
    r = Regions(control_plane, kube_namespace, tmp_path, {"east": 1, "west": 2})
    r.region_pods("east")
    r.region_pods("west")
    yield from _start(r)


@pytest.fixture
def partitionable(
    cfc_crd: None, control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> Iterator[Regions]:
    r = Regions(control_plane, kube_namespace, tmp_path, {"east": 1, "west": 2})
    r.region_pods("east", via_proxy=True)
    r.region_pods("west")
    yield from _start(r)


def test_normal_operation_degradation_failover_recovery_failback(two_regions: Regions) -> None:
    r = two_regions
    east = r.wait_forger("east")
    assert r.pool_lease_holder() == f"east/{east.name}"
    wait_for(lambda: r.published("west").get("effectivePriority") == 2, WAIT,
             "west to publish its status")  # fmt: skip
    status = r.cfc("east")["status"]
    assert (status["effectiveState"], status["effectivePriority"]) == ("Priority-based", 1)
    assert (status["activeLeader"], status["forgingEnabled"]) == (east.name, True)
    assert r.cfc("east")["spec"]["priority"] == 1  # seeded from CLUSTER_PRIORITY
    assert east.metric("cardano_cluster_forge_enabled") == 1.0
    assert east.metric("cardano_cluster_health_check_success") == 1.0

    # Scenario 2: three failed checks demote east (+100); it hands over to west.
    r.health["east"].status = 503
    west = r.wait_forger("west")
    status = r.cfc("east")["status"]
    assert status["effectivePriority"] == 101
    assert status["healthStatus"]["healthy"] is False
    assert r.pool_lease_holder() == f"west/{west.name}"
    assert "handing over to region west" in east.manager_log.read_text()

    # Scenario 3: each success lowers the count by one; at 0 east is restored and takes it back.
    r.health["east"].status = 200
    back = r.wait_forger("east")
    assert r.cfc("east")["status"]["effectivePriority"] == 1
    assert "handing over to region east" in west.manager_log.read_text()
    assert back.metric("cardano_cluster_health_check_consecutive_failures") == 0.0
    r.assert_never_two_forgers()


def test_local_leader_failure_keeps_the_region_forging(two_regions: Regions) -> None:
    r = two_regions
    old = r.wait_forger("east")
    old.kill9()
    new = r.wait_forger("east", exclude=old)
    assert new.name.startswith("east-")
    assert r.pool_lease_holder() == f"east/{new.name}"
    r.assert_never_two_forgers()


def test_operator_edits_take_effect(two_regions: Regions) -> None:
    r = two_regions
    r.wait_forger("east")
    r.patch_spec("east", {"forgeState": "Disabled"})
    r.wait_forger("west")
    assert r.cfc("east")["status"]["effectiveState"] == "Disabled"
    r.patch_spec("east", {"forgeState": "Priority-based"})
    r.wait_forger("east")

    r.patch_spec("east", {"priority": 5})
    r.wait_forger("west")
    r.patch_spec("east", {"priority": 1})
    r.wait_forger("east")

    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    override = {"forgeState": "Disabled", "reason": "kernel upgrade", "expiresAt": later}
    r.patch_spec("east", {"override": override})
    r.wait_forger("west")
    earlier = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    r.patch_spec("east", {"override": {**override, "expiresAt": earlier}})
    east = r.wait_forger("east")  # an expired override is ignored

    # Two Enabled regions never forge together: the holder keeps the pool lease.
    r.patch_spec("east", {"forgeState": "Enabled"})
    wait_for(lambda: r.published("east").get("effectiveState") == "Enabled", WAIT,
             "east to publish Enabled")  # fmt: skip
    r.patch_spec("west", {"forgeState": "Enabled"})
    wait_for(lambda: r.published("west").get("effectiveState") == "Enabled", WAIT,
             "west to publish Enabled")  # fmt: skip
    for _ in range(3):
        time.sleep(1.0)  # a few retry periods: the holder is not preempted
        assert [p.name for p in r.forgers()] == [east.name]
    r.assert_never_two_forgers()


def test_region_cut_off_from_the_coordination_api(partitionable: Regions) -> None:
    r = partitionable
    east = r.wait_forger("east")
    r.proxies["east"].partition("blackhole")
    r.wait_forger("west")
    assert "pool lease not renewed within the renew deadline" in east.manager_log.read_text()
    r.proxies["east"].heal()
    r.wait_forger("east")  # failback once east is visible again
    r.assert_never_two_forgers()


# ---- faults of the coordination API (issue 11) ---------------------------------------------
def _region_pods(control_plane: ControlPlane, namespace: str, root: Path, **kw: Any) -> RegionPods:
    """East (priority 1) and west (priority 2), one unguarded pod each: the cheapest pair."""
    return RegionPods(control_plane, namespace, root, {"east": 1, "west": 2}, pods_per_region=1,
                      guard=False, via_proxy=False, **kw)  # fmt: skip


def _wait_forger(r: RegionPods, region: str) -> ForgePod:
    def check() -> bool:
        f = r.forgers()
        return len(f) == 1 and r.region_of(f[0]) == region

    try:
        wait_for(check, WAIT, f"exactly one forging node, in region {region}")
    except AssertionError:
        raise AssertionError(r.diagnose()) from None
    return r.forgers()[0]


def _never_two(r: RegionPods) -> None:
    spans = r.spans()
    found = overlaps(spans, until=now())
    assert not found, f"two nodes forged at once: {found}\n{summary(spans)}"


@pytest.fixture
def rbac_regions(
    cfc_crd: None, control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> Iterator[RegionPods]:
    r = _region_pods(control_plane, kube_namespace, tmp_path, service_accounts=True)
    try:
        r.start()
        yield r
    finally:
        r.stop()
        _never_two(r)


def test_a_better_region_that_cannot_list_the_regions_does_not_block_the_others(
    rbac_regions: RegionPods,
) -> None:
    """East's ServiceAccount loses list on cardanoforgeclusters (its Role edited): east keeps
    heartbeating and writing its status, but cannot act. West must not defer to it for ever."""
    r = rbac_regions
    _wait_forger(r, "east")
    t0 = now()
    r.set_coordination_rules("east", list_regions=False)
    _wait_forger(r, "west")
    print(f"east lost list: longest time with no forger {longest_gap(r.spans(), t0, now()):.1f} s")
    eligible = r.condition("east", "Eligible")
    assert eligible is not None
    assert (eligible["status"], eligible["reason"]) == ("False", "CannotReadRegions")
    assert "403" in eligible["message"] or "Forbidden" in eligible["message"]
    r.set_coordination_rules("east", list_regions=True)
    _wait_forger(r, "east")  # fail-back once east can act again
    _never_two(r)


@pytest.fixture
def proxied_region(
    cfc_crd: None, control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> Iterator[RegionPods]:
    r = RegionPods(control_plane, kube_namespace, tmp_path, {"east": 1}, pods_per_region=1,
                   guard=False, via_proxy=False, api_proxies=True)  # fmt: skip
    try:
        r.start()
        yield r
    finally:
        r.stop()
        _never_two(r)


def test_a_pool_lease_renew_applied_whose_answer_is_lost_does_not_interrupt_forging(
    proxied_region: RegionPods,
) -> None:
    r = proxied_region
    east = _wait_forger(r, "east")
    started = [s for s in r.spans() if s.end is None]
    assert len(started) == 1
    proxy = r.api_proxies["east"]
    proxy.drop_answers(method="PUT", path=f"/leases/{POOL_LEASE}$", count=1)
    wait_for(lambda: len(proxy.dropped()) == 1, WAIT, "a pool-lease renew without its answer")
    dropped_at = proxy.dropped()[0].t
    # Well past a lease duration: the holder recognised its own write by its stamp and kept the
    # pool lease; it never stopped forging.
    wait_for(
        lambda: now() > dropped_at + 2 * float(FAST_LEASE_DURATION), WAIT, "two lease durations"
    )
    assert [s for s in r.spans() if s.end is None] == started, r.diagnose()
    assert r.pool_lease_holder() == f"east/{east.name}"


def test_a_coordination_api_slower_than_the_request_timeout_stops_the_start_up(
    cfc_crd: None, control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    with TcpProxy(control_plane.apiserver_port) as proxy:
        proxy.delay_answers(1.0)  # KUBE_REQUEST_TIMEOUT is 0.5 s
        kubeconfig = control_plane.write_kubeconfig(
            tmp_path / "slow.kubeconfig",
            user={
                "client-certificate-data": b64_file(control_plane.pki / "admin.crt"),
                "client-key-data": b64_file(control_plane.pki / "admin.key"),
            },
            user_name="admin",
            server=proxy.url,
        )
        pod = ForgePod(
            "east-0", tmp_path, control_plane.kubeconfig, kube_namespace,
            write_pool_secret(tmp_path / "secret"), lease_name="east-leader",
            extra_env={"ENABLE_CLUSTER_MANAGEMENT": "true", "CLUSTER_NAME": "east",
                       "COORDINATION_KUBECONFIG": str(kubeconfig), **CLUSTER_TIMING},
        )  # fmt: skip
        pod.start_manager()
        assert pod.manager is not None
        try:
            code = pod.manager.wait(WAIT)
        finally:
            pod.stop()
    lines = pod.manager_log.read_text().splitlines()
    failure = [line for line in lines if line.startswith("forge-manager: ")]
    assert code == 2, "\n".join(lines[-20:])
    assert len(failure) == 1, lines
    assert "more than KUBE_REQUEST_TIMEOUT=0.5 s" in failure[0]
    assert not any(p.exists() for p in pod.targets)  # it never got as far as the credentials


def test_a_deleted_pool_lease_is_not_taken_while_a_cut_off_holder_may_still_forge(
    cfc_crd: None, control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    """East holds the pool lease and is cut off from the coordination API (it forges until its
    renew deadline); the Lease is deleted and west, which ranks first, starts competing. West must
    not take it before east's deadline has passed."""
    r = RegionPods(control_plane, kube_namespace, tmp_path, {"east": 2, "west": 1},
                   pods_per_region=1, guard=False, via_proxy=True)  # fmt: skip
    with control_plane.api_client() as api:  # west starts Disabled: east holds the lease
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "cardano.io", "v1", kube_namespace, "cardanoforgeclusters",
            {"apiVersion": "cardano.io/v1", "kind": "CardanoForgeCluster",
             "metadata": {"name": "west"},
             "spec": {"region": "west", "priority": 1, "forgeState": "Disabled"}},
        )  # fmt: skip
    try:
        r.start()
        _wait_forger(r, "east")
        r.proxies["east"].partition("blackhole")
        t0 = now()
        with control_plane.api_client() as api:
            client.CoordinationV1Api(api).delete_namespaced_lease(POOL_LEASE, kube_namespace)
        r.patch_spec("west", {"forgeState": "Priority-based"})
        _wait_forger(r, "west")
        _never_two(r)
        gap = longest_gap(r.spans(), t0, now())
        print(f"pool lease deleted: longest time with no forger {gap:.1f} s")
        assert "the pool lease does not exist" in r.pods["west"][0].manager_log.read_text()
    finally:
        r.stop()
    _never_two(r)
