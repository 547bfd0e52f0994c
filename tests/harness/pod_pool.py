"""The chart installed with ``helm`` for two regions of one pool on the single-node test cluster.

``PodPool(node, root)`` prepares and installs what an operator would, on real pods:

* namespaces ``east`` (priority 1) and ``west`` (priority 2), one release each (named like the
  namespace, which is also the region's name), meeting in the coordination namespace
  ``cardano-pool`` (the CardanoForgeCluster objects and the pool-wide Lease); east installs the
  CRD with its release, west creates its region's resource with its own;
* in each: the Secret ``cardano-secrets`` (test keys carrying a random marker, so key material
  can be searched for on the host) and the ConfigMap ``cardano-node-config``;
* the images of ``make images`` (``imagePullPolicy: Never``): the forge manager with forge-guard,
  the health endpoint, and the cardano-node stand-in as the node;
* a real Prometheus on the host, on the bridge address so that the health endpoint pods reach it,
  scraping every block producer pod's node and forge manager (targets from the API, written to
  ``file_sd`` files every second: Debian's Prometheus is built without Kubernetes discovery)
  and labelling each series with its region (``cluster``) and pod;
* per region a host directory mounted into the node containers (``extraVolumes``) where each
  stand-in appends its events (``STANDIN_EVENT_LOG``, one file per pod name): they survive
  container restarts and pod deletions, unlike the kubelet's log files; and the file of the
  region's tip lag (``--tip-lag-file``), which the tests write to make a region's nodes lag.

The stand-ins of all pods are named ``cardano-node``; events are told apart by ``host`` (the pod)
and ``instance`` (the process): ``forging_log.pod_process``.

Faults go through the kubelet's containers: processes are found on the host by their container's
cgroup (``cgroup.procs`` of ``<cgroup root>/kubepods/.../pod<uid>/<container id>``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.harness import oci
from tests.harness.controlplane import REPO_ROOT, tool
from tests.harness.forging_log import (
    Interval,
    Overlap,
    forging_at,
    intervals,
    overlaps,
    pod_process,
    read_events,
)
from tests.harness.node import BRIDGE_IP, CGROUP_ROOT, Node
from tests.harness.node_standin import now
from tests.harness.prometheus import PrometheusServer

CHART = REPO_ROOT / "charts" / "cardano-forge"
COORDINATION = "cardano-pool"
POOL = "POOL1"
STANDIN = "localhost/cardano-forge/node-standin"
FORGE_MANAGER = "ghcr.io/cardano-forge/forge-manager"
HEALTH_ENDPOINT = "ghcr.io/cardano-forge/health-endpoint"
UID = 10001
NODE_METRICS_PORT = 12798
MANAGER_PORT = 8000
SECRETS_DIR = "/opt/cardano/secrets"
CREDENTIAL_FILES = ("kes.skey", "vrf.skey", "node.cert")
#: The stand-in's "ledger replay": its socket (and peer port) come up this long after start.
STARTUP_DELAY_S = 2.0
#: How far behind the wall clock a region's tip is made to be for "unhealthy": above the
#: health endpoint's unhealthy threshold (HEALTH_SYNC_LAG), below the forge managers'
#: nodeSync.maxLagSlots (300), so the health check and not the node sync check moves the pool.
UNHEALTHY_LAG_SLOTS = 150
HEALTH_SYNC_LAG = {"degraded": 40, "unhealthy": 80}
HEALTH_INTERVAL_S = 5
HEALTH_TIMEOUT_S = 4
HEALTH_FAILURES = 2
#: Probes of the test bed: the chart's, quicker (a pod is Ready seconds after its node is up,
#: not tens of seconds; the tier rolls and recreates pods many times).
NODE_READINESS = {"initialDelaySeconds": 2, "periodSeconds": 2}
#: The sidecar's start-up allowance stays the chart's 3 minutes (a busy host has taken over a
#: minute to start the forge manager's Python), probed every second.
MANAGER_STARTUP = {"initialDelaySeconds": 2, "periodSeconds": 1, "failureThreshold": 180}
SCRAPE_INTERVAL = "2s"
KUBELET_POD_DIR = "kubelet/pods"
#: Scrape jobs and the pods' ports they scrape (the health endpoint's queries use the job names).
TARGET_PORTS = {"cardano-node": NODE_METRICS_PORT, "forge-manager": MANAGER_PORT}
DISCOVERY_INTERVAL_S = 1.0
#: The stand-in's own flags (node.extraArgs): its "ledger replay", the peer port the chart's
#: readiness probe connects to, metrics Prometheus can scrape, the region's tip lag file.
STANDIN_ARGS = [
    "--startup-delay", str(STARTUP_DELAY_S), "--open-peer-port",
    "--metrics-port", str(NODE_METRICS_PORT), "--metrics-host", "0.0.0.0",
    "--tip-lag-file", "/standin/tip-lag",
]  # fmt: skip


@dataclass(frozen=True)
class Region:
    name: str
    """Namespace, release and region (``clusterName``) at once."""
    priority: int

    @property
    def fullname(self) -> str:
        return f"{self.name}-cardano-forge"

    def pod(self, ordinal: int) -> str:
        return f"{self.fullname}-{ordinal}"


REGIONS = (Region("east", 1), Region("west", 2))


class PoolError(AssertionError):
    """A one-line account of what the pool did not do, with what the test saw."""


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise PoolError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def test_keys(marker: str) -> dict[str, str]:
    """Text envelopes as cardano-cli writes them; ``marker`` (hex) is in every cborHex."""
    kinds = {"kes.skey": "KesSigningKey_ed25519_kes_2^6", "vrf.skey": "VrfSigningKey_PraosVRF",
             "node.cert": "NodeOperationalCertificate"}  # fmt: skip
    return {
        name: json.dumps({"type": kind, "description": "test only", "cborHex": "5820" + marker})
        + "\n"
        for name, kind in kinds.items()
    }


@dataclass
class PodPool:
    node: Node
    root: Path
    """Host directory of this pool's state (under the node's root, removed with it)."""
    replicas: int = 2
    lease: dict[str, int] = field(default_factory=dict)
    """``forgeManager.lease`` overrides (default: the chart's 15/10/2)."""
    regions: tuple[Region, ...] = REGIONS
    marker: str = field(default_factory=lambda: secrets.token_hex(32))
    install_crd: bool = True
    """The first region's release installs the CRD (False: it is installed already, e.g. with
    kubectl, and the releases leave it alone)."""
    prometheus: PrometheusServer | None = None
    installed_at: float = 0.0
    """CLOCK_BOOTTIME just before the first ``helm install``."""
    killed: list[dict[str, Any]] = field(default_factory=list)
    """``killed`` events this harness wrote for stand-ins it SIGKILLed."""
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _discovery: threading.Thread | None = field(default=None, repr=False)
    _log_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ---- set-up ----------------------------------------------------------------------------------
    @property
    def helm_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HELM_CONFIG_HOME": str(self.root / "helm" / "config"),
            "HELM_CACHE_HOME": str(self.root / "helm" / "cache"),
            "HELM_DATA_HOME": str(self.root / "helm" / "data"),
        }

    def helm(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [tool("helm"), *args, "--kubeconfig", str(self.node.kubeconfig)],
            capture_output=True, text=True, timeout=timeout, env=self.helm_env, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise PoolError(f"helm {' '.join(args[:2])} failed: {result.stderr.strip()}")
        return result

    def region_dir(self, region: Region) -> Path:
        return self.root / "standin" / region.name

    def prepare(self) -> None:
        """Namespaces, Secrets, ConfigMaps, host directories and Prometheus (no release yet)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for region in self.regions:
            directory = self.region_dir(region)
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, UID, UID)  # the stand-ins append their events here
        names = [r.name for r in self.regions] + [COORDINATION]
        for name in names:
            self.node.create_namespace(name)
        with self.node.control_plane.api_client() as api:
            core = client.CoreV1Api(api)
            for region in self.regions:
                core.create_namespaced_secret(
                    region.name,
                    client.V1Secret(
                        metadata=client.V1ObjectMeta(name="cardano-secrets"),
                        string_data=test_keys(self.marker),
                    ),
                )
                core.create_namespaced_config_map(
                    region.name,
                    client.V1ConfigMap(
                        metadata=client.V1ObjectMeta(name="cardano-node-config"),
                        data={"config.json": "{}\n", "topology.json": "{}\n"},
                    ),
                )
        self.discover()
        self._discovery = threading.Thread(target=self._discovery_loop, daemon=True)
        self._discovery.start()
        self.prometheus = PrometheusServer(
            self.root / "prometheus",
            self.scrape_configs(),
            scrape_interval=SCRAPE_INTERVAL,
            host=BRIDGE_IP,
        ).start()

    def scrape_configs(self) -> list[dict[str, Any]]:
        """The pods' metrics ports from files that ``discover`` keeps current (Debian's
        Prometheus has no Kubernetes discovery); ``cluster`` is the region (the namespace),
        ``pod`` the pod."""
        return [
            {"job_name": job, "file_sd_configs": [{"files": [str(self.targets_file(job))],
                                                   "refresh_interval": "5s"}]}
            for job in TARGET_PORTS
        ]  # fmt: skip

    def targets_file(self, job: str) -> Path:
        return self.root / "prometheus" / f"{job}.targets.json"

    def discover(self) -> None:
        """Write the scrape targets of the pods that exist now (only when they changed)."""
        items: list[client.V1Pod] = []
        with self.core() as core:
            for region in self.regions:
                items += core.list_namespaced_pod(
                    region.name, label_selector="app.kubernetes.io/component=block-producer"
                ).items
        for job, port in TARGET_PORTS.items():
            targets = [
                {"targets": [f"{p.status.pod_ip}:{port}"],
                 "labels": {"cluster": p.metadata.namespace, "pod": p.metadata.name}}
                for p in sorted(items, key=lambda p: p.metadata.name)
                if p.status and p.status.pod_ip
            ]  # fmt: skip
            path = self.targets_file(job)
            text = json.dumps(targets, indent=1)
            with contextlib.suppress(FileNotFoundError):
                if path.read_text() == text:
                    continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)

    def _discovery_loop(self) -> None:
        while not self._stop.wait(DISCOVERY_INTERVAL_S):
            with contextlib.suppress(Exception):  # the API may be briefly away; try again
                self.discover()
            with contextlib.suppress(OSError):
                self.collect_logs()

    def collect_logs(self) -> None:
        """Copy what is new in the kubelet's container log files of this pool's namespaces to
        ``root/pod-logs`` (same layout): the kubelet removes a pod's logs with the pod, and keeps
        one previous instance per container only."""
        names = tuple(f"{r.name}_" for r in self.regions)
        with self._log_lock:
            for source in self.node.pod_logs_dir.glob("*/*/*.log"):
                if source.parent.parent.name.startswith(names):
                    self._copy_new(source)

    def _copy_new(self, source: Path) -> None:
        target = self.root / "pod-logs" / source.relative_to(self.node.pod_logs_dir)
        done = target.stat().st_size if target.exists() else 0
        with contextlib.suppress(FileNotFoundError), source.open("rb") as f:  # a removed pod
            f.seek(done)
            new = f.read()
            if new:
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("ab") as out:
                    out.write(new)

    def logs(self, pod_name: str, container: str) -> list[str]:
        """Every line the kubelet logged for a container of a pod (every pod of that name,
        every restart), as collected; the CRI prefix (time, stream, tag) kept."""
        self.collect_logs()
        lines: list[str] = []
        for region in self.regions:
            pattern = f"{region.name}_{pod_name}_*/{container}/*.log"
            for path in sorted(
                (self.root / "pod-logs").glob(pattern), key=lambda f: f.stat().st_mtime
            ):
                lines += path.read_text(errors="replace").splitlines()
        return lines

    def image(self, repository: str) -> tuple[str, str]:
        name = oci.image(repository).name
        repo, tag = name.rsplit(":", 1)
        return repo, tag

    def values(self, region: Region, *, first: bool) -> dict[str, Any]:
        """The release's values: the chart's defaults except what a test bed needs (the built
        images, small resources, the stand-in's flags and event log) and quick health checks."""
        assert self.prometheus is not None
        node_repo, node_tag = self.image(STANDIN)
        fm_repo, fm_tag = self.image(FORGE_MANAGER)
        he_repo, he_tag = self.image(HEALTH_ENDPOINT)
        return {
            "pool": {"name": POOL},
            "replicas": self.replicas,
            "crds": {"enabled": first and self.install_crd},
            "node": {
                "image": {"repository": node_repo, "tag": node_tag, "pullPolicy": "Never"},
                "version": "11.0.1",
                # The stand-in reads no configuration: the ConfigMap of prepare(), no genesis
                # download (the test bed has no network).
                "configMap": "cardano-node-config",
                "genesis": {"source": "none"},
                "extraArgs": STANDIN_ARGS,
                "resources": {
                    "requests": {"cpu": "10m", "memory": "32Mi"},
                    "limits": {"memory": "256Mi"},
                },
                "persistence": {"size": "1Gi"},
                "readinessProbe": NODE_READINESS,
            },
            "healthChecks": {"forgeManager": {"startupProbe": MANAGER_STARTUP}},
            "extraEnv": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "STANDIN_EVENT_LOG", "value": "/standin/$(POD_NAME).jsonl"},
            ],
            "extraVolumes": [
                {
                    "name": "standin",
                    "hostPath": {"path": str(self.region_dir(region)), "type": "Directory"},
                }
            ],
            "extraVolumeMounts": [{"name": "standin", "mountPath": "/standin"}],
            "forgeManager": {
                "image": {"repository": fm_repo, "tag": fm_tag, "pullPolicy": "Never"},
                "resources": {
                    "requests": {"cpu": "10m", "memory": "64Mi"},
                    "limits": {"memory": "192Mi"},
                },
                **({"lease": self.lease} if self.lease else {}),
                "clusterManagement": {
                    "enabled": True,
                    "clusterName": region.name,
                    "priority": region.priority,
                    "createResource": not first,
                    "healthCheck": {
                        "enabled": True,
                        "interval": HEALTH_INTERVAL_S,
                        "timeout": HEALTH_TIMEOUT_S,
                        "failureThreshold": HEALTH_FAILURES,
                    },
                    "coordination": {"namespace": COORDINATION},
                },
            },
            "healthEndpoint": {
                "enabled": True,
                "image": {"repository": he_repo, "tag": he_tag, "pullPolicy": "Never"},
                "prometheusUrl": self.prometheus.url,
                "network": "mainnet",
                "clusterLabel": "cluster",
                "cacheTTLSeconds": 1,
                "workers": 1,
                "checks": yaml.safe_dump(
                    {"checks": {"cardano_node": {"sync_lag": HEALTH_SYNC_LAG}}}
                ),
                "resources": {
                    "requests": {"cpu": "10m", "memory": "96Mi"},
                    "limits": {"memory": "256Mi"},
                },
            },
        }

    def values_file(self, region: Region, *, first: bool, **overrides: Any) -> Path:
        values = self.values(region, first=first)
        for key, value in overrides.items():
            values[key] = value
        path = self.root / f"{region.name}-values.yaml"
        path.write_text(yaml.safe_dump(values, sort_keys=False))
        return path

    def install(self) -> None:
        """``helm install`` of every region (the first installs the CRD)."""
        self.installed_at = now()
        for index, region in enumerate(self.regions):
            values = self.values_file(region, first=index == 0)
            self.helm("install", region.name, str(CHART), "-n", region.name, "-f", str(values))

    def upgrade(self, region: Region, **overrides: Any) -> None:
        values = self.values_file(region, first=region == self.regions[0], **overrides)
        self.helm("upgrade", region.name, str(CHART), "-n", region.name, "-f", str(values))

    def stop(self, *, uninstall: bool = True) -> None:
        """Uninstall what is left (unless the node goes anyway) and stop Prometheus (the node's
        teardown removes the rest)."""
        for region in self.regions if uninstall else ():
            self.helm("uninstall", region.name, "-n", region.name, "--wait", check=False)
        self._stop.set()
        if self.prometheus is not None:
            self.prometheus.stop()

    # ---- the API's view --------------------------------------------------------------------------
    @contextlib.contextmanager
    def core(self) -> Iterator[client.CoreV1Api]:
        with self.node.control_plane.api_client() as api:
            yield client.CoreV1Api(api)

    def pods(self, region: Region) -> list[client.V1Pod]:
        """The region's block producer pods (not the health endpoint's)."""
        with self.core() as core:
            items = core.list_namespaced_pod(
                region.name, label_selector=f"app.kubernetes.io/instance={region.name},"
                "app.kubernetes.io/component=block-producer",
            ).items  # fmt: skip
        return sorted(items, key=lambda p: p.metadata.name)

    def pod(self, region: Region, name: str) -> client.V1Pod | None:
        with self.core() as core:
            try:
                return core.read_namespaced_pod(name, region.name)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

    def region_of(self, pod_name: str) -> Region:
        for region in self.regions:
            if pod_name.startswith(region.fullname + "-"):
                return region
        raise LookupError(pod_name)

    @staticmethod
    def container_status(pod: client.V1Pod, container: str) -> Any:
        statuses = (pod.status.init_container_statuses or []) + (
            pod.status.container_statuses or []
        )
        for status in statuses:
            if status.name == container:
                return status
        return None

    def ready(self) -> bool:
        """Every StatefulSet and health endpoint Deployment at its replicas, all ready."""
        with self.node.control_plane.api_client() as api:
            apps = client.AppsV1Api(api)
            for region in self.regions:
                try:
                    sts = apps.read_namespaced_stateful_set(region.fullname, region.name)
                    dep = apps.read_namespaced_deployment(f"{region.fullname}-health", region.name)
                except ApiException as exc:
                    if exc.status == 404:
                        return False
                    raise
                status = sts.status
                if (
                    (status.ready_replicas or 0) != self.replicas
                    or (status.updated_replicas or 0) != self.replicas
                    or status.current_revision != status.update_revision
                ):
                    return False
                if (dep.status.ready_replicas or 0) < 1:
                    return False
        return True

    def wait_ready(self, timeout: float = 240) -> None:
        wait_for("every StatefulSet and health endpoint ready", self.ready, timeout, 1.0)

    # ---- the stand-ins' own record ---------------------------------------------------------------
    def event_files(self) -> list[Path]:
        files = [f for r in self.regions for f in sorted(self.region_dir(r).glob("*.jsonl"))]
        return [*files, self.root / "killed.jsonl"]

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.event_files())

    def spans(self) -> list[Interval]:
        return intervals(self.events(), key=pod_process)

    def forgers(self) -> list[str]:
        """Pods whose stand-in forges now (``host``, i.e. the pod's name)."""
        return [s.split("/", 1)[0] for s in forging_at(self.spans(), now())]

    def overlaps(self) -> list[Overlap]:
        return overlaps(self.spans(), until=now())

    def assert_never_two_forgers(self) -> None:
        found = self.overlaps()
        if found:
            worst = max(found, key=lambda o: o.seconds)
            raise PoolError(
                f"two nodes forged at once {len(found)} time(s), longest {worst.seconds:.3f} s "
                f"({worst.a} and {worst.b})"
            )

    def wait_one_forger(self, timeout: float = 120, *, not_in: tuple[str, ...] = ()) -> str:
        """Wait until exactly one stand-in forges (and it is not one of ``not_in``), and its
        forge manager reports forging; the pod's name."""

        def one() -> str | None:
            forgers = self.forgers()
            if len(forgers) != 1 or forgers[0] in not_in:
                return None
            metrics = self.manager_metrics(forgers[0])
            return forgers[0] if metrics.get("cardano_forging_enabled") == 1 else None

        found: str = wait_for(f"exactly one forging node (not in {not_in})", one, timeout)
        return found

    def forging_started(self, pod_name: str, after: float) -> list[dict[str, Any]]:
        return [
            e for e in self.events()
            if e["host"] == pod_name and e["event"] == "forging_started" and e["t"] > after
        ]  # fmt: skip

    def set_tip_lag(self, region: Region, slots: int | None) -> None:
        """Make every stand-in of ``region`` report a tip ``slots`` behind (None: no file, 0)."""
        path = self.region_dir(region) / "tip-lag"
        if slots is None:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{slots}\n")
        tmp.chmod(0o644)
        tmp.replace(path)

    # ---- the forge managers' view ----------------------------------------------------------------
    def pod_ip(self, pod_name: str) -> str | None:
        pod = self.pod(self.region_of(pod_name), pod_name)
        return pod.status.pod_ip if pod is not None and pod.status else None

    def manager_get(self, pod_name: str, path: str, timeout: float = 2) -> tuple[int, str]:
        """GET ``path`` of a forge manager from the host (pod IPs are on the bridge)."""
        ip = self.pod_ip(pod_name)
        if not ip:
            return 0, ""
        try:
            with urllib.request.urlopen(f"http://{ip}:{MANAGER_PORT}{path}", timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def manager_metrics(self, pod_name: str) -> dict[str, float]:
        """The forge manager's own samples, by name (labels dropped: one series each)."""
        status, text = self.manager_get(pod_name, "/metrics")
        out: dict[str, float] = {}
        if status != 200:
            return out
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name_labels, _, value = line.rpartition(" ")
            name = name_labels.split("{", 1)[0]
            with contextlib.suppress(ValueError):
                out.setdefault(name, float(value))
        return out

    # ---- processes on the host -------------------------------------------------------------------
    def container_pids(self, pod: client.V1Pod, container: str) -> list[int]:
        """Host PIDs of the processes of one running container (from its cgroup)."""
        status = self.container_status(pod, container)
        if status is None or not status.container_id or status.state.running is None:
            return []
        container_id = status.container_id.split("://", 1)[1]
        uid = pod.metadata.uid
        for qos in ("", "burstable/", "besteffort/"):
            procs = Path(
                f"/sys/fs/cgroup/pids/{CGROUP_ROOT}/kubepods/{qos}pod{uid}/{container_id}"
                "/cgroup.procs"
            )
            with contextlib.suppress(FileNotFoundError):
                return [int(p) for p in procs.read_text().split()]
        return []

    def process_of(self, pod: client.V1Pod, container: str, comm: str) -> int:
        """The host PID of the process named ``comm`` in a container."""
        for pid in self.container_pids(pod, container):
            with contextlib.suppress(FileNotFoundError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                    return pid
        raise PoolError(f"no process {comm} in {pod.metadata.name}/{container}")

    def kill_node_process(self, pod: client.V1Pod) -> dict[str, Any]:
        """SIGKILL the pod's cardano-node (stand-in) process, wait until it is gone, and record
        a ``killed`` event for it (it cannot write one itself); the event."""
        pid = self.process_of(pod, "cardano-node", "cardano-node")
        ns_pid = int(_status_field(pid, "NSpid").split()[-1])
        name = pod.metadata.name
        started = [
            e for e in self.events()
            if e["host"] == name and e["pid"] == ns_pid and e["event"] == "started"
        ]  # fmt: skip
        if not started:
            raise PoolError(f"{name}: no 'started' event of the stand-in PID {ns_pid}")
        os.kill(pid, signal.SIGKILL)
        wait_for(f"PID {pid} gone", lambda: not _alive(pid), 10, 0.05)
        event = {"t": now(), "pid": ns_pid, "name": "cardano-node", "host": name,
                 "instance": started[-1]["instance"], "event": "killed"}  # fmt: skip
        with (self.root / "killed.jsonl").open("a") as out:
            out.write(json.dumps(event) + "\n")
        self.killed.append(event)
        return event

    def kill_manager(self, pod: client.V1Pod) -> int:
        """SIGKILL the forge manager (the native sidecar's process); its host PID."""
        pid = self.process_of(pod, "forge-manager", "forge-manager")
        os.kill(pid, signal.SIGKILL)
        wait_for(f"PID {pid} gone", lambda: not _alive(pid), 10, 0.05)
        return pid

    def permit_deadline(self, pod: client.V1Pod) -> float | None:
        """The forge permit's deadline (CLOCK_BOOTTIME seconds), read from the pod's memory
        volume on the host; None without a permit."""
        path = self.memory_volume(pod, "run") / "permit"
        try:
            kind, ns, _boot = path.read_text().split()
        except (FileNotFoundError, ValueError):
            return None
        return int(ns) / 1e9 if kind == "boottime" else None

    def memory_volume(self, pod: client.V1Pod, volume: str) -> Path:
        """Where the kubelet mounts a pod's emptyDir on the host."""
        return (
            self.node.root / KUBELET_POD_DIR / pod.metadata.uid / "volumes"
            / "kubernetes.io~empty-dir" / volume
        )  # fmt: skip

    def credential_files_on_host(self, pod: client.V1Pod) -> list[str]:
        """The credential files in the pod's memory volume, listed from the host."""
        directory = self.memory_volume(pod, "credentials")
        with contextlib.suppress(FileNotFoundError):
            return sorted(p.name for p in directory.iterdir())
        return []

    def writable_places(self) -> list[Path]:
        """Where anything a pod writes can land on the host's disk: the volumes (PVs), the
        kubelet's pod directories (emptyDirs on disk), the container logs, this pool's host
        directories and the containers' writable layers (overlay upper dirs). The image layers
        are left out: built before this run's random key marker existed."""
        root = self.node.root
        places = [self.node.volumes_dir, root / KUBELET_POD_DIR, self.node.pod_logs_dir, self.root]
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if fields[2] == "overlay" and fields[1].startswith(str(root)):
                for option in fields[3].split(","):
                    if option.startswith("upperdir="):
                        places.append(Path(option.removeprefix("upperdir=")))
        return places

    def files_with_key_material(self) -> list[Path]:
        """Files holding the test keys' marker in ``writable_places``, outside memory-backed
        mounts (tmpfs: the credential and Secret volumes, where keys belong)."""
        tmpfs = {
            Path(fields[1])
            for fields in (line.split() for line in Path("/proc/mounts").read_text().splitlines())
            if fields[2] in ("tmpfs", "ramfs")
        }
        needle = self.marker.encode()
        found: list[Path] = []
        for top in self.writable_places():
            found += _files_holding(top, needle, tmpfs)
        return found


def _files_holding(top: Path, needle: bytes, skip: set[Path]) -> list[Path]:
    """Regular files under ``top`` (not below ``skip``) that contain ``needle``."""
    found: list[Path] = []
    for directory, dirs, files in os.walk(top):
        here = Path(directory)
        dirs[:] = [d for d in dirs if here / d not in skip]
        for name in files:
            path = here / name
            with contextlib.suppress(OSError):
                # Regular files only: a root filesystem may hold /dev/zero and the like.
                if stat.S_ISREG(path.lstat().st_mode) and _holds(path, needle):
                    found.append(path)
    return found


def _holds(path: Path, needle: bytes, chunk: int = 1 << 20) -> bool:
    """Whether the file contains ``needle``, read in bounded chunks."""
    tail = b""
    with path.open("rb") as f:
        while block := f.read(chunk):
            if needle in tail + block:
                return True
            tail = block[-len(needle) :]
    return False


def _status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise PoolError(f"/proc/{pid}/status has no {name}")


def _alive(pid: int) -> bool:
    try:
        state = _status_field(pid, "State")
    except (FileNotFoundError, ProcessLookupError, PoolError):
        return False
    return not state.startswith("Z")
