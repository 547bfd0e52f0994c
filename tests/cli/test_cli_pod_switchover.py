"""``cardano-forge switchover --to-pod`` against real forge managers, and their Events.

One region of two pods (forge manager + cardano-node stand-in under forge-guard, as local
processes with Pod objects reached through the API server's pod proxy) with cluster management on
and the chart's default timings (lease 15/10/2, request timeout 1 s: the faster test timings flap
on a loaded shared machine). Forging moves to the other pod and back; the stand-ins' own logs
show that no two nodes ever forged and how long none did; the forge managers' Events of every step
are on the pods and the region, and ``history`` shows them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.cli.cli_run import Run, cardano_forge, one_line_error
from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import ForgePod, wait_for
from tests.harness.forging_log import overlaps, summary
from tests.harness.node_standin import now
from tests.harness.pod_objects import host_address, register
from tests.harness.regions import Regions, create_namespace, install_crd

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

WAIT = 180.0
START_TIMEOUT = 300.0
ADDRESS = host_address()
TIMING = {
    "LEASE_DURATION": "15",
    "LEASE_RENEW_DEADLINE": "10",
    "LEASE_RETRY_PERIOD": "2",
    "KUBE_REQUEST_TIMEOUT": "1",
}
CLUSTER_TIMING = {
    "HEALTH_CHECK_INTERVAL": "2",
    "HEALTH_CHECK_TIMEOUT": "1",
    "HEALTH_CHECK_FAILURE_THRESHOLD": "3",
    "CLUSTER_HEARTBEAT_INTERVAL": "5",
    "CLUSTER_STALE_AFTER": "12",
}


@pytest.fixture(scope="module")
def regions(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Regions]:
    if ADDRESS is None:
        pytest.skip("this host has no non-loopback IPv4 address for the API server's pod proxy")
    install_crd(control_plane)
    namespace = f"podsw-{os.urandom(4).hex()}"
    create_namespace(control_plane, namespace)
    r = Regions(
        control_plane,
        namespace,
        tmp_path_factory.mktemp("pod-switchover"),
        {"east": 1},
        via_proxy=False,
        timing=TIMING,
        cluster_timing=CLUSTER_TIMING,
        extra_env={"METRICS_BIND_ADDRESS": ADDRESS},
    )
    try:
        r.start(timeout=START_TIMEOUT)
        register(control_plane, namespace, r.all_pods, address=ADDRESS)
        wait_forger(r)
        yield r
    finally:
        r.stop()
        found = overlaps(r.spans(), until=now())
        assert not found, f"two nodes forged at once: {found}\n{summary(r.spans())}"


def wait_forger(r: Regions) -> ForgePod:
    def check() -> bool:
        return len(r.forgers()) == 1

    try:
        wait_for(check, WAIT, "exactly one forging node")
    except AssertionError:
        raise AssertionError(r.diagnose()) from None
    return r.forgers()[0]


def cf(r: Regions, *args: str, timeout: float = 240.0) -> Run:
    return cardano_forge(*args, kubeconfig=r.cp.kubeconfig, namespace=r.namespace, timeout=timeout)


def manager_events(r: Regions) -> list[dict[str, Any]]:
    with r.cp.api_client() as api:
        items = client.CoreV1Api(api).list_namespaced_event(r.namespace).items
        return [
            api.sanitize_for_serialization(e)
            for e in items
            if (e.reporting_component or "") == "cardano-forge-manager"
        ]


def _pod_switchover(r: Regions, old: ForgePod, new: ForgePod) -> float:
    """``switchover --to-pod`` from ``old`` (forging) to ``new``; returns the gap with no forger
    from the stand-ins' own logs."""
    started = now()
    run = cf(r, "switchover", "--to-pod", new.name, "--yes", "--timeout", "120s")
    assert run.code == 0, run
    wait_for(lambda: r.forgers() == [new], WAIT, f"{new.name} to forge")
    assert f"forging moved from {old.name} to {new.name}" in run.out, run
    with r.cp.api_client() as api:
        lease = client.CoordinationV1Api(api).read_namespaced_lease("east-leader", r.namespace)
    annotations = lease.metadata.annotations or {}
    assert lease.spec.holder_identity == new.name
    assert "cardano.io/switchover-request" not in annotations, annotations
    assert "cardano.io/preferred-holder" not in annotations, annotations
    assert json.loads(annotations["cardano.io/switchover-result"])["outcome"] == "done"
    spans = [s for s in r.spans() if s.end is None or s.end >= started]
    stop = next(s.end for s in spans if s.node.startswith(old.node_name + "/") and s.end)
    start = next(s.start for s in spans if s.node.startswith(new.node_name + "/"))
    assert start > stop, summary(spans)
    print(
        f"pod switchover {old.name} -> {new.name}: command {run.seconds:.1f} s, "
        f"gap {(start - stop) * 1000:.0f} ms (stand-ins)"
    )
    return start - stop


def test_pod_switchover_moves_forging_to_the_named_pod_and_back(regions: Regions) -> None:
    r = regions
    forger = wait_forger(r)
    other = next(p for p in r.pods["east"] if p is not forger)
    wait_for(lambda: other.metric("cardano_node_synced") == 1, WAIT, f"{other.name} synced")
    _pod_switchover(r, forger, other)
    wait_for(lambda: forger.metric("cardano_node_synced") == 1, WAIT, f"{forger.name} synced")
    _pod_switchover(r, other, forger)
    assert not overlaps(r.spans(), until=now())

    error = one_line_error(cf(r, "switchover", "--to-pod", "east-7", "--yes"))
    assert "unknown pod 'east-7': the block-producer pods are" in error
    run = cf(r, "switchover", "--to-pod", forger.name, "--yes")
    assert run.code == 0 and f"pod {forger.name} already leads its region" in run.out

    # Kubernetes Events of every step, on the pods and on the region; history shows them.
    def seen() -> set[tuple[str, str]]:
        return {(e["involvedObject"]["name"], e["reason"]) for e in manager_events(r)}

    wanted = {
        (other.name, "SwitchoverReady"),
        (forger.name, "HandedOver"),
        (other.name, "LeaderElected"),
        (other.name, "ForgingEnabled"),
        (forger.name, "ForgingDisabled"),
        (forger.name, "LeadershipLost"),
        (other.name, "HandedOver"),
        ("east", "AcquiredPoolLease"),
    }
    wait_for(lambda: wanted <= seen(), WAIT, f"Events {sorted(wanted - seen())}")
    handed = next(e for e in manager_events(r) if e["reason"] == "HandedOver")
    assert handed["involvedObject"]["kind"] == "Pod" and handed["type"] == "Normal"
    assert handed["message"].startswith("handed the lease over to ")
    history = cf(r, "history")
    assert history.code == 0, history
    assert "HandedOver" in history.out and "LeaderElected" in history.out, history.out
