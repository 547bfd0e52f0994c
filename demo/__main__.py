"""``make demo``: two regions of one pool on the embedded control plane, failing over live.

What it does, in order:

1. uses the control plane of ``make cluster-up`` when one runs, else starts a private one in
   ``.demo/cluster`` (etcd + kube-apiserver on loopback);
2. installs the CardanoForgeCluster CRD and the chart with ``helm install`` twice, region
   ``east`` (priority 1) and region ``west`` (priority 2), both using this API as the
   coordination API (namespace ``cardano-pool``);
3. starts per region a cardano-node exporter and a node_exporter stand-in, one Prometheus that
   scrapes them, and the health endpoint (gunicorn) that the forge managers poll;
4. runs every pod of both StatefulSets as local processes: the forge manager with the environment
   the chart rendered (acting as the release's ServiceAccount, so the chart's RBAC applies) and a
   cardano-node stand-in under ``forge-guard``;
5. plays a story (the forging pod is killed, region east turns unhealthy, it recovers and fails
   back) under a live view, then prints each transition's duration and the overlap total.

``--no-story`` keeps everything running for experiments until Ctrl-C. Ctrl-C or the end of the
story stops every process the demo started.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from forge_manager.cluster.model import holder_identity
from kubernetes import client

from demo.common import DemoError, Stopped, Transition, report
from demo.localpod import resolve_env
from demo.mode import PODS, ModeError, choose, probe
from demo.pods import SHARED as SHARED_CLUSTER
from demo.pods import PodDemo
from demo.view import PodRow, render
from tests.harness import node as nodes
from tests.harness.controlplane import REPO_ROOT, ControlPlane, ControlPlaneError, free_port, tool
from tests.harness.fake_exporters import FakeCardanoNode, FakeNodeExporter
from tests.harness.forge_pod import ForgePod, all_events, write_pool_secret
from tests.harness.forging_log import intervals
from tests.harness.node_standin import now
from tests.harness.pod_objects import host_address, register
from tests.harness.pod_pool import PoolError
from tests.harness.prometheus import PrometheusServer

CHART = REPO_ROOT / "charts" / "cardano-forge"
CRD = REPO_ROOT / "crds" / "cardanoforgeclusters.cardano.io.yaml"
HERE = Path(__file__).resolve().parent
COORDINATION_NS = "cardano-pool"
POOL_LEASE = "cardano-forge-pool"
KEYS_SECRET = "pool-keys"  # noqa: S105 (the Secret's name)
WAIT = 180.0


@dataclass
class Region:
    name: str
    namespace: str
    values: Path
    node_exporter: FakeCardanoNode = field(default_factory=FakeCardanoNode)
    host_exporter: FakeNodeExporter = field(default_factory=FakeNodeExporter)
    pods: list[ForgePod] = field(default_factory=list)


class Demo:
    def __init__(
        self, workdir: Path, *, live: bool, stop: threading.Event, shared: bool = True
    ) -> None:
        self.dir = workdir
        self.live = live
        self.stop = stop
        self.shared = shared
        """Use the control plane of ``make cluster-up`` when it runs (and has no node)."""
        self.stack = contextlib.ExitStack()
        self.cp: ControlPlane | None = None
        self.regions = [
            Region("east", "cardano-east", HERE / "values-east.yaml"),
            Region("west", "cardano-west", HERE / "values-west.yaml"),
        ]
        self.health_url = ""
        self.transitions: list[Transition] = []
        self.t0 = time.monotonic()
        self.notes: list[str] = []
        # Stand-in process names (at most 15 characters) unique to this run: managers find
        # their node by exact name, and another run on the same host must never match.
        self.token = uuid.uuid4().hex[:4]

    # ---- plumbing -------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f}s] {text}"
        self.notes.append(line)
        if not self.live:
            print(line, flush=True)

    def sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopped

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float = WAIT) -> float:
        """Wait for ``predicate`` while refreshing the view; returns the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if predicate():
                return time.monotonic() - started
            self.refresh()
            self.sleep(0.25)
        raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")

    def run(self, *args: str) -> str:
        out = subprocess.run(args, check=False, capture_output=True, text=True)
        if out.returncode != 0:
            lines = [ln.strip() for ln in out.stderr.splitlines() if ln.strip()] or ["no output"]
            raise DemoError(f"{Path(args[0]).name} {' '.join(args[1:3])} failed: {lines[-1]}")
        return out.stdout

    @property
    def admin(self) -> Path:
        assert self.cp is not None
        return self.cp.kubeconfig

    # ---- set-up ---------------------------------------------------------------------------------
    def control_plane(self) -> None:
        shared = SHARED_CLUSTER
        if self.shared and (shared / "state.json").exists() and not node_on(shared):
            cp = ControlPlane.load(shared)
            if cp.running() and cp.is_ready():
                stuck = self.terminating(cp)
                if not stuck:
                    self.say(f"using the control plane of 'make cluster-up' at {cp.url}")
                    self.cp = cp
                    self.clear_previous_run()
                    return
                self.say(
                    f"namespace(s) {', '.join(stuck)} of 'make cluster-up' still terminate (no "
                    "controller runs there to finish): using a control plane of its own"
                )
        cp = ControlPlane(root=self.dir / "cluster")
        self.say("starting etcd + kube-apiserver on loopback (.demo/cluster)")
        cp.start()
        self.stack.callback(cp.stop)
        self.cp = cp
        self.say(f"control plane ready at {cp.url}")

    def terminating(self, cp: ControlPlane) -> list[str]:
        """This demo's namespaces that are Terminating on ``cp`` (they refuse new objects)."""
        wanted = {COORDINATION_NS} | {r.namespace for r in self.regions}
        with cp.api_client() as api:
            items = client.CoreV1Api(api).list_namespace().items
        return sorted(
            n.metadata.name
            for n in items
            if n.metadata.name in wanted and n.metadata.deletion_timestamp is not None
        )

    def clear_previous_run(self) -> None:
        """A control plane kept by ``make cluster-up`` holds what an earlier demo left: its
        Leases (held by processes that are gone; a new election would wait for them to expire)
        and its CardanoForgeClusters (status written by those processes). Start from none."""
        assert self.cp is not None
        namespaces = [COORDINATION_NS] + [r.namespace for r in self.regions]
        removed = 0
        with self.cp.api_client() as api:
            core = client.CoreV1Api(api)
            leases = client.CoordinationV1Api(api)
            custom = client.CustomObjectsApi(api)
            existing = {n.metadata.name for n in core.list_namespace().items}
            for ns in namespaces:
                if ns not in existing:
                    continue
                for lease in leases.list_namespaced_lease(ns).items:
                    leases.delete_namespaced_lease(lease.metadata.name, ns)
                    removed += 1
                try:
                    found = custom.list_namespaced_custom_object(
                        "cardano.io", "v1", ns, "cardanoforgeclusters"
                    )["items"]
                except client.ApiException as exc:
                    if exc.status == 404:  # the CRD is not installed yet
                        continue
                    raise
                for item in found:
                    custom.delete_namespaced_custom_object(
                        "cardano.io", "v1", ns, "cardanoforgeclusters", item["metadata"]["name"]
                    )
                    removed += 1
        if removed:
            self.say(f"removed {removed} Leases and CardanoForgeClusters of an earlier demo run")

    def install(self) -> None:
        kubectl, helm = tool("kubectl"), tool("helm")
        self.run(kubectl, "--kubeconfig", str(self.admin), "apply", "--server-side", "-f", str(CRD))
        self.run(kubectl, "--kubeconfig", str(self.admin), "wait", "--for=condition=Established",
                 "crd/cardanoforgeclusters.cardano.io", "--timeout=60s")  # fmt: skip
        for ns in [COORDINATION_NS] + [r.namespace for r in self.regions]:
            manifest = yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace",
                                       "metadata": {"name": ns}})  # fmt: skip
            subprocess.run([kubectl, "--kubeconfig", str(self.admin), "apply", "-f", "-"],
                           input=manifest, text=True, check=True, capture_output=True)  # fmt: skip
        for region in self.regions:
            endpoint = f"{self.health_url}/api/v1/health/cluster/{region.name}"
            self.run(
                helm, "upgrade", "--install", region.name, str(CHART),
                "--kubeconfig", str(self.admin), "--namespace", region.namespace,
                "-f", str(region.values),
                "--set", f"forgeManager.clusterManagement.healthCheck.endpoint={endpoint}",
                "--set", "crds.enabled=false",
            )  # fmt: skip
            self.say(f"helm install {region.name}: chart installed in namespace {region.namespace}")

    def monitoring(self) -> None:
        jobs: list[dict[str, Any]] = []
        for region in self.regions:
            self.stack.enter_context(region.node_exporter.start())
            self.stack.enter_context(region.host_exporter.start())
            labels = {"cluster": region.name}
            jobs.append({"job_name": f"cardano-node-{region.name}", "metrics_path": "/metrics",
                         "relabel_configs": [{"target_label": "job",
                                              "replacement": "cardano-node"}],
                         "static_configs": [{"targets": [region.node_exporter.target],
                                             "labels": labels}]})  # fmt: skip
            jobs.append({"job_name": f"node-exporter-{region.name}",
                         "relabel_configs": [{"target_label": "job",
                                              "replacement": "node-exporter"}],
                         "static_configs": [{"targets": [region.host_exporter.target],
                                             "labels": labels}]})  # fmt: skip
        prometheus = PrometheusServer(self.dir / "prometheus", jobs, scrape_interval="1s")
        self.stack.enter_context(prometheus)
        self.say(f"Prometheus at {prometheus.url} scraping 4 exporters")
        port = free_port()
        env = dict(os.environ)
        env.update(
            PROMETHEUS_URL=prometheus.url,
            BIND=f"127.0.0.1:{port}",
            WEB_CONCURRENCY="1",
            CACHE_TTL_SECONDS="1",
            HEALTH_CONFIG_FILE=str(HERE / "health-config.yaml"),
        )
        log = (self.dir / "health-endpoint.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "health_endpoint"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
        log.close()
        self.stack.callback(_terminate, proc)
        self.health_url = f"http://127.0.0.1:{port}"
        for region in self.regions:
            self.wait(f"region {region.name} healthy", lambda r=region: self.healthy(r.name))
        self.say(f"health endpoint at {self.health_url}: both regions healthy")

    def healthy(self, region: str) -> bool:
        try:
            url = f"{self.health_url}/api/v1/health/cluster/{region}"
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (http on loopback)
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def pods(self) -> None:
        assert self.cp is not None
        secret = write_pool_secret(self.dir / "pool-secret")
        # Pod objects for the local pods, reachable through the API server's pod proxy (which
        # refuses loopback): 'cardano-forge status' then reads each forge manager's /metrics.
        address = host_address()
        with self.cp.api_client() as api:
            apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
            for region in self.regions:
                store_keys(core, region.namespace, secret)
                sts = apps.list_namespaced_stateful_set(
                    region.namespace, label_selector=f"app.kubernetes.io/instance={region.name}"
                ).items[0]
                spec = api.sanitize_for_serialization(sts.spec.template.spec)
                container = next(c for c in spec.get("initContainers", [])
                                 if c["name"] == "forge-manager")  # fmt: skip
                token = core.create_namespaced_service_account_token(
                    spec["serviceAccountName"], region.namespace,
                    client.AuthenticationV1TokenRequest(
                        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=7200)),
                ).status.token  # fmt: skip
                kubeconfig = self.cp.token_kubeconfig(
                    self.dir / f"{region.name}.kubeconfig", token, region.namespace
                )
                for ordinal in range(sts.spec.replicas):
                    name = f"{sts.metadata.name}-{ordinal}"
                    pod_dir = self.dir / "pods" / name
                    env = resolve_env(
                        container,
                        {"credentials": str(pod_dir / "secrets"), "ipc": str(pod_dir / "ipc"),
                         "credentials-source": str(secret),
                         "forge-manager-tmp": str(pod_dir / "tmp"),
                         "run": str(pod_dir / "run")},
                        pod_name=name, namespace=region.namespace,
                    )  # fmt: skip
                    if address is not None:
                        env["METRICS_BIND_ADDRESS"] = address
                    region.pods.append(ForgePod(
                        name=name, root=self.dir / "pods", kubeconfig=kubeconfig,
                        namespace=region.namespace, secret_dir=secret, timing={},
                        node_name=f"cn{self.token}{region.name[:4]}{ordinal}",
                        extra_env=env, guard=True,
                    ))  # fmt: skip
        if address is not None:
            for region in self.regions:
                register(self.cp, region.namespace, region.pods, address=address,
                         release_of=lambda _pod, r=region.name: r)  # fmt: skip
                with self.cp.api_client() as api:  # POD_UID: the Pod object's, as the kubelet
                    core = client.CoreV1Api(api)
                    for pod in region.pods:
                        obj = core.read_namespaced_pod(pod.name, region.namespace)
                        pod.extra_env = {**pod.extra_env, "POD_UID": obj.metadata.uid}
        for pod in self.all_pods():
            self.stack.callback(pod.stop)
            pod.start_manager()
        for pod in self.all_pods():
            self.wait(f"{pod.name} /startup-status", pod.startup_ready)
            pod.start_node()
        self.say(f"{len(self.all_pods())} pods running: forge manager + forge-guard + node")

    def all_pods(self) -> list[ForgePod]:
        return [p for r in self.regions for p in r.pods]

    # ---- observation ---------------------------------------------------------------------------
    def forgers(self) -> list[ForgePod]:
        return [p for p in self.all_pods() if p.forging()]

    def forging_region(self) -> str | None:
        found = self.forgers()
        if len(found) != 1:
            return None
        return next(r.name for r in self.regions if found[0] in r.pods)

    def pool_holder(self) -> str:
        assert self.cp is not None
        try:
            with self.cp.api_client() as api:
                lease = client.CoordinationV1Api(api).read_namespaced_lease(
                    POOL_LEASE, COORDINATION_NS, _request_timeout=1
                )
            return str(lease.spec.holder_identity or "-")
        except Exception:  # the view shows what it can
            return "?"

    def refresh(self) -> None:
        if not self.live:
            return
        holder = self.pool_holder()
        rows = []
        for region in self.regions:
            for pod in region.pods:
                spans = pod.intervals()
                last = spans[-1] if spans else None
                rows.append(PodRow(
                    region=region.name, pod=pod.name,
                    local_leader=pod.metric("cardano_leader_status") == 1,
                    pool_holder=holder == holder_identity(region.name, pod.name),
                    forging=bool(last and last.end is None),
                    health_failures=pod.metric("cardano_cluster_health_check_consecutive_failures"),
                    last_change=(None if last is None
                                 else now() - (last.end or last.start)),
                    alive=pod.manager is not None and pod.manager.poll() is None,
                ))  # fmt: skip
        sys.stdout.write(render(rows, self.notes[-8:]))
        sys.stdout.flush()

    # ---- the story -----------------------------------------------------------------------------
    def measure(self, name: str, detail: str, predicate: Callable[[], bool]) -> None:
        seconds = self.wait(name, predicate)
        self.transitions.append(Transition(name, seconds, detail))
        self.say(f"{name}: {seconds:.1f} s ({detail})")

    def story(self) -> None:
        east = self.regions[0]
        self.measure("initial election", "east forges (priority 1)",
                     lambda: self.forging_region() == "east")  # fmt: skip
        self.sleep(3)
        victim = next(p for p in east.pods if p.forging())
        self.say(f"kill -9 of the forging pod {victim.name} (forge manager and node)")
        victim.kill9()
        self.measure("local failover", "the region's other pod forges after the lease expires",
                     lambda: self.forging_region() == "east" and not victim.forging())  # fmt: skip
        self.say(f"{victim.name} restarts, as the StatefulSet would restart it")
        victim.start_manager()
        self.wait(f"{victim.name} /startup-status", victim.startup_ready)
        victim.start_node()
        self.sleep(3)
        self.say("region east turns unhealthy: its cardano-node stops answering scrapes")
        east.node_exporter.failing = True
        self.measure("health failover", "3 failed checks demote east (+100); west forges",
                     lambda: self.forging_region() == "west")  # fmt: skip
        self.sleep(3)
        self.say("region east recovers: its cardano-node answers scrapes again")
        east.node_exporter.failing = False
        self.measure("failback", "failures walk back to 0; west hands over to east",
                     lambda: self.forging_region() == "east")  # fmt: skip
        self.sleep(2)

    def report(self) -> int:
        return report(self.transitions, intervals(all_events(self.all_pods())), now())

    def main(self, *, story: bool) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.stack:
            self.control_plane()
            self.monitoring()
            self.install()
            self.pods()
            if story:
                self.story()
                if self.live:
                    self.refresh()
                return self.report()
            self.say("running without the story: Ctrl-C stops everything")
            self.say("try: kill -9 a forge manager, or kubectl patch cfc east -n cardano-pool "
                     "--type merge -p '{\"spec\":{\"forgeState\":\"Disabled\"}}'")  # fmt: skip
            self.say(f"KUBECONFIG={self.admin}")
            cli = f"cardano-forge --kubeconfig {self.admin}"
            self.say(f"try: {cli} -A status; {cli} -n cardano-east switchover --to-region west")
            while True:
                self.refresh()
                self.sleep(0.5)


def store_keys(core: client.CoreV1Api, namespace: str, keys: Path) -> None:
    """The pool's keys as the Secret ``pool-keys`` the chart's values name; an earlier run's
    Secret (a control plane kept by ``make cluster-up``) gets this run's keys."""
    body = client.V1Secret(
        metadata=client.V1ObjectMeta(name=KEYS_SECRET),
        string_data={p.name: p.read_text() for p in sorted(keys.iterdir())},
    )
    try:
        core.create_namespaced_secret(namespace, body)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
        core.replace_namespaced_secret(KEYS_SECRET, namespace, body)


def node_on(cluster: Path) -> bool:
    """Whether the node of ``make node-up`` runs on that control plane: the processes demo
    would then see its Pod objects scheduled onto it (it uses a control plane of its own)."""
    with contextlib.suppress(OSError):  # the journal is root's; no node without root
        journal = nodes.read_journal()
        return bool(
            journal is not None
            and nodes.journal_is_live(journal)
            and Path(journal["control_plane_dir"]) == cluster.resolve()
        )
    return False


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def _signals(stop: threading.Event) -> Iterator[None]:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def clear_workdir(workdir: Path) -> None:
    """Remove an earlier run's work directory; a pod-mode run that crashed left its node's host
    changes recorded: they are undone first (a running one is another demo: refused)."""
    with contextlib.suppress(OSError):  # the host journal is root's (no node without root)
        journal = nodes.read_journal()
        if journal is not None and Path(journal["state_dir"]).is_relative_to(workdir.resolve()):
            if nodes.journal_is_live(journal):
                raise DemoError(
                    f"another make demo runs on this host (its node in {journal['state_dir']}): "
                    "end it with Ctrl-C, or use --dir for a second demo"
                )
            nodes.down(say=lambda line: print(f"earlier demo's node: {line}"))
    shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=str(REPO_ROOT / ".demo"), help="work directory")
    parser.add_argument("--mode", default=os.environ.get("DEMO_MODE") or "auto",
                        help="auto (default: pods when this host can run the node), pods or "
                        "processes; also DEMO_MODE")  # fmt: skip
    parser.add_argument("--no-story", action="store_true",
                        help="keep everything running for experiments until Ctrl-C")  # fmt: skip
    parser.add_argument("--plain", action="store_true",
                        help="print events line by line instead of the live view")  # fmt: skip
    parser.add_argument("--own-control-plane", action="store_true",
                        help="a control plane of its own even if make cluster-up runs")  # fmt: skip
    parser.add_argument("--no-build", action="store_true",
                        help="pods: do not run make node-tools images first")  # fmt: skip
    args = parser.parse_args(argv)
    workdir = Path(args.dir).resolve()
    try:
        choice = choose(args.mode, probe(REPO_ROOT, SHARED_CLUSTER, workdir / "cluster" / "node"))
    except ModeError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    print(choice.first_line(), flush=True)
    stop = threading.Event()
    with _signals(stop):
        try:
            clear_workdir(workdir)
            if choice.mode == PODS:
                pods = PodDemo(workdir, stop, shared=not args.own_control_plane)
                return pods.main(story=not args.no_story, build=not args.no_build)
            demo = Demo(workdir, live=sys.stdout.isatty() and not args.plain, stop=stop,
                        shared=not args.own_control_plane)  # fmt: skip
            return demo.main(story=not args.no_story)
        except Stopped:
            print("\nstopped: everything the demo started has been stopped")
            return 130
        except (DemoError, ControlPlaneError, PoolError, client.ApiException,
                subprocess.TimeoutExpired) as exc:  # fmt: skip
            print(f"\ndemo failed: {one_line(exc)}", file=sys.stderr)
            return 1


def one_line(exc: BaseException) -> str:
    """The error as one line (an API error: its status and message, not the whole response)."""
    if isinstance(exc, client.ApiException):
        body = " ".join(str(exc.body).split())[:200]
        return f"the API answered {exc.status} {exc.reason}: {body}"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__  # the first says what and where


if __name__ == "__main__":
    sys.exit(main())
