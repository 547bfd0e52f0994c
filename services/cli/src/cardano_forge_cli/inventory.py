"""Reading a pool's state from the API servers into a :class:`~cardano_forge_cli.model.Snapshot`.

Where things are found:

* the block-producer pods: Pods labelled ``app.kubernetes.io/component=block-producer`` (the
  chart's label), and the pods their StatefulSets ask for when no Pod object exists yet (a test
  bed without kubelets); each pod's forge-manager container environment says its region, local
  Lease, pool-wide Lease, coordination namespace and metrics port;
* the regions: the CardanoForgeClusters of each coordination namespace, in the coordination API
  (``--coordination-kubeconfig`` when the regions meet in another API server); a region belongs to
  the pool whose heartbeat Lease names it (label ``cardano.io/forge-pool``);
* per-pod facts: the forge manager's ``/metrics`` (and the node's, for the KES periods left)
  through the API server's pod proxy, each read bounded; unknown when that fails.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cardano_forge_cli.errors import CliError
from cardano_forge_cli.kube import Kube, NotFound, core_path, group_path, lease_path, region_path
from cardano_forge_cli.model import (
    BLOCK_PRODUCER_SELECTOR,
    DEFAULT_POOL_LEASE,
    HEARTBEAT_LABEL,
    REGION_ANNOTATION,
    LeaseInfo,
    PodFacts,
    PoolView,
    RegionView,
    Snapshot,
    Workload,
    facts_from_metrics,
    workload_from_pod,
    workloads_from_statefulset,
)

FACTS_WORKERS = 8


@dataclass(frozen=True)
class Scope:
    namespace: str | None
    """None: every namespace (``-A``)."""
    release: str | None = None
    pool: str | None = None
    coordination_namespace: str | None = None
    with_facts: bool = True
    facts_timeout: float = 2.0


def _selector(release: str | None) -> str:
    if release:
        return f"{BLOCK_PRODUCER_SELECTOR},app.kubernetes.io/instance={release}"
    return BLOCK_PRODUCER_SELECTOR


def list_workloads(kube: Kube, scope: Scope, warnings: list[str]) -> list[Workload]:
    selector = _selector(scope.release)
    where = f"namespace {scope.namespace}" if scope.namespace else "all namespaces"
    pods: list[dict[str, Any]] = []
    sets: list[dict[str, Any]] = []
    errors: list[str] = []
    ns = scope.namespace
    try:
        pods = kube.items(f"list pods in {where}", core_path(ns, "pods"), labelSelector=selector)
    except NotFound:
        pass
    except CliError as exc:
        errors.append(exc.message)
    try:
        sets = kube.items(
            f"list statefulsets in {where}",
            group_path("apps/v1", ns, "statefulsets"),
            labelSelector=selector,
        )
    except NotFound:
        pass
    except CliError as exc:
        errors.append(exc.message)
    if len(errors) == 2:
        raise CliError(errors[0])
    warnings.extend(errors)
    found: dict[tuple[str, str], Workload] = {}
    for sts in sets:
        for w in workloads_from_statefulset(sts):
            found[w.key] = w
    for pod in pods:
        from_pod = workload_from_pod(pod)
        if from_pod is not None:
            found[from_pod.key] = from_pod
    return sorted(found.values(), key=lambda w: (w.region, w.namespace, w.name))


def read_lease(kube: Kube, namespace: str, name: str) -> LeaseInfo | None:
    try:
        obj = kube.get(f"read Lease {name} in namespace {namespace}", lease_path(namespace, name))
    except NotFound:
        return None
    return LeaseInfo.from_api(obj)


def list_regions(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    """The CardanoForgeClusters of a namespace; NotFound when the CRD is not installed."""
    return kube.items(f"list CardanoForgeClusters in namespace {namespace}", region_path(namespace))


def list_leases(kube: Kube, namespace: str) -> list[LeaseInfo]:
    found = kube.items(f"list Leases in namespace {namespace}", lease_path(namespace))
    return [LeaseInfo.from_api(i) for i in found]


def read_facts(kube: Kube, pod: Workload, timeout: float) -> PodFacts:
    if not pod.exists:
        return PodFacts.unknown("no Pod object")
    if not pod.pod_ip:
        return PodFacts.unknown("pod has no IP")
    try:
        text = kube.pod_proxy_get(pod.namespace, pod.name, pod.metrics_port, "metrics", timeout)
    except CliError as exc:
        return PodFacts.unknown(exc.message)
    node_text = None
    if pod.node_metrics_port:
        try:
            node_text = kube.pod_proxy_get(
                pod.namespace, pod.name, pod.node_metrics_port, "metrics", timeout
            )
        except CliError:
            node_text = None
    try:
        return facts_from_metrics(text, node_text)
    except ValueError as exc:
        return PodFacts.unknown(f"unparsable /metrics: {exc}")


def read_all_facts(
    kube: Kube, pods: Iterable[Workload], timeout: float
) -> dict[tuple[str, str], PodFacts]:
    pods = list(pods)
    if not pods:
        return {}
    with ThreadPoolExecutor(max_workers=min(FACTS_WORKERS, len(pods))) as pool:
        results = list(pool.map(lambda p: read_facts(kube, p, timeout), pods))
    return {p.key: f for p, f in zip(pods, results, strict=True)}


def collect(kube: Kube, coordination: Kube | None, scope: Scope) -> Snapshot:
    """Everything ``status`` shows, read once. ``coordination``: the shared API server of the
    regions when it is not ``kube``'s."""
    warnings: list[str] = []
    workloads = list_workloads(kube, scope, warnings)
    coord = coordination or kube
    remote = [w for w in workloads if w.remote_coordination]
    if remote and coordination is None:
        names = ", ".join(sorted({w.region for w in remote}))
        warnings.append(
            f"region(s) {names} meet in another API server (COORDINATION_KUBECONFIG): pass "
            "--coordination-kubeconfig (and --coordination-context) to read their regions"
        )
    cluster_pods = [
        w for w in workloads if w.cluster_management and (coordination or not w.remote_coordination)
    ]

    # ---- coordination namespaces and their pools ------------------------------------------------
    namespaces = {w.coordination_namespace for w in cluster_pods if w.coordination_namespace}
    if scope.coordination_namespace:
        namespaces.add(scope.coordination_namespace)
    if not workloads and scope.namespace:
        namespaces.add(scope.namespace)  # pointed at the coordination namespace itself
    pools: list[PoolView] = []
    for ns in sorted(namespaces):
        try:
            cfcs = list_regions(coord, ns)
        except NotFound:
            if any(w.coordination_namespace == ns for w in cluster_pods):
                warnings.append(
                    "the CardanoForgeCluster CRD is not installed in the coordination API "
                    "(kubectl apply -f crds/cardanoforgeclusters.cardano.io.yaml)"
                )
            cfcs = []
        leases = list_leases(coord, ns)
        by_name = {lease.name: lease for lease in leases}
        pool_names = {
            lease.labels[HEARTBEAT_LABEL] for lease in leases if HEARTBEAT_LABEL in lease.labels
        }
        pool_names |= {
            w.pool_lease for w in cluster_pods if w.coordination_namespace == ns and w.pool_lease
        }
        if cfcs and not pool_names:
            pool_names.add(DEFAULT_POOL_LEASE)
        owner: dict[str, str] = {}
        for lease in leases:
            pool_of = lease.labels.get(HEARTBEAT_LABEL)
            region = lease.annotations.get(REGION_ANNOTATION)
            if pool_of and region and lease.name == f"{pool_of}-{region}":
                owner[region] = pool_of
        for w in cluster_pods:
            if w.coordination_namespace == ns and w.pool_lease:
                owner.setdefault(w.region, w.pool_lease)
        unassigned = [c for c in cfcs if str(c.get("metadata", {}).get("name")) not in owner]
        if unassigned and len(pool_names) > 1:
            names = ", ".join(str(c["metadata"]["name"]) for c in unassigned)
            warnings.append(
                f"region(s) {names} in namespace {ns} belong to no pool yet (no heartbeat)"
            )
        for pool_name in sorted(pool_names):
            if scope.pool and pool_name != scope.pool:
                continue
            members = [
                c
                for c in cfcs
                if owner.get(str(c["metadata"]["name"]), pool_name if len(pool_names) == 1 else "")
                == pool_name
            ]
            regions = tuple(
                RegionView(c, by_name.get(f"{pool_name}-{c['metadata']['name']}"))
                for c in sorted(members, key=lambda c: str(c["metadata"]["name"]))
            )
            region_names = {r.name for r in regions}
            members_pods = tuple(
                w
                for w in cluster_pods
                if w.coordination_namespace == ns
                and (w.pool_lease == pool_name or w.region in region_names)
            )
            pools.append(
                PoolView(pool_name, True, ns, by_name.get(pool_name), regions, members_pods)
            )

    # ---- pods whose regions meet in an API server we were not given: their pods only -----------
    unread: dict[tuple[str, str], list[Workload]] = {}
    for w in workloads:
        if w.cluster_management and w.remote_coordination and coordination is None:
            unread.setdefault((w.coordination_namespace or "", w.pool_lease or ""), []).append(w)
    for (ns, pool_name), remote_pods in sorted(unread.items()):
        if not scope.pool or pool_name == scope.pool:
            why = "its regions meet in another API server: pass --coordination-kubeconfig"
            pools.append(PoolView(pool_name, True, ns, None, (), tuple(remote_pods), unread=why))

    # ---- pools without cluster management: one local Lease each ---------------------------------
    local: dict[tuple[str, str], list[Workload]] = {}
    for w in workloads:
        if not w.cluster_management:
            local.setdefault(w.lease_key, []).append(w)
    for (ns, lease_name), local_pods in sorted(local.items()):
        if scope.pool and lease_name != scope.pool:
            continue
        pools.append(PoolView(lease_name, False, ns, None, (), tuple(local_pods)))

    if not pools:
        where = f"namespace {scope.namespace}" if scope.namespace else "any namespace"
        raise CliError(
            f"no cardano-forge pool found in {where} of {kube.target.describe()}: no pod or "
            f"StatefulSet labelled {BLOCK_PRODUCER_SELECTOR} and no CardanoForgeCluster "
            "(pass -n NAMESPACE, -A, or --context)"
        )

    # ---- local Leases and per-pod facts ----------------------------------------------------------
    lease_keys = {w.lease_key for p in pools for w in p.pods}
    local_leases: dict[tuple[str, str], LeaseInfo | None] = {}
    for ns, name in sorted(lease_keys):
        try:
            local_leases[(ns, name)] = read_lease(kube, ns, name)
        except CliError as exc:
            warnings.append(exc.message)
    all_pods = {w.key: w for p in pools for w in p.pods}
    facts = read_all_facts(kube, all_pods.values(), scope.facts_timeout) if scope.with_facts else {}
    out = []
    for p in pools:
        keys = {w.lease_key for w in p.pods}
        pool_lease = p.lease if p.cluster else local_leases.get((p.namespace, p.name))
        out.append(
            PoolView(
                p.name,
                p.cluster,
                p.namespace,
                pool_lease,
                p.regions,
                p.pods,
                {k: v for k, v in local_leases.items() if k in keys},
                {w.key: facts[w.key] for w in p.pods if w.key in facts},
                p.unread,
            )
        )
    return Snapshot(datetime.now(UTC), tuple(out), tuple(dict.fromkeys(warnings)))
