"""The chart on real pods: two regions installed with ``helm`` on the single-node cluster.

One install (the module's ``pool``) is shared by the tests below, in this order: each fault test
first waits for the steady state (every pod ready, one node forging), and after every test the
stand-ins' own event logs must show that no two nodes ever forged at the same moment. The last
test uninstalls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.harness.forging_log import longest_gap
from tests.harness.node_standin import now
from tests.harness.pod_pool import (
    COORDINATION,
    CREDENTIAL_FILES,
    MANAGER_STARTUP,
    REGIONS,
    SECRETS_DIR,
    UID,
    UNHEALTHY_LAG_SLOTS,
    PodPool,
    _files_holding,
    _status_field,
    wait_for,
)

pytestmark = [
    pytest.mark.node,
    pytest.mark.slow,
    # The first test's set-up starts the node (when no other test did) and installs both
    # regions: about 6 minutes on a busy 2-core host; a helm upgrade rolls four pods.
    pytest.mark.timeout(900),
]

EAST, WEST = REGIONS
CRD = "cardanoforgeclusters.cardano.io"
#: forge-guard checks the permit every 100 ms; then the stand-in handles the SIGHUP.
GUARD_REACTION_S = 1.0


@pytest.fixture(autouse=True)
def never_two_forgers(pool: PodPool) -> Iterator[None]:
    yield
    pool.assert_never_two_forgers()


def steady(pool: PodPool) -> client.V1Pod:
    """Every pod ready and exactly one node forging; its pod."""
    pool.wait_ready()
    name = pool.wait_one_forger()
    pod = pool.pod(pool.region_of(name), name)
    assert pod is not None
    return pod


def cri_time(line: str) -> float:
    """The time the container runtime logged a line (CRI log format), as Unix seconds."""
    stamp = line.split(" ", 1)[0]
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    base = datetime.fromisoformat(whole + "+00:00").timestamp()
    return base + float(f"0.{fraction or 0}")


def manager_messages(pool: PodPool, pod: str) -> list[tuple[float, str]]:
    """(CRI time, message) of the forge manager's JSON log lines of a pod."""
    out = []
    for line in pool.logs(pod, "forge-manager"):
        fields = line.split(" ", 3)  # time, stream, tag (F: full line), message
        try:
            record = json.loads(fields[3])
        except (IndexError, ValueError):
            continue
        out.append((cri_time(line), str(record.get("message", ""))))
    return out


def started_at(status: Any) -> float:
    return float(status.state.running.started_at.timestamp())


def in_pod(pool: PodPool, pod: client.V1Pod, container: str, code: str) -> str:
    return pool.node.kubectl(
        "exec", "-n", pod.metadata.namespace, pod.metadata.name, "-c", container, "--",
        "python3", "-c", code,
    ).stdout  # fmt: skip


def test_install_gates_the_node_on_the_sidecar_and_one_node_forges(pool: PodPool) -> None:
    forger = steady(pool)
    startup = MANAGER_STARTUP["initialDelaySeconds"]
    for region in pool.regions:
        for pod in pool.pods(region):
            name = pod.metadata.name
            sidecar = pool.container_status(pod, "forge-manager")
            node = pool.container_status(pod, "cardano-node")
            assert sidecar.started and node.started, name
            # The kubelet probes the sidecar's /startup-status no earlier than the probe's initial
            # delay after the sidecar started, and starts the node only once it passed (start
            # times have a resolution of one second).
            assert started_at(node) >= started_at(sidecar) + startup - 1, name
            # ... by which time the manager had put the credentials in place: the node's first
            # line comes after the manager's "credentials installed".
            installed = [t for t, m in manager_messages(pool, name) if "credentials installed" in m]
            first_node_line = cri_time(pool.logs(name, "cardano-node")[0])
            assert installed and installed[0] < first_node_line, name
    events = pool.events()
    assert not [e for e in events if e["event"] == "refused_to_start"]
    assert pool.forgers() == [forger.metadata.name]
    # The health endpoints started without being restarted by their liveness probe.
    for region in pool.regions:
        with pool.core() as core:
            pods = core.list_namespaced_pod(
                region.name, label_selector="app.kubernetes.io/component=health-endpoint"
            ).items
        assert [c.restart_count for p in pods for c in p.status.container_statuses] == [0]


def test_credentials_only_in_memory_and_only_on_the_forger(pool: PodPool) -> None:
    forger = steady(pool)
    mounts = in_pod(pool, forger, "cardano-node", "print(open('/proc/mounts').read())")
    secrets = [line.split() for line in mounts.splitlines() if line.split()[1:2] == [SECRETS_DIR]]
    assert secrets and secrets[0][2] == "tmpfs", mounts
    listing = in_pod(
        pool, forger, "forge-manager", f"import os; print(sorted(os.listdir('{SECRETS_DIR}')))"
    )
    assert listing.strip() == str(sorted(CREDENTIAL_FILES))
    assert pool.credential_files_on_host(forger) == sorted(CREDENTIAL_FILES)

    def standbys_clean() -> bool:
        for region in pool.regions:
            for pod in pool.pods(region):
                if pod.metadata.name == forger.metadata.name:
                    continue
                if pool.credential_files_on_host(pod):
                    return False
                if pool.manager_metrics(pod.metadata.name).get("cardano_forge_credentials_present"):
                    return False
        return True

    # Past the start-up window (every node's socket answers), standbys hold no keys.
    wait_for("the standbys to remove their start-up credentials", standbys_clean, 30)
    # Key material is nowhere on disk: not on the PVs, the on-disk emptyDirs, the logs, the
    # containers' writable layers; yet it is findable where it belongs (the memory volume).
    assert pool.files_with_key_material() == []
    memory_volume = pool.memory_volume(forger, "credentials")
    assert _files_holding(memory_volume, pool.marker.encode(), set())


def test_sighup_crosses_from_the_sidecar_to_the_node_without_capabilities(pool: PodPool) -> None:
    forger = steady(pool)
    name = forger.metadata.name
    started = [e for e in pool.events() if e["host"] == name and e["event"] == "forging_started"]
    assert started and started[-1]["reason"] == "sighup"
    metrics = pool.manager_metrics(name)
    assert metrics.get("cardano_sighup_signals_total", 0) >= 1
    manager = pool.process_of(forger, "forge-manager", "forge-manager")
    node = pool.process_of(forger, "cardano-node", "cardano-node")
    for pid in (manager, node):
        assert _status_field(pid, "Uid").split()[:2] == [str(UID), str(UID)]
        assert int(_status_field(pid, "CapEff"), 16) == 0
        assert int(_status_field(pid, "CapBnd"), 16) == 0
        assert _status_field(pid, "NoNewPrivs") == "1"
    # One PID namespace for the pod's containers (shareProcessNamespace).
    assert Path(f"/proc/{manager}/ns/pid").readlink() == Path(f"/proc/{node}/ns/pid").readlink()


def test_killed_node_process_is_restarted_and_the_new_process_signalled(pool: PodPool) -> None:
    forger = steady(pool)
    name = forger.metadata.name
    restarts = pool.container_status(forger, "cardano-node").restart_count
    killed = pool.kill_node_process(forger)

    def signalled_again() -> bool:
        return any(
            e["instance"] != killed["instance"] and e["reason"] == "sighup"
            for e in pool.forging_started(name, killed["t"])
        )

    wait_for(f"{name}'s restarted node to be signalled to forge", signalled_again, 90)
    pod = pool.pod(pool.region_of(name), name)
    assert pod is not None
    assert pool.container_status(pod, "cardano-node").restart_count == restarts + 1
    assert pool.wait_one_forger() == name


def test_killed_sidecar_is_fenced_by_forge_guard_and_restarted(pool: PodPool) -> None:
    """SIGKILL of the forge manager: nothing renews the forge permit any more; the node stops
    forging by the permit's deadline at the latest (forge-guard revokes it then, unless the
    restarted sidecar has demoted first), before any other pod may take over."""
    forger = steady(pool)
    name = forger.metadata.name
    sidecar_restarts = pool.container_status(forger, "forge-manager").restart_count
    node_restarts = pool.container_status(forger, "cardano-node").restart_count
    instance = next(
        e["instance"] for e in reversed(pool.events())
        if e["host"] == name and e["event"] == "forging_started"
    )  # fmt: skip
    killed_at = now()
    pool.kill_manager(forger)
    deadline = pool.permit_deadline(forger)  # no manager left to extend it
    assert deadline is not None, "a forging pod without a forge permit"

    def fenced() -> dict[str, Any] | None:
        for e in pool.events():
            if e["instance"] == instance and e["event"] == "forging_stopped" and e["t"] > killed_at:
                return e
        return None

    stop = wait_for(f"{name} to stop forging", fenced, 60)
    assert stop["reason"] == "sighup"
    assert stop["t"] <= deadline + GUARD_REACTION_S, (stop["t"], deadline)
    others = [e for e in pool.events() if e["event"] == "forging_started" and killed_at < e["t"]]
    assert all(e["t"] >= stop["t"] for e in others)
    by_guard = any("revoked forging" in line for line in pool.logs(name, "cardano-node"))
    margin = deadline - stop["t"]
    print(f"sidecar of {name} killed: stopped forging {stop['t'] - killed_at:.1f} s later, "
          f"{abs(margin):.1f} s {'before' if margin >= 0 else 'after'} the permit's deadline, "
          f"by {'forge-guard' if by_guard else 'the restarted forge manager'}")  # fmt: skip
    steady(pool)
    pod = pool.pod(pool.region_of(name), name)
    assert pod is not None
    assert pool.container_status(pod, "forge-manager").restart_count == sidecar_restarts + 1
    # A native sidecar restarts alone: the node container kept running.
    assert pool.container_status(pod, "cardano-node").restart_count == node_restarts


@pytest.mark.parametrize("how", ["planned", "forced"])
def test_deleting_the_forging_pod_hands_over(pool: PodPool, how: str) -> None:
    forger = steady(pool)
    name, region = forger.metadata.name, pool.region_of(forger.metadata.name)
    deleted_at = now()
    force = ["--grace-period=0", "--force"] if how == "forced" else []
    pool.node.kubectl("delete", "pod", "-n", region.name, name, "--wait=false", *force)
    successor = pool.wait_one_forger(not_in=(name,))
    stopped = [
        e for e in pool.events()
        if e["host"] == name and e["event"] in ("forging_stopped", "exited") and e["t"] > deleted_at
    ]  # fmt: skip
    assert stopped, f"{name} left no record of stopping"
    took = pool.forging_started(successor, deleted_at)[0]["t"] - deleted_at
    print(f"{how} delete of {name}: {successor} forges {took:.1f} s later")
    # The StatefulSet recreates the pod; the pool is whole again.
    steady(pool)


def test_region_fails_over_and_back_on_its_health_endpoint(pool: PodPool) -> None:
    """East's nodes fall behind in Prometheus' view (not enough for the managers' own sync
    check): east's health endpoint, which its managers reach by its Service name, answers
    unhealthy, west takes over; east recovers and takes the pool back (priority 1)."""
    east_pods = tuple(p.metadata.name for p in pool.pods(EAST))
    west_pods = tuple(p.metadata.name for p in pool.pods(WEST))
    steady(pool)
    pool.wait_one_forger(not_in=west_pods)
    lagging_at = now()
    pool.set_tip_lag(EAST, UNHEALTHY_LAG_SLOTS)
    try:
        west = pool.wait_one_forger(not_in=east_pods)
        cfc = cfc_status(pool, EAST.name)
        assert cfc["healthStatus"]["healthy"] is False, cfc
    finally:
        pool.set_tip_lag(EAST, None)
    back = pool.wait_one_forger(not_in=west_pods)
    # The managers asked the health endpoint through its Service's DNS name, and it said 503.
    url = f"http://{EAST.fullname}-health.{EAST.name}.svc:8080/api/v1/health/cluster/east"
    assert any(url in m for t, m in manager_messages(pool, back) if t > time.time() - 600)
    answers = [
        line for p in health_pods(pool, EAST) for line in pool.logs(p, "health-endpoint")
        if "/api/v1/health/cluster/east" in line and "cardano-forge-manager" in line
    ]  # fmt: skip
    assert any('" 503 ' in line for line in answers), answers[-5:]
    took = pool.forging_started(west, lagging_at)[0]["t"] - lagging_at
    print(f"east unhealthy: {west} forged {took:.1f} s after east's nodes lagged")


def cfc_status(pool: PodPool, region: str) -> dict[str, Any]:
    with pool.node.control_plane.api_client() as api:
        obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
            "cardano.io", "v1", COORDINATION, "cardanoforgeclusters", region
        )
    status: dict[str, Any] = obj.get("status") or {}
    return status


def health_pods(pool: PodPool, region: Any) -> list[str]:
    with pool.core() as core:
        pods = core.list_namespaced_pod(
            region.name, label_selector="app.kubernetes.io/component=health-endpoint"
        ).items
    return [p.metadata.name for p in pods]


def test_helm_test_of_each_release_passes(pool: PodPool) -> None:
    steady(pool)
    with ThreadPoolExecutor(len(pool.regions)) as runner:  # both releases' tests at once
        results = runner.map(
            lambda r: pool.helm("test", r.name, "-n", r.name, "--timeout", "3m", check=False),
            pool.regions,
        )
    for region, result in zip(pool.regions, results, strict=True):
        if result.returncode != 0:
            logs = pool.node.kubectl(
                "logs", "-n", region.name, f"{region.fullname}-test", check=False
            )
            pytest.fail(f"helm test {region.name}: {result.stderr.strip()} {logs.stdout}")
        assert "Phase:          Succeeded" in result.stdout


def test_helm_upgrade_rolls_both_statefulsets_never_two_forgers(pool: PodPool) -> None:
    steady(pool)
    revisions = {}
    with pool.node.control_plane.api_client() as api:
        apps = client.AppsV1Api(api)
        for region in pool.regions:
            sts = apps.read_namespaced_stateful_set(region.fullname, region.name)
            revisions[region.name] = sts.status.update_revision
    started = now()
    for region in pool.regions:
        pool.upgrade(region, podAnnotations={"cardano-forge.test/roll": str(started)})
    wait_for("both StatefulSets to roll", lambda: rolled(pool, revisions), 300, 2.0)
    steady(pool)
    gap = longest_gap(pool.spans(), started, now())
    print(f"helm upgrade rolling both StatefulSets: longest time without a forger {gap:.1f} s")


def rolled(pool: PodPool, before: dict[str, str]) -> bool:
    with pool.node.control_plane.api_client() as api:
        apps = client.AppsV1Api(api)
        for region in pool.regions:
            status = apps.read_namespaced_stateful_set(region.fullname, region.name).status
            if status.update_revision == before[region.name]:
                return False
            if status.current_revision != status.update_revision:
                return False
            if (status.ready_replicas or 0) != pool.replicas:
                return False
    return True


def test_helm_uninstall_leaves_no_credentials_and_keeps_the_crd(pool: PodPool) -> None:
    steady(pool)
    uids = [p.metadata.uid for r in pool.regions for p in pool.pods(r)]
    for region in pool.regions:
        pool.helm("uninstall", region.name, "-n", region.name, "--wait", "--timeout", "3m")

    def pods_gone() -> bool:
        with pool.core() as core:
            return not any(core.list_namespaced_pod(r.name).items for r in pool.regions)

    wait_for("every pod of both releases to be gone", pods_gone, 120)
    # Memory volumes go with the pods: the kubelet unmounts them and removes the pod directories
    # in its housekeeping, a little after the API objects are gone.
    pod_dirs = pool.node.root / "kubelet/pods"

    def volumes_gone() -> bool:
        mounts = Path("/proc/mounts").read_text()
        return not [u for u in uids if (pod_dirs / u).exists() or u in mounts]

    wait_for("the kubelet to unmount and remove the pods' volumes", volumes_gone, 120)
    # No key material anywhere on disk (the chain database PVs are retained and searched too).
    assert pool.files_with_key_material() == []
    # crds.keep: the CRD stays, and with it the regions' resources.
    with pool.node.control_plane.api_client() as api:
        client.ApiextensionsV1Api(api).read_custom_resource_definition(CRD)
    assert cfc_status(pool, EAST.name) is not None
    assert cfc_status(pool, WEST.name) is not None
    assert "east" not in pool.helm("list", "-A").stdout
