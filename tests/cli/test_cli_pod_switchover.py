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

from tests.cli.cli_run import one_line_error
from tests.cli.live_regions import (
    CHART_CLUSTER_TIMING,
    CHART_TIMING,
    cf,
    hand_over,
    live_regions,
    wait_one_forger,
)
from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import ForgePod, wait_for
from tests.harness.forging_log import overlaps, summary
from tests.harness.node_standin import now
from tests.harness.regions import Regions

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

WAIT = 180.0


@pytest.fixture(scope="module")
def regions(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Regions]:
    with live_regions(
        control_plane,
        f"podsw-{os.urandom(4).hex()}",
        tmp_path_factory.mktemp("pod-switchover"),
        {"east": 1},
        timing=CHART_TIMING,
        cluster_timing=CHART_CLUSTER_TIMING,
    ) as r:
        wait_forger(r)
        yield r


def wait_forger(r: Regions) -> ForgePod:
    return wait_one_forger(r, WAIT)


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
    stop, start = hand_over(r, old, new, started)
    assert start > stop, summary(r.spans())
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
