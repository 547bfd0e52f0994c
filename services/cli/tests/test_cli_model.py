"""Parsing API objects and /metrics into the CLI's model."""

from __future__ import annotations

from typing import Any

from cardano_forge_cli.model import (
    LeaseInfo,
    facts_from_metrics,
    workload_from_pod,
    workloads_from_statefulset,
)
from cli_builders import NOW, cfc, region
from forge_manager.metrics import ForgeMetrics, StateSample
from prometheus_client import CollectorRegistry, generate_latest

MANAGER_ENV = [
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    {"name": "LEASE_NAME", "value": "bp-leader"},
    {"name": "METRICS_PORT", "value": "8000"},
    {"name": "CLUSTER_NAME", "value": "us-east-1"},
    {"name": "ENABLE_CLUSTER_MANAGEMENT", "value": "true"},
    {"name": "COORDINATION_NAMESPACE", "value": "cardano-pool"},
    {"name": "POOL_LEASE_NAME", "value": "pool-a"},
    {"name": "SECRET_THING", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
]


def pod_spec(env: list[dict[str, Any]] = MANAGER_ENV) -> dict[str, Any]:
    return {
        "serviceAccountName": "bp-sa",
        "initContainers": [{"name": "forge-manager", "env": env, "restartPolicy": "Always"}],
        "containers": [
            {
                "name": "cardano-node",
                "ports": [
                    {"name": "node", "containerPort": 3001},
                    {"name": "node-metrics", "containerPort": 12798},
                ],
            }
        ],
    }


def test_a_pod_object_becomes_a_workload_with_its_managers_settings() -> None:
    w = workload_from_pod(
        {
            "metadata": {
                "name": "bp-1",
                "namespace": "east",
                "labels": {"app.kubernetes.io/instance": "east-release"},
                "ownerReferences": [{"kind": "StatefulSet", "name": "bp"}],
            },
            "spec": pod_spec(),
            "status": {"podIP": "10.1.2.3", "phase": "Running"},
        }
    )
    assert w is not None
    assert (w.namespace, w.name, w.release, w.region) == (
        "east",
        "bp-1",
        "east-release",
        "us-east-1",
    )
    assert (w.lease_name, w.pool_lease, w.coordination_namespace) == (
        "bp-leader",
        "pool-a",
        "cardano-pool",
    )
    assert (w.metrics_port, w.node_metrics_port, w.service_account) == (8000, 12798, "bp-sa")
    assert (w.exists, w.pod_ip, w.phase, w.statefulset) == (True, "10.1.2.3", "Running", "bp")
    assert w.env["POD_NAME"] == "bp-1" and w.env["NAMESPACE"] == "east"
    assert "SECRET_THING" not in w.env  # only literal values and the downward API's name/namespace
    assert w.cluster_management and not w.remote_coordination


def test_cluster_crd_name_names_the_region_and_defaults_apply() -> None:
    env = [{"name": "CLUSTER_NAME", "value": "r"}, {"name": "CLUSTER_CRD_NAME", "value": "r-cfc"}]
    w = workload_from_pod({"metadata": {"name": "p", "namespace": "n"}, "spec": pod_spec(env)})
    assert w is not None
    assert (w.region, w.lease_name, w.pool_lease, w.cluster_management) == (
        "r-cfc",
        "cardano-node-leader",
        None,
        False,
    )
    assert (w.pod_ip, w.phase, w.metrics_port) == (None, None, 8000)


def test_a_pod_without_a_forge_manager_is_not_a_block_producer() -> None:
    assert (
        workload_from_pod(
            {
                "metadata": {"name": "x", "namespace": "n"},
                "spec": {"containers": [{"name": "other"}]},
            }
        )
        is None
    )


def test_a_statefulset_without_pods_gives_its_expected_pods() -> None:
    sts = {
        "metadata": {"name": "bp", "namespace": "east"},
        "spec": {"replicas": 3, "template": {"metadata": {"labels": {}}, "spec": pod_spec()}},
    }
    pods = workloads_from_statefulset(sts)
    assert [p.name for p in pods] == ["bp-0", "bp-1", "bp-2"]
    assert all(not p.exists and p.statefulset == "bp" for p in pods)
    assert pods[2].env["POD_NAME"] == "bp-2"


def manager_exposition(**state: Any) -> str:
    registry = CollectorRegistry()
    sample = StateSample(
        **{
            "leader": True,
            "forging": True,
            "credentials_present": True,
            "sources_ok": True,
            "node_socket_up": True,
            "node_flag_missing": False,
            "seconds_since_cycle": 0.3,
            "forging_since": 1767225600.5,
            **state,
        }
    )
    ForgeMetrics(registry, pod="bp-0", cluster="east", sample=lambda: sample)
    return generate_latest(registry).decode()


def test_facts_from_the_forge_managers_own_exposition() -> None:
    f = facts_from_metrics(manager_exposition())
    assert (f.reachable, f.leader, f.forging, f.credentials_present, f.sources_ok, f.node_up) == (
        True,
        True,
        True,
        True,
        True,
        True,
    )
    assert f.forging_since == 1767225600.5
    assert f.version  # cardano_forge_manager_info{version=...}
    assert f.synced is None and f.kes_left is None  # not exported by this manager: unknown


def test_facts_of_a_standby_and_the_node_metrics() -> None:
    node = "cardano_node_metrics_remainingKESPeriods_int 41\ncardano_node_metrics_slotNum_int 9\n"
    f = facts_from_metrics(
        manager_exposition(
            leader=False, forging=False, credentials_present=False, forging_since=0.0
        )
        + 'cardano_node_synced{pod="bp-0",cluster="east"} 1\n',
        node,
    )
    assert (f.leader, f.forging, f.credentials_present, f.forging_since) == (
        False,
        False,
        False,
        None,
    )
    assert (f.synced, f.kes_left) == (True, 41)
    assert facts_from_metrics("", "cardano_node_metrics_remainingKESPeriods 7\n").kes_left == 7


def test_lease_records() -> None:
    held = LeaseInfo.from_api(
        {
            "metadata": {"name": "l", "namespace": "n", "resourceVersion": "5"},
            "spec": {
                "holderIdentity": "east/bp-0",
                "acquireTime": "2026-03-01T11:59:00.000000Z",
                "renewTime": "2026-03-01T12:00:00+00:00",
                "leaseTransitions": 4,
            },
        }
    )
    assert held.holder == "east/bp-0" and held.transitions == 4
    assert held.changed_at() == held.acquire_time and held.released_by is None
    free = LeaseInfo.from_api(
        {
            "metadata": {"name": "l", "annotations": {"cardano.io/released-by": "east/bp-0"}},
            "spec": {"renewTime": "2026-03-01T12:00:00Z"},
        }
    )
    assert free.holder is None and free.released_by == "east/bp-0"
    assert free.changed_at() == free.renew_time


def test_a_region_is_read_as_the_managers_read_it() -> None:
    r = region(
        cfc(
            "east",
            3,
            override={
                "forgeState": "Disabled",
                "reason": "kernel",
                "expiresAt": "2026-03-01T14:00:00Z",
            },
        )
    )
    eff = r.effective(NOW)
    assert eff is not None and eff.state.value == "Disabled"
    assert "override 'kernel' until 2026-03-01T14:00:00Z" in eff.source
    assert r.override_active(NOW) and r.failure_threshold == 3
    bad = region(cfc("bad", 1))
    bad_obj = dict(bad.obj)
    bad_obj["spec"] = {"region": "bad"}
    assert region(bad_obj).record.spec is None
