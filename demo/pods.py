"""``make demo`` on real pods: the chart installed with helm on a kubelet-backed node.

What it does, in order (everything through the test bed's own pieces: ``tests.harness.node``
for the node, ``tests.harness.pod_pool`` for the install, the same as the real-pod tests):

1. ``make node-tools images`` (cached by version and content; the log in ``<dir>/build.log``);
2. the control plane of ``make cluster-up`` when one runs, else a private one in
   ``<dir>/cluster``; the node of ``make node-up`` on it when there is one, else a node of its
   own (root; one per host), stopped again at the end with every host setting restored;
3. the CRD, then ``helm install`` of regions ``east`` (priority 1) and ``west`` (priority 2),
   two pods each, cluster management and the health endpoint Deployment on, forge-guard on, the
   built images, the cardano-node stand-in as the node, a real Prometheus scraping the pods;
4. the story: the first forger; ``kubectl delete pod --grace-period=0 --force`` of the forging
   pod (the other pod of the region forges); east's nodes fall behind in Prometheus' view, its
   health endpoint answers unhealthy and west forges; east catches up and takes the pool back;
5. each transition's duration, the longest time with no forger and the time two nodes forged at
   once, all from the stand-ins' own event logs (0 ms, or the demo exits 1).
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kubernetes import client

from demo.common import DemoError, Stopped, Transition, report
from tests.harness import node as nodes
from tests.harness import oci
from tests.harness.controlplane import REPO_ROOT, ControlPlane, tool
from tests.harness.forging_log import Interval, forging_at
from tests.harness.node_standin import now
from tests.harness.pod_pool import (
    COORDINATION,
    HEALTH_FAILURES,
    HEALTH_INTERVAL_S,
    REGIONS,
    UNHEALTHY_LAG_SLOTS,
    PodPool,
)

CRD = REPO_ROOT / "crds" / "cardanoforgeclusters.cardano.io.yaml"
SHARED = REPO_ROOT / ".cluster"
#: Bounds of the story's waits (a first start on a busy host unpacks images, probes...).
FIRST_FORGER_S = 600.0
TRANSITION_S = 300.0
READY_S = 600.0
GONE_S = 180.0
EAST, WEST = REGIONS
#: Namespaces of either mode's earlier runs on a kept control plane.
EARLIER_NAMESPACES = ("east", "west", COORDINATION, "cardano-east", "cardano-west")


class PodDemo:
    def __init__(self, workdir: Path, stop: threading.Event, *, shared: bool = True) -> None:
        self.dir = workdir
        self.stop = stop
        self.shared = shared
        """Use the control plane of ``make cluster-up`` (and its node) when they run."""
        self.stack = contextlib.ExitStack()
        self.t0 = time.monotonic()
        self.boot0 = now()
        self.cp: ControlPlane | None = None
        self.node: nodes.Node | None = None
        self.pool: PodPool | None = None
        self.transitions: list[Transition] = []
        self.setup: dict[str, float] = {}
        self._forgers: list[str] = []
        self.own_node = False
        self._clearing: list[str] = []

    # ---- plumbing --------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {text}", flush=True)

    def sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopped

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise Stopped

    def wait(self, what: str, predicate: Callable[[], object], timeout: float) -> object:
        """Poll ``predicate`` (printing each change of forger) until it returns something
        truthy; Ctrl-C stops the wait, ``timeout`` fails the demo."""
        deadline = time.monotonic() + timeout
        while True:
            self.watch()
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise DemoError(
                    f"timed out after {timeout:.0f} s waiting for {what}; the pods' logs are in "
                    f"{self.dir / 'pool' / 'pod-logs'}"
                )
            self.sleep(0.5)

    def watch(self) -> None:
        """Say when the set of forging nodes changes (the stand-ins' own logs)."""
        if self.pool is None:
            return
        forgers = sorted(p.split("/", 1)[0] for p in self.forging())
        if forgers != self._forgers:
            self._forgers = forgers
            self.say(f"forging now: {', '.join(forgers) or 'nobody'}")

    # ---- set-up ----------------------------------------------------------------------------------
    def build(self) -> None:
        """The node's tools and the images (cached: seconds when nothing changed)."""
        log = self.dir / "build.log"
        self.say(f"make node-tools images (cached by version and content; log in {log})")
        started = time.monotonic()
        with log.open("w") as out:
            proc = subprocess.Popen(
                ["make", "--no-print-directory", "-C", str(REPO_ROOT), "node-tools", "images"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                while proc.poll() is None:
                    if self.stop.wait(0.5):
                        proc.terminate()
                        proc.wait(30)
                        raise Stopped
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if proc.returncode != 0:
            last = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise DemoError(
                f"make node-tools images failed ({last[0].strip()}); see {log}, "
                "or run the demo as processes: make demo DEMO_MODE=processes"
            )
        self.setup["build_s"] = time.monotonic() - started

    def control_plane(self) -> None:
        if self.shared and (SHARED / "state.json").exists():
            cp = ControlPlane.load(SHARED)
            if cp.running() and cp.is_ready():
                self.say(f"using the control plane of 'make cluster-up' at {cp.url}")
                self.cp = cp
                return
        cp = ControlPlane(root=self.dir / "cluster")
        self.say(f"starting etcd + kube-apiserver on loopback ({cp.root})")
        self.stack.callback(cp.stop)
        cp.start()
        self.cp = cp

    def start_node(self) -> None:
        assert self.cp is not None
        journal = nodes.read_journal()
        if (
            journal is not None
            and nodes.journal_is_live(journal)
            and Path(journal["control_plane_dir"]) == self.cp.root.resolve()
        ):
            # The node of 'make node-up': used as it is, left running.
            self.node = nodes.Node(control_plane=self.cp, root=Path(journal["state_dir"]))
            self.say(f"using the node of 'make node-up' ({self.node.root})")
            self.load_missing_images()
            return
        node = nodes.Node(control_plane=self.cp, root=self.cp.root / "node", say=self.say)
        self.say("starting the node: containerd, kubelet, kube-proxy, CoreDNS, controllers")
        self.stack.callback(self.stop_node, node)
        started = time.monotonic()
        self.own_node = True
        node.start()
        self.node = node
        self.setup["node_s"] = time.monotonic() - started
        self.say(f"node {node.name} Ready in {self.setup['node_s']:.1f} s (images loaded)")

    def stop_node(self, node: nodes.Node) -> None:
        self.say("stopping the node and restoring the host's settings")
        node.stop()

    def load_missing_images(self) -> None:
        assert self.node is not None
        present = set(self.node.ctr("images", "ls", "-q").stdout.split())
        missing = [i for i in oci.manifest() if nodes._normalized(i.name) not in present]
        for image in missing:
            self.node.import_image(oci.IMAGES_DIR / image.archive, image.name)
        if missing:
            self.say(f"loaded {len(missing)} image(s) newer than the node")

    def clear_previous_run(self) -> None:
        """An earlier demo on a kept control plane left namespaces: this mode's (``east``,
        ``west``, ``cardano-pool``) and the process mode's (``cardano-east``, ``cardano-west``,
        whose StatefulSets a node would run as real pods beside this pool). Delete them before
        the node starts (no pod can be created in a terminating namespace);
        ``wait_cleared`` waits until they are gone (the node's controllers empty them)."""
        with self.cp_api() as core:
            existing = {n.metadata.name for n in core.list_namespace().items}
            self._clearing = [n for n in EARLIER_NAMESPACES if n in existing]
            for name in self._clearing:
                with contextlib.suppress(client.ApiException):  # already going
                    core.delete_namespace(name)
        if self._clearing:
            self.say(f"deleting an earlier demo's namespaces: {', '.join(self._clearing)}")

    def wait_cleared(self) -> None:
        if not self._clearing:
            return

        def gone() -> bool:
            with self.cp_api() as core:
                names = {n.metadata.name for n in core.list_namespace().items}
            return not names & set(self._clearing)

        self.wait("the earlier demo's namespaces to go", gone, GONE_S)

    @contextlib.contextmanager
    def cp_api(self) -> Iterator[client.CoreV1Api]:
        assert self.cp is not None
        with self.cp.api_client() as api:
            yield client.CoreV1Api(api)

    def install(self) -> None:
        assert self.node is not None
        kubectl = tool("kubectl")
        kube = ["--kubeconfig", str(self.node.kubeconfig)]
        for args in (
            ["apply", "--server-side", "--force-conflicts", "-f", str(CRD)],
            ["wait", "--for=condition=Established", "crd/cardanoforgeclusters.cardano.io",
             "--timeout=60s"],
        ):  # fmt: skip
            out = subprocess.run(
                [kubectl, *kube, *args], check=False, capture_output=True, text=True
            )
            if out.returncode != 0:
                raise DemoError(f"kubectl {args[0]} of the CRD failed: {_last(out.stderr)}")
        pool = PodPool(node=self.node, root=self.dir / "pool", install_crd=False)
        self.pool = pool
        pool.prepare()
        self.stack.callback(self.uninstall, pool)
        pool.install()
        self.setup["install_at"] = pool.installed_at
        for region in pool.regions:
            self.say(
                f"helm install {region.name} (priority {region.priority}): 2 pods, cluster "
                f"management, health endpoint (checks every {HEALTH_INTERVAL_S} s, "
                f"{HEALTH_FAILURES} failures), the built images"
            )

    def uninstall(self, pool: PodPool) -> None:
        """On a kept node, uninstall; on a kept control plane, delete the namespaces and wait
        until they are gone, while the node's controllers still run (a namespace left
        Terminating would refuse the next run's objects, of either mode). A private control
        plane goes as a whole."""
        pool.stop(uninstall=not self.own_node)
        if self.cp is None or self.cp.root.resolve() != SHARED.resolve():
            return
        names = {r.name for r in pool.regions} | {COORDINATION}
        with self.cp_api() as core:
            for name in sorted(names):
                with contextlib.suppress(client.ApiException):
                    core.delete_namespace(name)
        self.say(f"deleting the namespaces {', '.join(sorted(names))}")
        deadline = time.monotonic() + GONE_S
        while time.monotonic() < deadline:  # also after Ctrl-C: bounded, not interruptible
            with self.cp_api() as core:
                if not {n.metadata.name for n in core.list_namespace().items} & names:
                    return
            time.sleep(1)
        self.say(f"namespaces still terminating after {GONE_S:.0f} s: the next run waits for them")

    # ---- observation -----------------------------------------------------------------------------
    def forging(self) -> list[str]:
        """The forging stand-in processes now (``pod/pid/instance``, their own logs)."""
        assert self.pool is not None
        return forging_at(self.pool.spans(), now())

    def one_forger(self, *, not_in: tuple[str, ...] = (), region: str | None = None) -> str:
        """The pod of the only forging process (its manager says it forges too), if that
        process is not one of ``not_in`` and the pod is in ``region``; '' otherwise. By process,
        not by pod name: the StatefulSet recreates a deleted pod under the same name."""
        assert self.pool is not None
        processes = self.forging()
        if len(processes) != 1 or processes[0] in not_in:
            return ""
        pod = processes[0].split("/", 1)[0]
        if region is not None and self.pool.region_of(pod).name != region:
            return ""
        metrics = self.pool.manager_metrics(pod)
        return pod if metrics.get("cardano_forging_enabled") == 1 else ""

    def started_after(self, pod: str, after: float) -> float:
        assert self.pool is not None
        found = self.pool.forging_started(pod, after)
        if not found:
            raise DemoError(f"{pod} forges but its stand-in logged no forging_started")
        return float(found[0]["t"])

    def measure(
        self, name: str, detail: str, after: float, region: str, not_in: tuple[str, ...] = ()
    ) -> str:
        """Wait for one forger in ``region`` (not one of ``not_in``); record the time from
        ``after`` to its stand-in's ``forging_started``."""
        which = lambda: self.one_forger(not_in=not_in, region=region)  # noqa: E731
        pod = str(self.wait(name, which, TRANSITION_S))
        seconds = self.started_after(pod, after) - after
        self.transitions.append(Transition(name, seconds, detail))
        self.say(f"{name}: {seconds:.1f} s ({detail})")
        return pod

    def wait_ready(self) -> None:
        assert self.pool is not None
        self.wait("every pod Ready", self.pool.ready, READY_S)

    # ---- the story -------------------------------------------------------------------------------
    def story(self) -> None:
        assert self.pool is not None and self.node is not None
        installed = self.pool.installed_at
        first = str(self.wait("the first forger", self.one_forger, FIRST_FORGER_S))
        started = self.started_after(first, installed)
        self.transitions.append(
            Transition(
                "initial election",
                started - installed,
                f"helm install to {first} forging (the local, then the pool-wide Lease taken "
                "vacant after a lease duration each)",
            )
        )
        self.setup["first_forger_s"] = started - self.boot0
        self.say(f"first forger {first}: {started - installed:.1f} s after helm install, "
                 f"{started - self.boot0:.1f} s after the demo started")  # fmt: skip
        self.wait_ready()
        self.sleep(3)
        victim = str(self.wait("east forging", lambda: self.one_forger(region=EAST.name),
                               TRANSITION_S))  # fmt: skip
        process = self.forging()[0]
        self.say(f"kubectl delete pod {victim} --grace-period=0 --force (the forging pod)")
        deleted = now()
        self.node.kubectl("delete", "pod", "-n", EAST.name, victim, "--wait=false",
                          "--grace-period=0", "--force")  # fmt: skip
        self.measure("local failover", "forced delete of the forging pod: the region's other "
                     "pod forges", deleted, not_in=(process,), region=EAST.name)  # fmt: skip
        self.say("the StatefulSet recreates the deleted pod")
        self.wait_ready()
        self.sleep(3)
        self.say(f"region east turns unhealthy: its nodes' tips fall {UNHEALTHY_LAG_SLOTS} slots "
                 "behind in Prometheus' view")  # fmt: skip
        lagging = now()
        self.pool.set_tip_lag(EAST, UNHEALTHY_LAG_SLOTS)
        self.measure("health failover", f"east's health endpoint answers 503 {HEALTH_FAILURES} "
                     "times: west forges", lagging, region=WEST.name)  # fmt: skip
        self.sleep(3)
        self.say("region east recovers: its nodes catch up")
        recovered = now()
        self.pool.set_tip_lag(EAST, None)
        self.measure("failback", "east healthy again: west hands the pool back to east",
                     recovered, region=EAST.name)  # fmt: skip
        self.sleep(2)

    def figures(self) -> int:
        assert self.pool is not None
        end = now()
        spans: list[Interval] = self.pool.spans()
        code = report(self.transitions, spans, end)
        parts = []
        if "node_s" in self.setup:
            parts.append(f"node Ready {self.setup['node_s']:.0f} s")
        if "first_forger_s" in self.setup:
            parts.append(f"demo start to the first forger {self.setup['first_forger_s']:.0f} s")
        if "build_s" in self.setup:
            parts.append(f"make node-tools images {self.setup['build_s']:.0f} s")
        print(f"  set-up: {', '.join(parts)}")
        return code

    # ---- entry -----------------------------------------------------------------------------------
    def main(self, *, story: bool, build: bool = True) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.stack:
            if build:
                self.build()
            self.check_stop()
            self.control_plane()
            self.clear_previous_run()
            self.check_stop()
            self.start_node()
            self.check_stop()
            self.wait_cleared()
            self.install()
            if story:
                self.story()
                return self.figures()
            assert self.cp is not None
            self.wait("the first forger", self.one_forger, FIRST_FORGER_S)
            self.say("running without the story: Ctrl-C stops everything")
            self.say(f"KUBECONFIG={self.cp.kubeconfig}")
            cli = f"cardano-forge --kubeconfig {self.cp.kubeconfig}"
            self.say(f"try: {cli} -A status; kubectl delete pod -n east <the forger> --force")
            while True:
                self.watch()
                self.sleep(0.5)


def _last(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
