"""Literal API objects (as ``kubectl get -o json`` shows them) for the unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cardano_forge_cli.model import (
    LeaseInfo,
    PodFacts,
    PoolView,
    RegionView,
    Workload,
    format_time,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NS = "cardano-pool"
POOL = "cardano-forge-pool"


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def later(seconds: float) -> str:
    return format_time(NOW + timedelta(seconds=seconds)) or ""


def cfc(
    name: str,
    priority: int,
    *,
    state: str = "Priority-based",
    override: dict[str, Any] | None = None,
    leader: str | None = None,
    forging: bool = False,
    effective_state: str | None = None,
    effective_priority: int | None = None,
    healthy: bool = True,
    failures: int = 0,
    demoted: bool = False,
    generation: int = 1,
    observed: int | None = None,
    status: bool = True,
    health_check: bool = True,
    rv: str = "100",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"region": name, "priority": priority, "forgeState": state}
    if health_check:
        spec["healthCheck"] = {
            "enabled": True,
            "endpoint": "http://h/health",
            "interval": "30s",
            "timeout": "10s",
            "failureThreshold": 3,
        }
    if override is not None:
        spec["override"] = override
    obj: dict[str, Any] = {
        "apiVersion": "cardano.io/v1",
        "kind": "CardanoForgeCluster",
        "metadata": {
            "name": name,
            "namespace": NS,
            "generation": generation,
            "resourceVersion": rv,
        },
        "spec": spec,
    }
    if status:
        obj["status"] = {
            "effectiveState": effective_state or state,
            "effectivePriority": effective_priority if effective_priority is not None else priority,
            "activeLeader": leader if leader is not None else f"{name}-0",
            "forgingEnabled": forging,
            "healthStatus": {"healthy": healthy, "consecutiveFailures": failures},
            "healthDemoted": demoted,
            "observedGeneration": generation if observed is None else observed,
            "conditions": [
                {
                    "type": "Forging",
                    "status": "True" if forging else "False",
                    "reason": "Holding" if forging else "StandingBy",
                    "message": "holding the pool lease" if forging else "standing by",
                    "lastTransitionTime": format_time(NOW - timedelta(minutes=5)),
                }
            ],
        }
    return obj


def lease(
    name: str,
    holder: str | None,
    *,
    namespace: str = NS,
    acquired: float = 60.0,
    renewed: float = 1.0,
    transitions: int = 3,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    rv: str = "7",
) -> LeaseInfo:
    return LeaseInfo.from_api(
        {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "resourceVersion": rv,
                "annotations": annotations or {},
                "labels": labels or {},
            },
            "spec": {
                "holderIdentity": holder,
                "acquireTime": ago(acquired),
                "renewTime": ago(renewed),
                "leaseTransitions": transitions,
                "leaseDurationSeconds": 15,
            },
        }
    )


def heartbeat(region: str, *, renewed: float = 1.0) -> LeaseInfo:
    return lease(
        f"{POOL}-{region}",
        f"{region}-0",
        renewed=renewed,
        labels={"cardano.io/forge-pool": POOL},
        annotations={"cardano.io/region": region},
    )


def region(obj: dict[str, Any], *, renewed: float | None = 1.0) -> RegionView:
    name = obj["metadata"]["name"]
    return RegionView(obj, heartbeat(name, renewed=renewed) if renewed is not None else None)


def pod(
    name: str,
    region_name: str,
    *,
    namespace: str = "bp",
    exists: bool = True,
    cluster: bool = True,
    lease_name: str | None = None,
) -> Workload:
    return Workload(
        namespace=namespace,
        name=name,
        release=region_name,
        region=region_name,
        cluster_management=cluster,
        lease_name=lease_name or f"{region_name}-leader",
        pool_lease=POOL if cluster else None,
        coordination_namespace=NS if cluster else None,
        remote_coordination=False,
        metrics_port=8000,
        node_metrics_port=12798,
        service_account="bp",
        exists=exists,
        pod_ip="10.0.0.1" if exists else None,
        phase="Running" if exists else None,
    )


def facts(**values: Any) -> PodFacts:
    base: dict[str, Any] = dict(
        reachable=True,
        leader=False,
        forging=False,
        credentials_present=False,
        sources_ok=True,
        node_up=True,
    )
    base.update(values)
    return PodFacts(**base)


def two_regions(
    *,
    east: dict[str, Any] | None = None,
    west: dict[str, Any] | None = None,
    holder: str | None = "east/east-0",
) -> PoolView:
    e = east or cfc("east", 1, forging=holder == "east/east-0")
    w = west or cfc("west", 2)
    return PoolView(
        POOL,
        True,
        NS,
        lease(POOL, holder),
        (region(e), region(w)),
        (pod("east-0", "east"), pod("east-1", "east"), pod("west-0", "west")),
    )
