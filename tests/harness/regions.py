"""Several regions of forge pods on one control plane, with cluster-wide coordination.

Each region has its own pods (:class:`~tests.harness.forge_pod.ForgePod`, forge manager with
``ENABLE_CLUSTER_MANAGEMENT=true`` and a node stand-in, optionally under ``forge-guard``), its own
local Lease, its own copy of the pool's Secret, its own health endpoint (a tiny HTTP server in
this process whose answer the caller switches) and, optionally, its own breakable loopback proxy
(:class:`~tests.harness.tcpproxy.TcpProxy`) in front of the coordination API, so it can be cut off
while its local API stays reachable. With ``api_proxies=True`` each region's coordination traffic
also passes through an :class:`~tests.harness.apiproxy.ApiProxy` (behind the TcpProxy, if any)
that can apply a request and drop its answer, or delay answers. With ``service_accounts=True``
each region reaches the coordination API as a ServiceAccount of its own bound to the chart's
coordination Role (:func:`coordination_rules`), which :meth:`Regions.set_coordination_rules` can
edit (an RBAC fault: a region that can heartbeat but not list). With ``local_proxies=True`` each
pod reaches its local API (its region's local Lease) through a TcpProxy of its own
(:meth:`Regions.local_proxy`: one pod cut off) in front of an ApiProxy of its region
(``local_api_proxies``: answers dropped or delayed). ``pid_files`` names the pod indices that
find their node through ``CARDANO_NODE_PID_FILE``; ``failpoints=True`` starts every manager with
its failpoint file. An :class:`~tests.harness.exit_watch.ExitWatch` records the end of every node
stand-in that dies without saying so. Used by the fault-injection suite and the figures.
"""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from tests.harness.apiproxy import ApiProxy
from tests.harness.controlplane import REPO_ROOT, ControlPlane, b64_file
from tests.harness.exit_watch import ExitWatch
from tests.harness.forge_pod import FAST_TIMING, ForgePod, all_events, write_pool_secret
from tests.harness.forging_log import Interval, forging_at, intervals, summary
from tests.harness.node_standin import now
from tests.harness.tcpproxy import TcpProxy

CRD_FILE = REPO_ROOT / "crds" / "cardanoforgeclusters.cardano.io.yaml"
GROUP, VERSION, PLURAL = "cardano.io", "v1", "cardanoforgeclusters"
POOL_LEASE = "cardano-forge-pool"

# Fast cluster timings to go with FAST_TIMING (as in the coordination integration tests).
FAST_CLUSTER_TIMING = {
    "HEALTH_CHECK_INTERVAL": "1",
    "HEALTH_CHECK_TIMEOUT": "0.5",
    "HEALTH_CHECK_FAILURE_THRESHOLD": "3",
    "CLUSTER_HEARTBEAT_INTERVAL": "1",
    "CLUSTER_STALE_AFTER": "4",
}


class HealthServer:
    """A region's health endpoint: answers ``status`` (200 healthy, 503 unhealthy)."""

    def __init__(self) -> None:
        outer = self
        self.status = 200
        self.answers: list[tuple[float, int]] = []
        """(monotonic time, status) of every answer, for the figures."""

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = outer.status
                outer.answers.append((now(), status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/health"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def install_crd(cp: ControlPlane) -> None:
    """Create (or replace) the repository's CardanoForgeCluster CRD and wait until served."""
    cp.apply_crd(yaml.safe_load(CRD_FILE.read_text()), timeout=60)


def create_namespace(cp: ControlPlane, name: str) -> None:
    with cp.api_client() as api:
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
        )


def read_cfc(cp: ControlPlane, namespace: str, region: str) -> dict[str, Any]:
    """A region's CardanoForgeCluster as the API server has it."""
    with cp.api_client() as api:
        obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, region
        )
    assert isinstance(obj, dict)
    return obj


def patch_cfc_spec(cp: ControlPlane, namespace: str, region: str, spec: dict[str, Any]) -> None:
    """An operator's edit of a region's spec (merge patch)."""
    with cp.api_client() as api:
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, region, {"spec": spec}
        )


def pool_lease_holder(cp: ControlPlane, namespace: str) -> str | None:
    """The pool-wide Lease's holder identity (``region/pod``), None when free."""
    with cp.api_client() as api:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(POOL_LEASE, namespace)
    return (lease.spec.holder_identity or None) if lease.spec else None


def coordination_rules(
    region: str, pool_lease: str = POOL_LEASE, *, list_regions: bool = True
) -> list[client.V1PolicyRule]:
    """The chart's coordination Role (``charts/cardano-forge/templates/rbac.yaml``) for
    ``region``; ``list_regions=False`` takes ``list`` on cardanoforgeclusters away."""
    read = ["get", "list", "watch", "create"] if list_regions else ["get", "watch", "create"]
    return [
        client.V1PolicyRule(
            api_groups=["coordination.k8s.io"],
            resources=["leases"],
            verbs=["create", "list", "watch"],
        ),
        client.V1PolicyRule(
            api_groups=["coordination.k8s.io"],
            resources=["leases"],
            resource_names=[pool_lease, f"{pool_lease}-{region}"],
            verbs=["get", "update"],
        ),
        client.V1PolicyRule(api_groups=[GROUP], resources=[PLURAL], verbs=read),
        client.V1PolicyRule(
            api_groups=[GROUP], resources=[PLURAL], resource_names=[region],
            verbs=["update", "patch"],
        ),
        client.V1PolicyRule(
            api_groups=[GROUP], resources=[f"{PLURAL}/status"], resource_names=[region],
            verbs=["get", "update", "patch"],
        ),
    ]  # fmt: skip


def coordination_service_account(
    cp: ControlPlane, namespace: str, region: str, expiration_seconds: int = 7200
) -> str:
    """Create the ServiceAccount ``forge-<region>`` bound to :func:`coordination_rules`; return a
    token for it (TokenRequest, valid for ``expiration_seconds``)."""
    name = f"forge-{region}"
    with cp.api_client() as api:
        core = client.CoreV1Api(api)
        rbac = client.RbacAuthorizationV1Api(api)
        core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        )
        rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name=name), rules=coordination_rules(region)
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name=name),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name=name
                ),
                subjects=[
                    client.RbacV1Subject(kind="ServiceAccount", name=name, namespace=namespace)
                ],
            ),
        )
        token = core.create_namespaced_service_account_token(
            name,
            namespace,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
            ),
        ).status.token
    assert isinstance(token, str) and token
    return token


def set_coordination_rules(
    cp: ControlPlane, namespace: str, region: str, rules: list[client.V1PolicyRule]
) -> None:
    """Replace the rules of ``region``'s coordination Role (``kubectl edit role``)."""
    name = f"forge-{region}"
    with cp.api_client() as api:
        rbac = client.RbacAuthorizationV1Api(api)
        role = rbac.read_namespaced_role(name, namespace)
        role.rules = rules
        rbac.replace_namespaced_role(name, namespace, role)


class RegionPods:
    """The forge pods of simulated regions (``priorities`` maps region name to priority), a list
    per region, each region with its own health endpoint and its own copy of the pool's Secret:
    how a pod is made and replaced, and what is seen of the pods. :class:`Regions` (one control
    plane) and :class:`~tests.harness.quorum_regions.QuorumRegions` (an etcd quorum) add how the
    regions reach each other."""

    def __init__(
        self,
        cp: ControlPlane,
        root: Path,
        priorities: Mapping[str, int],
        pods_per_region: int,
        guard: bool,
        timing: Mapping[str, str] | None,
        cluster_timing: Mapping[str, str] | None,
    ) -> None:
        self.cp = cp
        self.root = root
        self.priorities = dict(priorities)
        self.pods_per_region = pods_per_region
        self.guard = guard
        self.timing = dict(FAST_TIMING if timing is None else timing)
        self.cluster_timing = dict(
            FAST_CLUSTER_TIMING if cluster_timing is None else cluster_timing
        )
        self.token = uuid.uuid4().hex[:4]
        self.generation = 0
        self.health = {region: HealthServer() for region in priorities}
        self.secrets = {r: write_pool_secret(root / f"{r}-secret") for r in priorities}
        self.pods: dict[str, list[ForgePod]] = {}
        self.retired: list[ForgePod] = []
        """Pods replaced by :meth:`replace` (their event logs still count)."""

    def _new_pod(self, region: str, index: int) -> ForgePod:
        """Pod ``index`` of ``region``, a new incarnation (:attr:`generation`), not started."""
        raise NotImplementedError

    def _region_env(self, region: str) -> dict[str, str]:
        """The environment every manager of ``region`` starts with."""
        return {
            "ENABLE_CLUSTER_MANAGEMENT": "true",
            "CLUSTER_NAME": region,
            "CLUSTER_PRIORITY": str(self.priorities[region]),
            "HEALTH_CHECK_ENDPOINT": self.health[region].url,
        }

    def _forge_pod(
        self,
        region: str,
        index: int,
        *,
        kubeconfig: Path,
        namespace: str,
        node_name: str,
        env: Mapping[str, str],
        use_pid_file: bool = False,
        failpoints: bool = False,
    ) -> ForgePod:
        """Pod ``index`` of ``region`` in this incarnation's directory."""
        return ForgePod(
            f"{region}-{index}",
            self.root / f"g{self.generation}",
            kubeconfig,
            namespace,
            self.secrets[region],
            lease_name=f"{region}-leader",
            timing=self.timing,
            # Unique per run and incarnation: managers find their node by exact process name.
            node_name=node_name,
            extra_env=env,
            guard=self.guard,
            use_pid_file=use_pid_file,
            failpoints=failpoints,
        )

    def _pod_stopped(self, pod: ForgePod) -> None:
        """What goes with a pod that :meth:`replace` stopped (nothing here)."""

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start every pod (and what the regions need to reach each other)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every pod and everything :meth:`start` started."""
        raise NotImplementedError

    @property
    def all_pods(self) -> list[ForgePod]:
        return [p for pods in self.pods.values() for p in pods]

    @property
    def every_pod(self) -> list[ForgePod]:
        """Current and replaced pods: the whole forging history."""
        return self.retired + self.all_pods

    def replace(self, pod: ForgePod, *, start: bool = True) -> ForgePod:
        """The StatefulSet recreates a deleted pod: same name, fresh emptyDirs, new processes."""
        region = self.region_of(pod)
        index = self.pods[region].index(pod)
        pod.stop()
        self._pod_stopped(pod)
        new = self._new_pod(region, int(pod.name.rsplit("-", 1)[1]))
        self.retired.append(pod)
        self.pods[region][index] = new
        if start:
            new.start()
        return new

    # ---- observation -----------------------------------------------------------------------------
    def spans(self) -> list[Interval]:
        return intervals(all_events(self.every_pod))

    def forgers(self) -> list[ForgePod]:
        active = set(forging_at(self.spans(), now()))
        return [p for p in self.all_pods if any(a.startswith(p.node_name + "/") for a in active)]

    def region_of(self, pod: ForgePod) -> str:
        return pod.name.rsplit("-", 1)[0]

    def diagnose(self, lines: int = 12) -> str:
        """Who forges now, the forging history and the last ``lines`` of every manager's log."""
        raise NotImplementedError


class Regions(RegionPods):
    """Regions of ``pods_per_region`` pods each; ``priorities`` maps region name to priority."""

    def __init__(
        self,
        cp: ControlPlane,
        namespace: str,
        root: Path,
        priorities: Mapping[str, int],
        *,
        pods_per_region: int = 2,
        guard: bool = True,
        via_proxy: bool = True,
        timing: Mapping[str, str] | None = None,
        cluster_timing: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        service_accounts: bool = False,
        api_proxies: bool = False,
        local_proxies: bool = False,
        pid_files: Collection[int] = (),
        failpoints: bool = False,
        token_seconds: int = 7200,
    ) -> None:
        super().__init__(cp, root, priorities, pods_per_region, guard, timing, cluster_timing)
        self.namespace = namespace
        self.extra_env = dict(extra_env or {})
        """More environment for every pod (e.g. ``METRICS_BIND_ADDRESS``)."""
        self.proxies: dict[str, TcpProxy] = {}
        self.api_proxies: dict[str, ApiProxy] = {}
        self.kubeconfigs: dict[str, Path] = {}
        self.pid_files = frozenset(pid_files)
        self.failpoints = failpoints
        self.local_api_proxies: dict[str, ApiProxy] = {}
        self._local_proxies: dict[str, TcpProxy] = {}
        """Per pod (its node name): its TcpProxy to the local API."""
        self.exit_watch = ExitWatch(lambda: self.every_pod)
        for region in priorities:
            if local_proxies:
                self.local_api_proxies[region] = ApiProxy(cp.apiserver_port, cp.pki).start()
            server: str | None = None
            upstream = cp.apiserver_port
            if api_proxies:
                api_proxy = ApiProxy(cp.apiserver_port, cp.pki).start()
                self.api_proxies[region] = api_proxy
                upstream, server = api_proxy.port, api_proxy.url
            if via_proxy:
                proxy = TcpProxy(upstream).start()
                self.proxies[region] = proxy
                server = proxy.url
            if service_accounts:
                token = coordination_service_account(cp, namespace, region, token_seconds)
                self.kubeconfigs[region] = cp.write_kubeconfig(
                    root / f"{region}-coordination.kubeconfig",
                    user={"token": token},
                    user_name=f"forge-{region}",
                    namespace=namespace,
                    server=server,
                )
            elif server is not None:
                self.kubeconfigs[region] = cp.write_kubeconfig(
                    root / f"{region}-coordination.kubeconfig",
                    user={
                        "client-certificate-data": b64_file(cp.pki / "admin.crt"),
                        "client-key-data": b64_file(cp.pki / "admin.key"),
                    },
                    user_name="admin",
                    server=server,
                )
            self.pods[region] = [self._new_pod(region, i) for i in range(pods_per_region)]

    def _new_pod(self, region: str, index: int) -> ForgePod:
        self.generation += 1
        env = {**self._region_env(region), **self.cluster_timing, **self.extra_env}
        if region in self.kubeconfigs:
            env["COORDINATION_KUBECONFIG"] = str(self.kubeconfigs[region])
        node_name = f"n{self.token}{region[:2]}{index}g{self.generation}"[:15]
        kubeconfig = self.cp.kubeconfig
        if region in self.local_api_proxies:
            proxy = TcpProxy(self.local_api_proxies[region].port).start()
            self._local_proxies[node_name] = proxy
            kubeconfig = self.cp.write_kubeconfig(
                self.root / f"g{self.generation}-{region}-{index}-local.kubeconfig",
                user={
                    "client-certificate-data": b64_file(self.cp.pki / "admin.crt"),
                    "client-key-data": b64_file(self.cp.pki / "admin.key"),
                },
                user_name="admin",
                namespace=self.namespace,
                server=proxy.url,
            )
        return self._forge_pod(
            region,
            index,
            kubeconfig=kubeconfig,
            namespace=self.namespace,
            node_name=node_name,
            env=env,
            use_pid_file=index in self.pid_files,
            failpoints=self.failpoints,
        )

    def _pod_stopped(self, pod: ForgePod) -> None:
        proxy = self._local_proxies.pop(pod.node_name, None)
        if proxy is not None:
            proxy.stop()

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        """Start every pod; ``timeout`` bounds each pod's start (longer on a loaded machine)."""
        self.exit_watch.start()
        for pod in self.all_pods:
            pod.start(timeout)

    def local_proxy(self, pod: ForgePod) -> TcpProxy:
        """``pod``'s own connection to its local API (needs ``local_proxies=True``)."""
        return self._local_proxies[pod.node_name]

    def stop(self) -> None:
        for pod in self.all_pods:
            pod.stop()
        self.exit_watch.stop()
        for server in self.health.values():
            server.stop()
        for proxy in [*self.proxies.values(), *self._local_proxies.values()]:
            proxy.stop()
        for api_proxy in [*self.api_proxies.values(), *self.local_api_proxies.values()]:
            api_proxy.stop()

    # ---- observation -----------------------------------------------------------------------------
    def diagnose(self, lines: int = 12) -> str:
        logs = "\n".join(f"--- {p.name}\n{p.log_tail(lines)}" for p in self.all_pods)
        return f"forgers now: {[p.name for p in self.forgers()]}\n{summary(self.spans())}\n{logs}"

    def cfc(self, region: str) -> dict[str, Any]:
        return read_cfc(self.cp, self.namespace, region)

    def patch_spec(self, region: str, spec: dict[str, Any]) -> None:
        patch_cfc_spec(self.cp, self.namespace, region, spec)

    def pool_lease_holder(self) -> str | None:
        return pool_lease_holder(self.cp, self.namespace)

    def delete_lease(self, name: str) -> None:
        """``kubectl delete lease <name>`` (a local Lease ``<region>-leader``, the pool-wide
        Lease :data:`POOL_LEASE`); a Lease already gone is fine."""
        with self.cp.api_client() as api:
            try:
                client.CoordinationV1Api(api).delete_namespaced_lease(name, self.namespace)
            except client.exceptions.ApiException as exc:
                if exc.status != 404:
                    raise

    def set_coordination_rules(self, region: str, *, list_regions: bool = True) -> None:
        """Edit ``region``'s coordination Role (needs ``service_accounts=True``)."""
        set_coordination_rules(
            self.cp,
            self.namespace,
            region,
            coordination_rules(region, list_regions=list_regions),
        )

    def condition(self, region: str, kind: str) -> dict[str, Any] | None:
        """A status condition of ``region``'s CardanoForgeCluster, None when absent."""
        found = [
            c
            for c in (self.cfc(region).get("status") or {}).get("conditions") or []
            if c.get("type") == kind
        ]
        return found[0] if found else None
