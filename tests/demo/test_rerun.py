"""A second process-mode demo against a control plane kept by ``make cluster-up`` sets up again:
no 409 for the keys Secret, the releases upgraded in place, an earlier run's Leases and
CardanoForgeClusters removed (held by processes that are gone, they would delay the election)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from demo.__main__ import COORDINATION_NS, KEYS_SECRET, Demo, store_keys
from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import write_pool_secret


@pytest.fixture
def kept_cluster(tmp_path: Path) -> Iterator[ControlPlane]:
    """A control plane of its own: the demo's namespaces have fixed names."""
    cp = ControlPlane(root=tmp_path / "cluster")
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


def set_up(cp: ControlPlane, workdir: Path) -> tuple[Demo, dict[str, str]]:
    """What a demo run does to the API before it starts its processes; the keys it stored."""
    demo = Demo(workdir, live=False, stop=threading.Event())
    demo.cp = cp
    demo.health_url = "http://127.0.0.1:9"
    demo.clear_previous_run()
    demo.install()
    keys = write_pool_secret(workdir / "keys")
    with cp.api_client() as api:
        core = client.CoreV1Api(api)
        for region in demo.regions:
            store_keys(core, region.namespace, keys)
    return demo, {p.name: p.read_text() for p in keys.iterdir()}


def test_a_second_run_sets_up_again_on_the_kept_control_plane(
    kept_cluster: ControlPlane, tmp_path: Path
) -> None:
    first, _ = set_up(kept_cluster, tmp_path / "run1")
    # What the first run's processes leave behind: a held pool-wide Lease and a region's status.
    with kept_cluster.api_client() as api:
        client.CoordinationV1Api(api).create_namespaced_lease(
            COORDINATION_NS,
            client.V1Lease(
                metadata=client.V1ObjectMeta(name="cardano-forge-pool"),
                spec=client.V1LeaseSpec(holder_identity="east/gone-0", lease_duration_seconds=15),
            ),
        )
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "cardano.io", "v1", COORDINATION_NS, "cardanoforgeclusters",
            {"apiVersion": "cardano.io/v1", "kind": "CardanoForgeCluster",
             "metadata": {"name": "east"},
             "spec": {"region": "east", "forgeState": "Priority-based", "priority": 1}},
        )  # fmt: skip

    second, keys = set_up(kept_cluster, tmp_path / "run2")

    with kept_cluster.api_client() as api:
        core = client.CoreV1Api(api)
        for region in second.regions:
            stored = core.read_namespaced_secret(KEYS_SECRET, region.namespace).data
            assert {k: base64.b64decode(v).decode() for k, v in stored.items()} == keys
        leases = client.CoordinationV1Api(api).list_namespaced_lease(COORDINATION_NS).items
        assert leases == []
        found = client.CustomObjectsApi(api).list_namespaced_custom_object(
            "cardano.io", "v1", COORDINATION_NS, "cardanoforgeclusters"
        )["items"]
        assert found == []
    assert first.regions[0].namespace == second.regions[0].namespace
