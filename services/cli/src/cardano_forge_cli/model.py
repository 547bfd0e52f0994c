"""What the CLI knows about a pool, as plain immutable values parsed from API objects (no I/O).

API objects arrive as JSON-shaped dicts (camelCase keys, as ``kubectl get -o json`` shows them),
so everything here can be tested with literal dicts. A CardanoForgeCluster is parsed by the
forge manager's own :func:`forge_manager.cluster.model.parse_region`: the CLI reads a region the
way the managers do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from forge_manager.cluster.model import (
    Effective,
    RegionRecord,
    effective,
    holder_region,
    parse_region,
)
from prometheus_client.parser import text_string_to_metric_families

BLOCK_PRODUCER_SELECTOR = "app.kubernetes.io/component=block-producer"
"""The chart's label on the StatefulSet and pods of a region's block producers."""
MANAGER_CONTAINER = "forge-manager"
NODE_CONTAINER = "cardano-node"
NODE_METRICS_PORT_NAME = "node-metrics"
DEFAULT_METRICS_PORT = 8000
DEFAULT_LEASE_NAME = "cardano-node-leader"
DEFAULT_POOL_LEASE = "cardano-forge-pool"
HEARTBEAT_LABEL = "cardano.io/forge-pool"
REGION_ANNOTATION = "cardano.io/region"
RELEASED_BY = "cardano.io/released-by"
KES_METRICS = (
    "cardano_node_metrics_remainingKESPeriods_int",
    "cardano_node_metrics_remainingKESPeriods",
)


def parse_time(value: Any) -> datetime | None:
    """An API timestamp (RFC 3339, with or without fraction) as aware UTC; None if absent/bad."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# ---- Leases ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LeaseInfo:
    namespace: str
    name: str
    holder: str | None
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int
    duration: int | None
    resource_version: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> LeaseInfo:
        meta, spec = _dict(obj.get("metadata")), _dict(obj.get("spec"))
        transitions = spec.get("leaseTransitions")
        duration = spec.get("leaseDurationSeconds")
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            holder=str(spec.get("holderIdentity") or "") or None,
            acquire_time=parse_time(spec.get("acquireTime")),
            renew_time=parse_time(spec.get("renewTime")),
            transitions=transitions if isinstance(transitions, int) else 0,
            duration=duration if isinstance(duration, int) else None,
            resource_version=str(meta.get("resourceVersion") or ""),
            annotations={str(k): str(v) for k, v in _dict(meta.get("annotations")).items()},
            labels={str(k): str(v) for k, v in _dict(meta.get("labels")).items()},
        )

    @property
    def released_by(self) -> str | None:
        return None if self.holder else (self.annotations.get(RELEASED_BY) or None)

    def changed_at(self) -> datetime | None:
        """When the holder last changed: acquireTime when held, the release time when free."""
        return self.acquire_time if self.holder else self.renew_time


# ---- the pods of a region ----------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    """One block-producer pod: a Pod object, or one a StatefulSet should have (``exists``)."""

    namespace: str
    name: str
    release: str
    region: str
    """The region's CardanoForgeCluster name (``CLUSTER_CRD_NAME``, else ``CLUSTER_NAME``)."""
    cluster_management: bool
    lease_name: str
    pool_lease: str | None
    coordination_namespace: str | None
    remote_coordination: bool
    """``COORDINATION_KUBECONFIG`` is set: the regions meet in another API server."""
    metrics_port: int
    node_metrics_port: int | None
    service_account: str
    exists: bool
    pod_ip: str | None = None
    phase: str | None = None
    statefulset: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def lease_key(self) -> tuple[str, str]:
        return (self.namespace, self.lease_name)


def container_env(container: Mapping[str, Any], *, pod_name: str, namespace: str) -> dict[str, str]:
    """Literal values and the downward API's name/namespace; other sources are left out."""
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace}
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if not isinstance(item, dict) or "name" not in item:
            continue
        if "value" in item:
            env[str(item["name"])] = str(item.get("value") or "")
            continue
        ref = _dict(_dict(item.get("valueFrom")).get("fieldRef")).get("fieldPath")
        if ref in fields:
            env[str(item["name"])] = fields[str(ref)]
    return env


def _containers(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        c
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
        if isinstance(c, dict)
    ]


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def workload(
    pod_spec: Mapping[str, Any],
    *,
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    exists: bool,
    pod_ip: str | None = None,
    phase: str | None = None,
    statefulset: str | None = None,
) -> Workload | None:
    """The pod as the CLI needs it, from its spec; None when it has no forge-manager container."""
    containers = _containers(pod_spec)
    manager = next((c for c in containers if c.get("name") == MANAGER_CONTAINER), None)
    if manager is None:
        return None
    env = container_env(manager, pod_name=name, namespace=namespace)
    node = next((c for c in containers if c.get("name") == NODE_CONTAINER), None)
    node_port = None
    for port in (node or {}).get("ports") or []:
        if isinstance(port, dict) and port.get("name") == NODE_METRICS_PORT_NAME:
            node_port = (
                port.get("containerPort") if isinstance(port.get("containerPort"), int) else None
            )
    try:
        metrics_port = int(env.get("METRICS_PORT") or DEFAULT_METRICS_PORT)
    except ValueError:
        metrics_port = DEFAULT_METRICS_PORT
    cluster = _truthy(env.get("ENABLE_CLUSTER_MANAGEMENT", ""))
    cluster_name = env.get("CLUSTER_NAME") or namespace
    return Workload(
        namespace=namespace,
        name=name,
        release=str(labels.get("app.kubernetes.io/instance") or ""),
        region=env.get("CLUSTER_CRD_NAME") or cluster_name,
        cluster_management=cluster,
        lease_name=env.get("LEASE_NAME") or DEFAULT_LEASE_NAME,
        pool_lease=(env.get("POOL_LEASE_NAME") or DEFAULT_POOL_LEASE) if cluster else None,
        coordination_namespace=(env.get("COORDINATION_NAMESPACE") or namespace)
        if cluster
        else None,
        remote_coordination=cluster and bool(env.get("COORDINATION_KUBECONFIG")),
        metrics_port=metrics_port,
        node_metrics_port=node_port,
        service_account=str(pod_spec.get("serviceAccountName") or "default"),
        exists=exists,
        pod_ip=pod_ip,
        phase=phase,
        statefulset=statefulset,
        env=env,
    )


def workload_from_pod(pod: Mapping[str, Any]) -> Workload | None:
    meta, status = _dict(pod.get("metadata")), _dict(pod.get("status"))
    owner = next(
        (
            o.get("name")
            for o in meta.get("ownerReferences") or []
            if isinstance(o, dict) and o.get("kind") == "StatefulSet"
        ),
        None,
    )
    return workload(
        _dict(pod.get("spec")),
        name=str(meta.get("name") or ""),
        namespace=str(meta.get("namespace") or ""),
        labels=_dict(meta.get("labels")),
        exists=True,
        pod_ip=str(status.get("podIP") or "") or None,
        phase=str(status.get("phase") or "") or None,
        statefulset=str(owner) if owner else None,
    )


def workloads_from_statefulset(sts: Mapping[str, Any]) -> list[Workload]:
    """The pods a StatefulSet asks for (``<name>-<ordinal>``), as not (yet) existing."""
    meta, spec = _dict(sts.get("metadata")), _dict(sts.get("spec"))
    template = _dict(spec.get("template"))
    replicas = spec.get("replicas")
    count = replicas if isinstance(replicas, int) else 1
    out = []
    for ordinal in range(max(count, 0)):
        w = workload(
            _dict(template.get("spec")),
            name=f"{meta.get('name')}-{ordinal}",
            namespace=str(meta.get("namespace") or ""),
            labels=_dict(_dict(template.get("metadata")).get("labels"))
            or _dict(meta.get("labels")),
            exists=False,
            statefulset=str(meta.get("name") or ""),
        )
        if w is not None:
            out.append(w)
    return out


# ---- per-pod facts from the forge manager's and the node's /metrics ---------------------------
@dataclass(frozen=True)
class PodFacts:
    """What a pod's forge manager (and node) report; None fields are unknown."""

    reachable: bool
    error: str | None = None
    leader: bool | None = None
    forging: bool | None = None
    credentials_present: bool | None = None
    sources_ok: bool | None = None
    node_up: bool | None = None
    synced: bool | None = None
    forging_since: float | None = None
    """Unix time the pod last started forging (its manager's clock); None when not forging."""
    version: str | None = None
    kes_left: int | None = None

    @classmethod
    def unknown(cls, why: str) -> PodFacts:
        return cls(reachable=False, error=why)


def metric_samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``name -> [(labels, value)]`` of a Prometheus text exposition (sample names as written)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def _flag(samples: Mapping[str, list[tuple[dict[str, str], float]]], name: str) -> bool | None:
    found = samples.get(name)
    return None if not found else found[0][1] == 1.0


def facts_from_metrics(manager_text: str, node_text: str | None = None) -> PodFacts:
    """Facts from the forge manager's exposition (and the node's, for the KES periods left)."""
    s = metric_samples(manager_text)
    since = s.get("cardano_forging_since_timestamp_seconds")
    info = s.get("cardano_forge_manager_info")
    kes: int | None = None
    if node_text:
        node = metric_samples(node_text)
        for name in KES_METRICS:
            if node.get(name):
                kes = int(node[name][0][1])
                break
    return PodFacts(
        reachable=True,
        leader=_flag(s, "cardano_leader_status"),
        forging=_flag(s, "cardano_forging_enabled"),
        credentials_present=_flag(s, "cardano_forge_credentials_present"),
        sources_ok=_flag(s, "cardano_forge_source_credentials_ok"),
        node_up=_flag(s, "cardano_node_socket_up"),
        synced=_flag(s, "cardano_node_synced"),
        forging_since=since[0][1] if since and since[0][1] > 0 else None,
        version=info[0][0].get("version") if info else None,
        kes_left=kes,
    )


# ---- regions ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegionView:
    """One CardanoForgeCluster and its heartbeat Lease."""

    obj: Mapping[str, Any]
    heartbeat: LeaseInfo | None = None

    @property
    def record(self) -> RegionRecord:
        return parse_region(self.obj)

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def resource_version(self) -> str:
        return self.record.resource_version

    @property
    def status(self) -> dict[str, Any]:
        return _dict(self.obj.get("status"))

    @property
    def spec(self) -> dict[str, Any]:
        return _dict(self.obj.get("spec"))

    def effective(self, now: datetime) -> Effective | None:
        """As the region's local leader computes it (None when the spec does not parse)."""
        rec = self.record
        if rec.spec is None:
            return None
        demoted = rec.status.demoted if rec.status is not None else False
        return effective(rec.spec, demoted=demoted, now_wall=now)

    def override(self) -> dict[str, Any] | None:
        ov = self.spec.get("override")
        return ov if isinstance(ov, dict) else None

    def override_active(self, now: datetime) -> bool:
        rec = self.record
        ov = rec.spec.override if rec.spec is not None else None
        return ov is not None and ov.active(now)

    @property
    def failure_threshold(self) -> int | None:
        rec = self.record
        hc = rec.spec.health_check if rec.spec is not None else None
        return hc.failure_threshold if hc is not None and hc.enabled else None

    @property
    def health_enabled(self) -> bool:
        return self.failure_threshold is not None

    def forging_condition(self) -> dict[str, Any] | None:
        for cond in self.status.get("conditions") or []:
            if isinstance(cond, dict) and cond.get("type") == "Forging":
                return cond
        return None


# ---- a pool -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolView:
    """One pool: its pool-wide Lease and regions (cluster mode), or one local Lease."""

    name: str
    """The pool-wide Lease's name; for a pool without cluster management, the local Lease's."""
    cluster: bool
    namespace: str
    """Where ``lease`` lives: the coordination namespace, or the pods' namespace."""
    lease: LeaseInfo | None
    regions: tuple[RegionView, ...] = ()
    pods: tuple[Workload, ...] = ()
    local_leases: Mapping[tuple[str, str], LeaseInfo | None] = field(default_factory=dict)
    facts: Mapping[tuple[str, str], PodFacts] = field(default_factory=dict)
    unread: str | None = None
    """Why the pool-wide Lease and the regions were not read (None: they were)."""

    def region(self, name: str) -> RegionView | None:
        return next((r for r in self.regions if r.name == name), None)

    @property
    def holder_region(self) -> str | None:
        if not self.cluster or self.lease is None:
            return None
        return holder_region(self.lease.holder)

    @property
    def holder_pod(self) -> str | None:
        if self.lease is None or not self.lease.holder:
            return None
        if not self.cluster:
            return self.lease.holder
        return self.lease.holder.split("/", 1)[1] if "/" in self.lease.holder else None

    def pods_of(self, region: str) -> list[Workload]:
        return [p for p in self.pods if p.region == region]

    def local_leader(self, pod: Workload) -> bool | None:
        """Whether the pod holds its local Lease (None when the Lease could not be read)."""
        if pod.lease_key not in self.local_leases:
            return None
        lease = self.local_leases[pod.lease_key]
        return lease is not None and lease.holder == pod.name

    def fact(self, pod: Workload) -> PodFacts:
        return self.facts.get(pod.key) or PodFacts.unknown("not read")


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    pools: tuple[PoolView, ...]
    warnings: tuple[str, ...] = ()
