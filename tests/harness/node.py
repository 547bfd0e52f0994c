"""A real single Kubernetes node on the local control plane: pods run as containers.

``Node(control_plane, root).start()`` adds to a running ``ControlPlane`` (any ports):

* a second kube-apiserver on the bridge address ``10.244.0.1`` (same port number), so pods reach
  the API through the ``kubernetes`` Service (``ControlPlane.start_bridge_apiserver``);
* kube-controller-manager and kube-scheduler (no leader election, node CIDR allocation on);
* containerd with its own config, root, state and socket under ``root`` (runc, cgroupfs,
  ``restrict_oom_score_adj``), the CNI bridge ``cfnode0`` (10.244.0.0/24, host-local IPAM);
* the kubelet (node name ``localhost``, so the API server dials it on 127.0.0.1; node IP on the
  bridge; anonymous access to its API because the API server has no kubelet client certificate),
  kube-proxy (nftables mode), CoreDNS as a host process on ``10.244.0.1:53`` behind the
  ``kube-dns`` Service (10.96.0.10), and a provisioner of local volumes (``pv_provisioner``);
* the images: its own ``pause`` and ``nodeprobe`` images, and every archive that
  ``.images/images.json`` lists (``make images``).

CoreDNS runs on the host rather than as a pod: it is up before the first pod, needs no image and
no in-cluster API access, and a crashed pod network cannot take it down.

Only one node can exist per host (fixed bridge, CIDRs, cgroup root and host paths). Before it
changes anything, ``start`` records a snapshot of the host (sysctls, nf_tables, mounts, links,
cgroups, host paths; ``hoststate``) and the processes it starts in a journal under
``/run/cardano-forge-node``; ``stop`` (``make node-down``) reads that journal, drains the pods,
stops only the processes it recorded (PID plus start time plus binary), and puts the host back.
It is idempotent and works after a crash of the process that started the node.

Command line: ``python -m tests.harness.node up|down|status --cluster-dir .cluster``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness import hoststate
from tests.harness.controlplane import (
    BRIDGE_APISERVER,
    REPO_ROOT,
    SERVICE_CIDR,
    ControlPlane,
    ControlPlaneError,
    _pid_alive,
    _tail,
    b64_file,
    free_port,
    remove_tree,
    sign_leaf,
    tool,
)
from tests.harness.image_archive import ImageFile, ImageSpec, content_tag, write_docker_archive

NODE_NAME = "localhost"
BRIDGE = "cfnode0"
BRIDGE_IP = "10.244.0.1"
POD_CIDR = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
CGROUP_ROOT = "cardano-forge-node"
CNI_NETWORK = "cardano-forge-node"
#: Host-wide lock and journal: one node per host, and what it changed.
HOST_DIR = Path("/run/cardano-forge-node")
#: Paths outside the state directory that the kubelet, containerd and CNI write to (hard-coded
#: in them): removed by ``stop`` when they did not exist before, else their new entries.
HOST_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/containerd",
    "/etc/cni",
    "/opt/containerd",
    "/var/lib/containerd",
)
IMAGE_PREFIX = "localhost/cardano-forge-test"
READY_TIMEOUT_S = 180.0
DRAIN_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
#: Stop order (reverse of start): nothing re-creates pods once the first three are gone.
STOP_ORDER = (
    "pv-provisioner",
    "kube-controller-manager",
    "kube-scheduler",
    "coredns",
    "kube-proxy",
    "kubelet",
    "containerd",
    BRIDGE_APISERVER,
)
NODE_TOOLS = ("kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy", "coredns")


class NodeError(ControlPlaneError):
    """A one-line explanation of what is wrong and what to run."""


#: A unix socket's path is at most 107 bytes (sun_path is 108 with its NUL). The node puts its
#: sockets under its state directory; the longest is the kubelet's device-plugin socket.
SOCKET_PATH_MAX = 107
LONGEST_SOCKET = "kubelet/device-plugins/kubelet.sock"


def state_dir_problem(root: Path) -> str | None:
    """Why the node cannot use ``root`` as its state directory (its sockets would not fit), one
    line naming the fix, or None."""
    longest = len(str(root.resolve() / LONGEST_SOCKET).encode())
    if longest <= SOCKET_PATH_MAX:
        return None
    room = SOCKET_PATH_MAX - len(LONGEST_SOCKET) - 1
    return (
        f"the node's state directory {root} is too long for its unix sockets ({longest} bytes "
        f"with {LONGEST_SOCKET}, at most {SOCKET_PATH_MAX}): use a directory of at most {room} "
        "bytes"
    )


def ownership(state_dir: Path) -> hoststate.Ownership:
    return hoststate.Ownership(
        state_dir=str(state_dir.resolve()),
        cgroup_root=CGROUP_ROOT,
        bridge=BRIDGE,
        cni_network=CNI_NETWORK,
        host_paths=HOST_PATHS,
    )


# ---- processes -----------------------------------------------------------------------------------
def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


@dataclass(frozen=True)
class Recorded:
    """A process the node started: killed only if PID, start time and binary still match."""

    pid: int
    start: str
    binary: str

    def matches(self) -> bool:
        argv = _cmdline(self.pid)
        return (
            _pid_alive(self.pid)
            and _start_time(self.pid) == self.start
            and bool(argv)
            and Path(argv[0]).name == Path(self.binary).name
        )

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "start": self.start, "binary": self.binary}


def _kill(rec: Recorded, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout``, if ``rec`` is still that process; reaps it when
    this process is its parent (``proc``)."""
    try:
        if not rec.matches():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()
            if not rec.matches():
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, signal.SIGKILL)
    finally:
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


def _shims_of(address: str) -> list[int]:
    """containerd shims serving the node's containerd (found by their ``-address`` argument)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = _cmdline(int(entry.name))
        if argv and Path(argv[0]).name.startswith("containerd-shim") and address in argv:
            pids.append(int(entry.name))
    return pids


# ---- the host journal ----------------------------------------------------------------------------
@contextlib.contextmanager
def host_lock(timeout: float = 300.0) -> Iterator[None]:
    """Serialise node start and stop on this host (another start or stop waits)."""
    HOST_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (HOST_DIR / "lock").open("w") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise NodeError(
                        f"another node start or stop holds {HOST_DIR}/lock for over "
                        f"{timeout:.0f} s: wait for it or run 'make node-down'"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def journal_path() -> Path:
    return HOST_DIR / "journal.json"


def read_journal() -> dict[str, Any] | None:
    try:
        return dict(json.loads(journal_path().read_text()))
    except FileNotFoundError:
        return None


def write_journal(journal: dict[str, Any]) -> None:
    tmp = journal_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(journal))
    tmp.replace(journal_path())


def journal_is_live(journal: dict[str, Any]) -> bool:
    """True while the node is up or still starting.

    A node of ``make node-up`` (detached) lives while one of its processes does; a node of a
    test session lives while that session's process does: the processes of a session that was
    killed are orphans, and the next start cleans them up."""
    if Recorded(**journal["owner"]).matches():
        return True
    if not journal.get("detached", False):
        return False
    return any(Recorded(**p).matches() for p in journal.get("processes", {}).values())


# ---- teardown (also the crash recovery) ----------------------------------------------------------
def teardown(
    journal: dict[str, Any],
    say: Callable[[str], None],
    children: dict[str, subprocess.Popen[bytes]] | None = None,
) -> list[str]:
    """Stop what the journal recorded and put the host back; the problems left, one line each."""
    children = children or {}
    problems: list[str] = []
    state_dir = Path(journal["state_dir"])
    own = ownership(state_dir)
    before = hoststate.Snapshot.from_json(journal["snapshot"])
    procs = {name: Recorded(**p) for name, p in journal.get("processes", {}).items()}

    def stop(name: str) -> None:
        if name in procs:
            _kill(procs[name], children.get(name), STOP_TIMEOUT_S)

    for name in ("pv-provisioner", "kube-controller-manager", "kube-scheduler"):
        stop(name)
    if "kubelet" in procs and procs["kubelet"].matches():
        problems += _drain(journal, say)
    for name in STOP_ORDER[3:]:
        stop(name)
    cp_dir = journal.get("control_plane_dir")
    if cp_dir and (Path(cp_dir) / "state.json").exists():
        with contextlib.suppress(OSError, KeyError, ValueError):
            ControlPlane.load(Path(cp_dir)).stop_bridge_apiserver()
    address = journal.get("containerd_address", "")
    leftovers = _shims_of(address) if address else []
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if leftovers:
        say(f"killed {len(leftovers)} containerd shim(s) of the node")
    # Container processes are in the node's cgroups: kill them, then remove the cgroups.
    cgroups = hoststate.owned_cgroups(hoststate.read_cgroups(), own)
    for _ in range(50):
        if not hoststate.kill_cgroup_processes(cgroups):
            break
        time.sleep(0.1)
    for point in hoststate.plan_mounts(before.mounts, hoststate.read_mounts(), own):
        result = subprocess.run(["umount", point], capture_output=True, text=True)
        if result.returncode != 0:
            result = subprocess.run(["umount", "-l", point], capture_output=True, text=True)
            if result.returncode != 0:
                problems.append(f"umount {point}: {result.stderr.strip()}")
    for d in hoststate.owned_cgroups(hoststate.read_cgroups(), own):
        for _ in range(30):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if not hoststate.kill_cgroup_processes([d]):
                    problems.append(f"rmdir {d}: {exc.strerror}")
                    break
                time.sleep(0.1)
    cni_chains = hoststate.read_cni_chains(own.cni_marker)
    for cmd in hoststate.plan_nft(before.nft, hoststate.read_nft(), cni_chains):
        result = subprocess.run(["nft", *cmd], capture_output=True, text=True)
        if result.returncode != 0:
            problems.append(f"nft {' '.join(cmd)}: {result.stderr.strip()}")
    for link in hoststate.plan_links(hoststate.read_links(), own):
        result = subprocess.run(["ip", "link", "del", link], capture_output=True, text=True)
        if result.returncode != 0 and "Cannot find" not in result.stderr:
            problems.append(f"ip link del {link}: {result.stderr.strip()}")
    changed = hoststate.plan_sysctls(before.sysctls, hoststate.read_sysctls())
    for key, value in changed:
        try:
            hoststate.write_sysctl(key, value)
        except OSError as exc:
            problems.append(f"sysctl {key}={value}: {exc.strerror}")
    if changed:
        say("sysctls restored: " + ", ".join(f"{k.replace('/', '.')}={v}" for k, v in changed))
    for path in hoststate.plan_paths(before.paths, hoststate.read_paths(own.host_paths)):
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                remove_tree(Path(path))
            else:
                os.unlink(path)
        except (OSError, ControlPlaneError) as exc:
            problems.append(f"remove {path}: {exc}")
    return problems


def _drain(journal: dict[str, Any], say: Callable[[str], None]) -> list[str]:
    """Delete every pod while the kubelet runs, so it tears them down (CNI, mounts, cgroups),
    and wait until containerd runs no task; the rest is cleaned up by force afterwards."""
    kubeconfig = Path(journal["kubeconfig"])
    if not kubeconfig.exists():
        return []
    try:
        from kubernetes import client, config  # noqa: PLC0415

        api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        with api:
            core = client.CoreV1Api(api)
            pods = core.list_pod_for_all_namespaces(_request_timeout=10).items
            for pod in pods:
                meta: Any = pod.metadata
                with contextlib.suppress(client.exceptions.ApiException):
                    core.delete_namespaced_pod(meta.name, meta.namespace, grace_period_seconds=0)
            with contextlib.suppress(client.exceptions.ApiException):
                core.delete_node(journal["node_name"])
    except Exception as exc:  # the API may be gone (control plane stopped first)
        say(f"could not drain through the API ({type(exc).__name__}); cleaning up by force")
        return []
    ctr = [tool("ctr"), "--address", journal["containerd_address"], "-n", "k8s.io"]
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        out = subprocess.run([*ctr, "tasks", "ls", "-q"], capture_output=True, text=True)
        if out.returncode != 0 or not out.stdout.strip():
            say(f"drained {len(pods)} pod(s)")
            return []
        time.sleep(0.5)
    say(f"pods still running after {DRAIN_TIMEOUT_S:.0f} s; cleaning up by force")
    return []


def down(say: Callable[[str], None] = print) -> bool:
    """Stop the node recorded on this host (if any) and restore the host; False if none."""
    if read_journal() is None:
        return False
    if os.geteuid() != 0:
        raise NodeError(
            "stopping the test node changes host settings: run 'make node-down' as root"
        )
    with host_lock():
        journal = read_journal()
        if journal is None:
            return False
        problems = teardown(journal, say)
        if problems:
            raise NodeError(
                f"{len(problems)} host change(s) could not be undone (first: {problems[0]}); "
                f"the journal {journal_path()} is kept: fix that and run 'make node-down' again"
            )
        journal_path().unlink()
        state_dir = Path(journal["state_dir"])
        if journal.get("remove_state_dir", True):
            remove_tree(state_dir)
    return True


# ---- the node ------------------------------------------------------------------------------------
@dataclass
class Node:
    """One kubelet-backed node on ``control_plane``, with its state under ``root``."""

    control_plane: ControlPlane
    root: Path
    images_dir: Path = REPO_ROOT / ".images"
    say: Callable[[str], None] = field(default=lambda _line: None, repr=False)
    #: True for ``make node-up``: the processes outlive the Python process that started them.
    detached: bool = False
    name: str = NODE_NAME
    ports: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    loaded_images: list[str] = field(default_factory=list)
    _journal: dict[str, Any] = field(default_factory=dict, repr=False)
    _children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    # ---- paths -----------------------------------------------------------------------------------
    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig of the control plane."""
        return self.control_plane.kubeconfig

    @property
    def pod_logs_dir(self) -> Path:
        """Where the kubelet writes container logs: ``<ns>_<pod>_<uid>/<container>/<n>.log``."""
        return self.root / "pod-logs"

    @property
    def containerd_address(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def volumes_dir(self) -> Path:
        return self.root / "volumes"

    def log(self, component: str) -> Path:
        return self.root / "logs" / f"{component}.log"

    @property
    def pids(self) -> dict[str, int]:
        """PIDs of the processes the node started, by component."""
        return {name: int(p["pid"]) for name, p in self._journal.get("processes", {}).items()}

    @property
    def host_snapshot(self) -> hoststate.Snapshot:
        """The host as it was before this node started (what ``stop`` restores)."""
        return hoststate.Snapshot.from_json(self._journal["snapshot"])

    @property
    def pause_image(self) -> str:
        return self._image_name("pause")

    @property
    def probe_image(self) -> str:
        """The smoke tests' image: ``/nodeprobe`` (see tests/harness/nodeprobe) and ``/hupwait``."""
        return self._image_name("nodeprobe")

    def _image_name(self, binary: str) -> str:
        return f"{IMAGE_PREFIX}/{binary}:{content_tag(Path(tool(binary)))}"

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Bring the node up and wait until it is Ready, DNS answers and the default
        ServiceAccount exists. On failure everything is stopped again and the error names the
        component, with its log tail."""
        started = time.monotonic()
        binaries = self._check_prerequisites()
        with host_lock():
            existing = read_journal()
            if existing is not None:
                if journal_is_live(existing):
                    raise NodeError(
                        f"a test node is already up on this host (state in "
                        f"{existing['state_dir']}); only one can run at a time: stop it with "
                        "'make node-down' (or end the test session that started it)"
                    )
                self.say("a node that is no longer running left host changes: restoring them")
                problems = teardown(existing, self.say)
                if problems:
                    raise NodeError(
                        f"could not undo a crashed node's host changes ({problems[0]}): "
                        "fix that and run 'make node-down'"
                    )
                journal_path().unlink()
            self._precheck_host()
            self.root.mkdir(parents=True, exist_ok=True)
            self.root = self.root.resolve()
            own = ownership(self.root)
            me = os.getpid()
            self._journal = {
                "version": 1,
                "state_dir": str(self.root),
                "owner": Recorded(me, _start_time(me), _cmdline(me)[0]).to_json(),
                "control_plane_dir": str(self.control_plane.root.resolve()),
                "kubeconfig": str(self.kubeconfig.resolve()),
                "node_name": self.name,
                "containerd_address": str(self.containerd_address),
                "remove_state_dir": True,
                "detached": self.detached,
                "snapshot": hoststate.take(own).to_json(),
                "processes": {},
            }
            write_journal(self._journal)
        try:
            self._bring_up(binaries)
        except BaseException:
            with host_lock():
                problems = teardown(self._journal, self.say, self._children)
                if not problems:
                    journal_path().unlink(missing_ok=True)
            raise
        self.timings["up_s"] = time.monotonic() - started

    def stop(self, *, remove: bool = True) -> None:
        """Stop everything the node started and put the host back (idempotent)."""
        self.control_plane.stop_bridge_apiserver()
        with host_lock():
            journal = read_journal()
            if journal is None or journal["state_dir"] != str(self.root):
                return
            problems = teardown(journal, self.say, self._children)
            if problems:
                raise NodeError(
                    f"{len(problems)} host change(s) could not be undone (first: {problems[0]}); "
                    f"the journal {journal_path()} is kept: run 'make node-down' again"
                )
            journal_path().unlink()
        self._children.clear()
        if remove:
            remove_tree(self.root)

    # ---- checks ----------------------------------------------------------------------------------
    def _check_prerequisites(self) -> dict[str, str]:
        problem = state_dir_problem(self.root)
        if problem is not None:
            raise NodeError(problem)
        if os.geteuid() != 0:
            raise NodeError(
                "the test node runs containers and changes host settings: run it as root "
                "(sudo make node-up)"
            )
        binaries = {}
        for name in (*NODE_TOOLS, "containerd", "containerd-shim-runc-v2", "ctr", "runc"):
            try:
                binaries[name] = tool(name)
            except ControlPlaneError:
                raise NodeError(
                    f"{name} not found in .tools/bin or on PATH: run 'make node-tools'"
                ) from None
        for name in ("pause", "nodeprobe"):
            if not (REPO_ROOT / ".tools" / "bin" / name).exists():
                raise NodeError(f"{name} not found in .tools/bin: run 'make node-tools'")
        for cmd, package in (("nft", "nftables"), ("iptables", "iptables"), ("ip", "iproute2")):
            if shutil.which(cmd) is None:
                raise NodeError(f"{cmd} not found: run 'apt-get install {package}'")
        for plugin in ("bridge", "host-local", "loopback"):
            if not Path("/usr/lib/cni", plugin).exists():
                raise NodeError(
                    f"CNI plugin /usr/lib/cni/{plugin} missing: "
                    "run 'apt-get install containernetworking-plugins'"
                )
        controllers = _cgroup_controllers()
        missing = [c for c in ("cpu", "memory", "pids", "cpuset") if c not in controllers]
        if missing:
            raise NodeError(
                f"cgroup controller(s) {', '.join(missing)} not available: the kubelet needs "
                "them; mount them (cgroup v1 or v2 with those controllers enabled)"
            )
        if not self.control_plane.is_ready():
            raise NodeError(
                f"the control plane at {self.control_plane.url} is not ready: "
                "run 'make cluster-up' first"
            )
        return binaries

    def _precheck_host(self) -> None:
        links = {link["name"] for link in hoststate.read_links()}
        if BRIDGE in links:
            raise NodeError(
                f"network link {BRIDGE} exists but no node is recorded: "
                f"run 'ip link del {BRIDGE}' (a leftover) and try again"
            )
        routes = subprocess.run(["ip", "-j", "route"], capture_output=True, text=True).stdout
        for route in json.loads(routes or "[]"):
            dst = str(route.get("dst", ""))
            if dst.startswith(("10.244.", "10.96.")):
                raise NodeError(
                    f"the host already routes {dst} (dev {route.get('dev')}): the test node "
                    f"needs {CLUSTER_CIDR} and {SERVICE_CIDR}; remove that route first"
                )
        for point in hoststate.cgroup_mounts():
            if (Path(point) / CGROUP_ROOT).exists():
                raise NodeError(
                    f"cgroup {point}/{CGROUP_ROOT} exists but no node is recorded: remove it "
                    f"('rmdir' its directories, deepest first) and try again"
                )

    # ---- bring-up --------------------------------------------------------------------------------
    def _bring_up(self, binaries: dict[str, str]) -> None:
        t0 = time.monotonic()
        for sub in ("logs", "pki", "kubelet", "containerd", "cni/net.d", "cni/ipam", "pod-logs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._make_identities()
        self._make_bridge()
        self.say(f"bridge {BRIDGE} {BRIDGE_IP}/24; starting the bridge API server")
        self.control_plane.start_bridge_apiserver(BRIDGE_IP)
        self._record(BRIDGE_APISERVER, self.control_plane.pids[BRIDGE_APISERVER], "kube-apiserver")
        self.timings["bridge_apiserver_s"] = time.monotonic() - t0
        self._apply_cluster_objects()
        self._make_cgroup_root()
        for name in (
            "kubelet",
            "kubelet-healthz",
            "kcm",
            "scheduler",
            "proxy-healthz",
            "proxy-metrics",
            "dns-health",
            "dns-ready",
        ):
            self.ports[name] = free_port()
        self._spawn("containerd", binaries["containerd"], self._containerd_args())
        self._wait_containerd()
        self.timings["containerd_s"] = time.monotonic() - t0
        self._load_own_images()
        self.load_images_from(self.images_dir)
        self.timings["images_s"] = time.monotonic() - t0
        self._spawn(
            "kube-controller-manager", binaries["kube-controller-manager"], self._kcm_args()
        )
        self._spawn("kube-scheduler", binaries["kube-scheduler"], self._scheduler_args())
        self._spawn("kubelet", binaries["kubelet"], self._kubelet_args())
        self._spawn("kube-proxy", binaries["kube-proxy"], self._proxy_args())
        self._spawn("coredns", binaries["coredns"], self._coredns_args())
        self._spawn("pv-provisioner", sys.executable, self._provisioner_args())
        self._wait_ready()
        self.timings["ready_s"] = time.monotonic() - t0

    def _record(self, name: str, pid: int, binary: str) -> None:
        self._journal["processes"][name] = Recorded(pid, _start_time(pid), binary).to_json()
        write_journal(self._journal)

    def _spawn(self, name: str, binary: str, args: list[str]) -> None:
        logf = self.log(name).open("ab")
        proc = subprocess.Popen(
            [binary, *args],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.root if name != "pv-provisioner" else REPO_ROOT,
        )
        logf.close()
        self._children[name] = proc
        self._record(name, proc.pid, binary)

    def _check_alive(self, name: str) -> None:
        proc = self._children.get(name)
        if proc is not None and proc.poll() is not None:
            raise NodeError(
                f"{name} exited ({proc.returncode}) during start-up; its log "
                f"{self.log(name)} ends:\n{_tail(self.log(name))}"
            )

    # ---- identities ------------------------------------------------------------------------------
    def _make_identities(self) -> None:
        cp_pki = self.control_plane.pki
        users = {
            "kubelet": f"/O=system:nodes/CN=system:node:{self.name}",
            "kube-controller-manager": "/CN=system:kube-controller-manager",
            "kube-scheduler": "/CN=system:kube-scheduler",
            "kube-proxy": "/CN=system:kube-proxy",
            "coredns": "/CN=cardano-forge:coredns",
        }
        for user, subject in users.items():
            sign_leaf(cp_pki, user, subject, "extendedKeyUsage=clientAuth\n", out_dir=self.pki)
            self.control_plane.write_kubeconfig(
                self.pki / f"{user}.kubeconfig",
                user={
                    "client-certificate-data": b64_file(self.pki / f"{user}.crt"),
                    "client-key-data": b64_file(self.pki / f"{user}.key"),
                },
                user_name=user,
            )

    def _kubeconfig_of(self, user: str) -> Path:
        return self.pki / f"{user}.kubeconfig"

    # ---- host network and cgroups ----------------------------------------------------------------
    def _make_bridge(self) -> None:
        for cmd in (
            ["ip", "link", "add", BRIDGE, "type", "bridge"],
            ["ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE],
            ["ip", "link", "set", BRIDGE, "up"],
        ):
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise NodeError(f"{' '.join(cmd)} failed: {result.stderr.strip()}")

    def _make_cgroup_root(self) -> None:
        for point in hoststate.cgroup_mounts():
            path = Path(point) / CGROUP_ROOT
            path.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):  # v1 cpuset starts empty: inherit
                parent = Path(point) / name
                if parent.exists() and not (path / name).read_text().strip():
                    (path / name).write_text(parent.read_text())

    # ---- cluster objects -------------------------------------------------------------------------
    def _apply_cluster_objects(self) -> None:
        from kubernetes import client, utils  # noqa: PLC0415
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        from tests.harness.pv_provisioner import storage_class  # noqa: PLC0415

        objects: list[dict[str, Any]] = [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "cardano-forge-test:nodes"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "system:node",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Group",
                        "name": "system:nodes",
                    }
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "cardano-forge-test:coredns"},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["endpoints", "services", "pods", "namespaces"],
                        "verbs": ["list", "watch"],
                    },
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": ["list", "watch"],
                    },
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "cardano-forge-test:coredns"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cardano-forge-test:coredns",
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "User",
                        "name": "cardano-forge:coredns",
                    }
                ],
            },
            storage_class(),
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "kube-dns",
                    "namespace": "kube-system",
                    "labels": {"k8s-app": "kube-dns"},
                },
                "spec": {
                    "clusterIP": DNS_IP,
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP"},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                    ],
                },
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "kube-dns-host",
                    "namespace": "kube-system",
                    "labels": {
                        "kubernetes.io/service-name": "kube-dns",
                        "endpointslice.kubernetes.io/managed-by": "cardano-forge.test",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [BRIDGE_IP], "conditions": {"ready": True}}],
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        ]
        with self.control_plane.api_client() as api:
            core = client.CoreV1Api(api)
            for obj in objects:
                if obj["kind"] == "Service":
                    # Its fixed ClusterIP makes a second create fail with 422, not 409.
                    try:
                        core.read_namespaced_service("kube-dns", "kube-system")
                        continue
                    except ApiException as exc:
                        if exc.status != 404:
                            raise
                try:
                    utils.create_from_dict(api, obj)  # type: ignore[no-untyped-call]
                except utils.FailToCreateError as exc:
                    if not all(
                        isinstance(e, ApiException) and e.status == 409 for e in exc.api_exceptions
                    ):
                        raise
            # A Node object left by an earlier run would keep its old podCIDR and conditions.
            with contextlib.suppress(ApiException):
                core.delete_node(self.name)

    # ---- containerd and images -------------------------------------------------------------------
    def _containerd_config(self) -> Path:
        state = self.root / "containerd"
        runc_root = self.root / "runc"
        config = f"""version = 2
root = "{state / "root"}"
state = "{state / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{self.containerd_address}"

[ttrpc]
  address = "{state / "ttrpc.sock"}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{state / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.pause_image}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{tool("runc")}"
        Root = "{runc_root}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{self.root / "cni" / "net.d"}"
    max_conf_num = 1
"""
        path = state / "config.toml"
        path.write_text(config)
        conflist = {
            "cniVersion": "0.4.0",
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": BRIDGE_IP}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.root / "cni" / "ipam"),
                    },
                }
            ],
        }
        (self.root / "cni" / "net.d" / "10-cardano-forge.conflist").write_text(
            json.dumps(conflist, indent=2)
        )
        return path

    def _containerd_args(self) -> list[str]:
        return ["--config", str(self._containerd_config()), "--log-level", "warn"]

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``ctr`` against the node's containerd in the CRI namespace ``k8s.io``."""
        return subprocess.run(
            [tool("ctr"), "--address", str(self.containerd_address), "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _wait_containerd(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self._check_alive("containerd")
            if self.containerd_address.exists() and self.ctr("version").returncode == 0:
                return
            time.sleep(0.2)
        raise NodeError(
            f"containerd did not answer within 30 s; log:\n{_tail(self.log('containerd'))}"
        )

    def import_image(self, archive: Path, name: str) -> None:
        """Load a docker-archive or OCI archive into the node; ``name`` must be in it."""
        result = self.ctr("images", "import", str(archive), timeout=600)
        if result.returncode != 0:
            raise NodeError(f"ctr images import {archive} failed: {result.stderr.strip()}")
        names = set(self.ctr("images", "ls", "-q").stdout.split())
        if name not in names and _normalized(name) not in names:
            # An OCI archive may name its manifest by tag only: give it the repository.
            base = _normalized(name).rsplit(":", 1)[0]
            self.ctr("images", "import", "--base-name", base, str(archive), timeout=600)
            names = set(self.ctr("images", "ls", "-q").stdout.split())
        if name not in names and _normalized(name) not in names:
            raise NodeError(
                f"{archive} did not provide the image {name} (it has: "
                f"{', '.join(sorted(names)) or 'none'}): rebuild it with 'make images'"
            )
        self.loaded_images.append(name)

    def _load_own_images(self) -> None:
        images = self.root / "images"
        for binary, files, entry in (
            ("pause", (ImageFile("/pause", Path(tool("pause"))),), ("/pause",)),
            (
                "nodeprobe",
                (
                    ImageFile("/nodeprobe", Path(tool("nodeprobe"))),
                    ImageFile("/hupwait", link_to="nodeprobe"),
                ),
                ("/nodeprobe",),
            ),
        ):
            name = self._image_name(binary)
            archive = images / f"{binary}.tar"
            write_docker_archive(ImageSpec(name=name, files=files, entrypoint=entry), archive)
            self.import_image(archive, name)

    def load_images_from(self, images_dir: Path) -> list[str]:
        """Load every archive ``images_dir/images.json`` lists (``make images``): a JSON list of
        ``{"name": ref, "archive": file name in images_dir, "bytes": size}``."""
        index = images_dir / "images.json"
        if not index.exists():
            self.say(f"no {index}: no project images loaded (run 'make images' to build them)")
            return []
        try:
            entries = json.loads(index.read_text())
            pairs = [(str(e["name"]), images_dir / str(e["archive"])) for e in entries]
        except (ValueError, KeyError, TypeError) as exc:
            raise NodeError(
                f"{index} is not a JSON list of {{name, archive, bytes}} ({exc}): "
                "run 'make images' again"
            ) from None
        loaded = []
        for name, archive in pairs:
            if not archive.exists():
                raise NodeError(
                    f"{index} lists {archive.name}, which is missing: run 'make images'"
                )
            self.import_image(archive, name)
            loaded.append(name)
        self.say(f"loaded {len(loaded)} image(s) from {index}")
        return loaded

    # ---- component arguments ---------------------------------------------------------------------
    def _auth_kubeconfig_args(self, user: str) -> list[str]:
        kc = self._kubeconfig_of(user)
        return [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
        ]

    def _kcm_args(self) -> list[str]:
        return [
            *self._auth_kubeconfig_args("kube-controller-manager"),
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['kcm']}",
            "--leader-elect=false",
            f"--root-ca-file={self.control_plane.pki / 'ca.crt'}",
            "--use-service-account-credentials=true",
            f"--cluster-cidr={CLUSTER_CIDR}",
            "--allocate-node-cidrs=true",
            "--node-cidr-mask-size=24",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--cert-dir={self.root / 'kcm-certs'}",
            "--v=1",
        ]

    def _scheduler_args(self) -> list[str]:
        return [
            *self._auth_kubeconfig_args("kube-scheduler"),
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['scheduler']}",
            "--leader-elect=false",
            f"--cert-dir={self.root / 'scheduler-certs'}",
            "--v=1",
        ]

    def _kubelet_args(self) -> list[str]:
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{CGROUP_ROOT}",
            # The API server dials the node by its Hostname address, "localhost": listen there.
            "address": "127.0.0.1",
            "port": self.ports["kubelet"],
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.ports["kubelet-healthz"],
            # The API server has no kubelet client certificate (exec, logs): anonymous access,
            # on loopback only.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "clusterDNS": [DNS_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "failSwapOn": False,
            "podLogsDir": str(self.pod_logs_dir),
            "containerRuntimeEndpoint": f"unix://{self.containerd_address}",
            "imageServiceEndpoint": f"unix://{self.containerd_address}",
            # Images are loaded, never pulled: never garbage-collect them, never evict for disk.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "serializeImagePulls": False,
            "rotateCertificates": False,
            "registerNode": True,
            "maxPods": 110,
            "staticPodPath": "",
        }
        path = self.root / "kubelet-config.json"
        path.write_text(json.dumps(config, indent=2))
        return [
            f"--config={path}",
            f"--kubeconfig={self._kubeconfig_of('kubelet')}",
            f"--root-dir={self.root / 'kubelet'}",
            f"--cert-dir={self.root / 'kubelet-pki'}",
            f"--node-ip={BRIDGE_IP}",
            f"--hostname-override={self.name}",
            "--v=1",
        ]

    def _proxy_args(self) -> list[str]:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "nftables",
            "clusterCIDR": CLUSTER_CIDR,
            "hostnameOverride": self.name,
            "healthzBindAddress": f"127.0.0.1:{self.ports['proxy-healthz']}",
            "metricsBindAddress": f"127.0.0.1:{self.ports['proxy-metrics']}",
            "nodePortAddresses": [f"{BRIDGE_IP}/32"],
            "clientConnection": {"kubeconfig": str(self._kubeconfig_of("kube-proxy"))},
            # 0: leave the host's conntrack limits and timeouts as they are.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        path = self.root / "kube-proxy-config.json"
        path.write_text(json.dumps(config, indent=2))
        return [f"--config={path}", "--v=1"]

    def _coredns_args(self) -> list[str]:
        corefile = f""".:53 {{
    bind {BRIDGE_IP}
    errors
    health 127.0.0.1:{self.ports["dns-health"]}
    ready 127.0.0.1:{self.ports["dns-ready"]}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self._kubeconfig_of("coredns")} coredns
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
"""
        path = self.root / "Corefile"
        path.write_text(corefile)
        return ["-conf", str(path)]

    def _provisioner_args(self) -> list[str]:
        return [
            "-m",
            "tests.harness.pv_provisioner",
            f"--kubeconfig={self.kubeconfig.resolve()}",
            f"--dir={self.volumes_dir}",
            f"--node-name={self.name}",
            f"--state-dir={self.root}",
        ]

    # ---- readiness -------------------------------------------------------------------------------
    def _wait_ready(self) -> None:
        from kubernetes import client  # noqa: PLC0415
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = "the node to register"
        with self.control_plane.api_client() as api:
            core = client.CoreV1Api(api)
            while time.monotonic() < deadline:
                for name in self._children:
                    self._check_alive(name)
                waiting = self._not_ready_reason(core, ApiException)
                if not waiting:
                    return
                time.sleep(0.5)
        component = waiting.split()[0]
        raise NodeError(
            f"node not ready within {READY_TIMEOUT_S:.0f} s, waiting for {waiting}; "
            f"see {self.log(component if component in self._children else 'kubelet')}"
        )

    def _not_ready_reason(self, core: Any, api_exception: type[Exception]) -> str:
        try:
            node = core.read_node(self.name)
        except api_exception:
            return "kubelet to register the node"
        conditions = {c.type: c.status for c in (node.status.conditions or [])}
        if conditions.get("Ready") != "True":
            return "kubelet to report the node Ready"
        if not node.spec.pod_cidr:
            return "kube-controller-manager to allocate the node's pod CIDR"
        if not _http_ok(f"http://127.0.0.1:{self.ports['dns-ready']}/ready"):
            return "coredns to become ready"
        if not _http_ok(f"http://127.0.0.1:{self.ports['proxy-healthz']}/healthz"):
            return "kube-proxy to sync its rules"
        try:
            core.read_namespaced_service_account("default", "default")
        except api_exception:
            return "kube-controller-manager to create the default ServiceAccount"
        return ""

    # ---- helpers for tests -----------------------------------------------------------------------
    def kubectl(
        self, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl as the admin; raises with stderr on failure when ``check``."""
        result = subprocess.run(
            [
                tool("kubectl"),
                f"--kubeconfig={self.kubeconfig}",
                f"--cache-dir={self.root / 'kubectl-cache'}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise NodeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def container_logs(self, namespace: str, pod: str, container: str) -> list[Path]:
        """The kubelet's log files of one container (one per restart, oldest first), read
        straight from the host."""
        dirs = sorted(self.pod_logs_dir.glob(f"{namespace}_{pod}_*/{container}"))
        files = [f for d in dirs for f in d.glob("*.log")]
        return sorted(files, key=lambda f: int(f.stem) if f.stem.isdigit() else -1)

    def create_namespace(self, name: str, timeout: float = 30) -> None:
        """Create a namespace and wait for its default ServiceAccount (pods need it)."""
        from kubernetes import client  # noqa: PLC0415
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        with self.control_plane.api_client() as api:
            core = client.CoreV1Api(api)
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
            deadline = time.monotonic() + timeout
            while True:
                try:
                    core.read_namespaced_service_account("default", name)
                    return
                except ApiException as exc:
                    if exc.status != 404 or time.monotonic() > deadline:
                        raise
                time.sleep(0.2)


def _normalized(name: str) -> str:
    """containerd's full reference of an image name (``foo:1`` is ``docker.io/library/foo:1``)."""
    first = name.split("/", 1)[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return name
    if "/" not in name:
        return f"docker.io/library/{name}"
    return f"docker.io/{name}"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _cgroup_controllers() -> set[str]:
    controllers: set[str] = set()
    for point in hoststate.cgroup_mounts():
        path = Path(point)
        if (path / "cgroup.controllers").exists():
            controllers |= set((path / "cgroup.controllers").read_text().split())
        else:
            controllers |= set(path.name.split(","))
    with contextlib.suppress(OSError):
        for line in Path("/proc/cgroups").read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 4 and parts[3] == "1" and parts[1] != "0":
                controllers.add(parts[0])
    return controllers


# ---- command line --------------------------------------------------------------------------------
def _cmd_up(args: argparse.Namespace) -> int:
    cluster = Path(args.cluster_dir).resolve()
    if not (cluster / "state.json").exists():
        raise NodeError(f"no control plane in {cluster}/: run 'make cluster-up' first")
    cp = ControlPlane.load(cluster)
    if not cp.running():
        raise NodeError(
            f"the control plane recorded in {cluster}/ is not running: "
            "run 'make cluster-down' and 'make cluster-up'"
        )
    journal = read_journal()
    if (
        journal is not None
        and journal_is_live(journal)
        and journal["state_dir"] == str((cluster / "node").resolve())
    ):
        print(f"node {journal['node_name']} already up (state in {journal['state_dir']})")
        return 0
    node = Node(control_plane=cp, root=cluster / "node", say=print, detached=True)
    node.start()
    print(
        f"node {node.name} Ready in {node.timings['up_s']:.1f} s (bridge API server up at "
        f"{node.timings['bridge_apiserver_s']:.1f} s, images loaded at "
        f"{node.timings['images_s']:.1f} s); pods get {POD_CIDR}, Services {SERVICE_CIDR}, "
        f"DNS {DNS_IP}; container logs in {node.pod_logs_dir}"
    )
    return 0


def _cmd_down(_args: argparse.Namespace) -> int:
    if down(say=print):
        print("node stopped; host settings restored")
    else:
        print("no test node recorded on this host; nothing to stop")
    return 0


def _cmd_status(_args: argparse.Namespace) -> int:
    journal = read_journal()
    if journal is None:
        print("no test node")
        return 1
    live = journal_is_live(journal)
    procs = {
        n: ("up" if Recorded(**p).matches() else "DOWN") for n, p in journal["processes"].items()
    }
    print(f"node {journal['node_name']} ({'up' if live else 'crashed'}) in {journal['state_dir']}")
    print(f"processes: {procs}")
    return 0 if live else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="node", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status"):
        sub.add_parser(name).add_argument("--cluster-dir", default=".cluster")
    args = parser.parse_args(argv)
    handler = {"up": _cmd_up, "down": _cmd_down, "status": _cmd_status}[args.command]
    try:
        return handler(args)
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
