"""A "pod" as local processes: one forge manager and one cardano-node stand-in in a temp dir.

The pod directory holds what the real pod's volumes would: ``secrets/`` (the emptyDir the manager
writes the credentials into), ``ipc/node.socket``, the event log of the stand-in and the
manager's log. The mounted Secret is a directory shared by all pods of a pool.

Like a pod with a native sidecar, :meth:`ForgePod.start` starts the manager, waits until its
``/startup-status`` answers 200, then starts the node. Every wait is bounded.

With ``guard=True`` the node runs as the child of ``forge-guard`` (``services/forge-guard``, built
by ``make tools``), as in the chart's node container, and the manager writes the forge permit to
``run/permit`` (the shared emptyDir of the chart): ``node`` is then the guard's process and
:meth:`ForgePod.node_pid` the stand-in's. Faults a test can inject: kill -9 of the whole pod, of
the node (with the guard, the container ends with it) or of the manager alone, SIGSTOP/SIGCONT of
the manager, a restart of either container (kubelet restarting it), and a node whose tip lags
behind the chain (:meth:`ForgePod.set_tip_lag`): the stand-in serves its Prometheus endpoint on
``node_metrics_port``, which the manager's node sync check reads. With ``failpoints=True`` the
manager can be frozen at a named point between a decision and its action
(:meth:`ForgePod.arm_failpoint`, ``forge_manager.failpoints``); with ``use_pid_file=True`` the
manager finds the node through the PID file the stand-in writes, which
:meth:`ForgePod.write_pid_file` can point elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.controlplane import free_port
from tests.harness.forging_log import Interval, intervals, read_events
from tests.harness.node_standin import now

REPO_ROOT = Path(__file__).resolve().parents[2]
FORGE_GUARD = REPO_ROOT / ".tools" / "bin" / "forge-guard"
GUARD_INTERVAL = "100ms"

# Fast but safe timings for tests: 1 + 5 + 0.5 + 0.5 (demotion) + 1 (margin) = 8 <= 8.
FAST_TIMING = {
    "LEASE_DURATION": "8",
    "LEASE_RENEW_DEADLINE": "5",
    "LEASE_RETRY_PERIOD": "1",
    "KUBE_REQUEST_TIMEOUT": "0.5",
}


def write_pool_secret(directory: Path) -> Path:
    """Source credentials (text envelopes, as cardano-cli writes them) shared by a pool's pods."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, kind in (("kes.skey", "KesSigningKey_ed25519_kes_2^6"),
                       ("vrf.skey", "VrfSigningKey_PraosVRF"),
                       ("node.cert", "NodeOperationalCertificate")):  # fmt: skip
        envelope = {"type": kind, "description": "test only", "cborHex": "5820" + "ab" * 32}
        (directory / name).write_text(json.dumps(envelope) + "\n")
    return directory


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@dataclass
class ForgePod:
    name: str
    root: Path
    kubeconfig: Path
    namespace: str
    secret_dir: Path
    lease_name: str = "cardano-node-leader"
    timing: Mapping[str, str] = field(default_factory=lambda: dict(FAST_TIMING))
    node_name: str = ""
    use_pid_file: bool = False
    non_producing: bool = True
    startup_delay: float = 0.3
    extra_env: Mapping[str, str] = field(default_factory=dict)
    port: int = 0
    node_metrics_port: int = 0
    guard: bool = False
    """Run the node under ``forge-guard`` and let the manager write the forge permit."""
    failpoints: bool = False
    """Start the manager with ``FORGE_MANAGER_FAILPOINTS`` naming :attr:`failpoints_file`."""
    manager: subprocess.Popen[bytes] | None = None
    node: subprocess.Popen[bytes] | None = None
    """The node container's main process: the stand-in, or ``forge-guard`` with ``guard``."""

    def __post_init__(self) -> None:
        self.dir = self.root / self.name
        (self.dir / "secrets").mkdir(parents=True, exist_ok=True)
        (self.dir / "ipc").mkdir(parents=True, exist_ok=True)
        (self.dir / "run").mkdir(parents=True, exist_ok=True)
        if self.guard and not FORGE_GUARD.exists():
            raise AssertionError(f"{FORGE_GUARD} is missing: run 'make tools'")
        # Unique per instance: a manager finds its node by exact process name, and another
        # test run on the same host must never find (and signal) this one's stand-in.
        self.node_name = self.node_name or f"cn{uuid.uuid4().hex[:5]}-{self.name}"[:15]
        self.port = self.port or free_port()
        self.node_metrics_port = self.node_metrics_port or free_port()

    # ---- paths ---------------------------------------------------------------------------------
    @property
    def targets(self) -> tuple[Path, Path, Path]:
        s = self.dir / "secrets"
        return (s / "kes.skey", s / "vrf.skey", s / "node.cert")

    @property
    def socket(self) -> Path:
        return self.dir / "ipc" / "node.socket"

    @property
    def events_file(self) -> Path:
        return self.dir / "node-events.jsonl"

    @property
    def manager_log(self) -> Path:
        return self.dir / "manager.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / "node.pid"

    @property
    def permit_file(self) -> Path:
        return self.dir / "run" / "permit"

    @property
    def revoked_file(self) -> Path:
        """forge-guard's own record of the permit it revoked (its default: beside the permit)."""
        return self.dir / "run" / "permit.revoked"

    @property
    def tip_lag_file(self) -> Path:
        """Slots the node's tip lags behind the wall clock ('none': no tip), read per scrape."""
        return self.dir / "tip-lag"

    def set_tip_lag(self, slots: int | None) -> None:
        """Make the node's tip lag ``slots`` behind the wall clock (None: no tip at all)."""
        tmp = self.tip_lag_file.with_suffix(".tmp")
        tmp.write_text("none\n" if slots is None else f"{slots}\n")
        tmp.rename(self.tip_lag_file)

    @property
    def failpoints_file(self) -> Path:
        """The manager's failpoint file (``forge_manager.failpoints``), with ``failpoints``."""
        return self.dir / "failpoints"

    def arm_failpoint(self, point: str, action: str) -> None:
        """Freeze the manager at ``point`` (``pause`` or ``stop``) the next time it passes it."""
        assert self.failpoints, f"{self.name} was started without failpoints"
        tmp = self.failpoints_file.with_suffix(".tmp")
        tmp.write_text(f"{point}={action}\n")
        tmp.rename(self.failpoints_file)

    def disarm_failpoints(self) -> None:
        """Arm nothing; a paused manager goes on (a stopped one needs :meth:`thaw_manager`)."""
        if self.failpoints:
            tmp = self.failpoints_file.with_suffix(".tmp")
            tmp.write_text("")
            tmp.rename(self.failpoints_file)

    def failpoint_hits(self) -> list[tuple[str, str, int, float]]:
        """(point, action, PID, CLOCK_BOOTTIME) of every failpoint the manager reached."""
        try:
            text = Path(f"{self.failpoints_file}.hits").read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            point, action, pid, at = line.split()
            out.append((point, action, int(pid), float(at)))
        return out

    def write_pid_file(self, pid: int) -> None:
        """Replace the node's PID file (``use_pid_file``) atomically with ``pid``."""
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(f"{pid}\n")
        tmp.rename(self.pid_file)

    @property
    def node_log(self) -> Path:
        """The node container's output (the stand-in's and, with the guard, forge-guard's)."""
        return self.dir / "node.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        env.update(
            POD_NAME=self.name,
            NAMESPACE=self.namespace,
            LEASE_NAME=self.lease_name,
            KUBECONFIG=str(self.kubeconfig),
            METRICS_PORT=str(self.port),
            METRICS_BIND_ADDRESS="127.0.0.1",
            SOURCE_KES_KEY=str(self.secret_dir / "kes.skey"),
            SOURCE_VRF_KEY=str(self.secret_dir / "vrf.skey"),
            SOURCE_OP_CERT=str(self.secret_dir / "node.cert"),
            TARGET_KES_KEY=str(self.targets[0]),
            TARGET_VRF_KEY=str(self.targets[1]),
            TARGET_OP_CERT=str(self.targets[2]),
            NODE_SOCKET=str(self.socket),
            CARDANO_NODE_PROCESS_NAME=self.node_name,
            NODE_METRICS_URL=f"http://127.0.0.1:{self.node_metrics_port}/metrics",
            CLUSTER_NAME="test",
            LOG_FORMAT="text",
            LOG_LEVEL="INFO",
            **self.timing,
        )
        if self.use_pid_file:
            env["CARDANO_NODE_PID_FILE"] = str(self.pid_file)
        if self.guard:
            env["FORGE_PERMIT_FILE"] = str(self.permit_file)
        if self.failpoints:
            env["FORGE_MANAGER_FAILPOINTS"] = str(self.failpoints_file)
        env.update(self.extra_env)
        return env

    # ---- processes -----------------------------------------------------------------------------
    def start_manager(self) -> None:
        log = self.manager_log.open("ab")
        self.manager = subprocess.Popen(
            [sys.executable, "-m", "forge_manager"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        log.close()

    def start_node(self) -> None:
        args = [
            sys.executable, "-m", "tests.harness.node_standin",
            "--name", self.node_name,
            "--socket-path", str(self.socket),
            "--event-log", str(self.events_file),
            "--shelley-kes-key", str(self.targets[0]),
            "--shelley-vrf-key", str(self.targets[1]),
            "--shelley-operational-certificate", str(self.targets[2]),
            "--startup-delay", str(self.startup_delay),
            "--metrics-port", str(self.node_metrics_port),
            "--tip-lag-file", str(self.tip_lag_file),
        ]  # fmt: skip
        if self.non_producing:
            args.append("--start-as-non-producing-node")
        if self.use_pid_file:
            args += ["--pid-file", str(self.pid_file)]
        if self.guard:
            args = [
                str(FORGE_GUARD),
                "--permit-file", str(self.permit_file),
                "--credentials", ",".join(str(t) for t in self.targets),
                "--interval", GUARD_INTERVAL,
                "--socket", str(self.socket),
                "--", *args,
            ]  # fmt: skip
        log = self.node_log.open("ab")
        self.node = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        log.close()

    def start(self, timeout: float = 60.0) -> None:
        """Manager, then (after its startup probe passes, as with a native sidecar) the node."""
        self.start_manager()
        wait_for(self.startup_ready, timeout, f"{self.name} /startup-status 200")
        self.start_node()
        wait_for(self.node_up, timeout, f"{self.name} node socket")

    def node_pid(self) -> int | None:
        """PID of the node stand-in (the guard's child with ``guard``), None when not running."""
        if self.node is None or self.node.poll() is not None:
            return None
        if not self.guard:
            return self.node.pid
        children: list[int] = []
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.node.pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    children += [int(c) for c in (task / "children").read_text().split()]
        return children[0] if children else None

    def node_up(self) -> bool:
        pid = self.node_pid()
        return pid is not None and any(
            e["event"] == "socket_up" and e["pid"] == pid for e in self.events()
        )

    def kill9(self) -> None:
        """SIGKILL node and manager (the pod's node crashes); records the node's end of forging."""
        self.kill9_node()
        if self.manager is not None and self.manager.poll() is None:
            self.manager.kill()
            self.manager.wait(10)

    def kill9_node(self) -> None:
        """SIGKILL the node; with the guard the container ends with it (the guard exits)."""
        if self.node is None or self.node.poll() is not None:
            return
        pid = self.node_pid()
        if self.guard and pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            try:
                self.node.wait(10)  # forge-guard reaps its child and exits 137
            except subprocess.TimeoutExpired:
                self.node.kill()
                self.node.wait(10)
            self.record_killed(pid)
            return
        self.node.kill()
        self.node.wait(10)
        self.record_killed(pid or self.node.pid)

    def kill9_manager(self) -> None:
        """SIGKILL the sidecar alone (an OOM kill): the node keeps running."""
        if self.manager is not None:
            if self.manager.poll() is None:
                self.manager.kill()
            self.manager.wait(10)

    def freeze_manager(self) -> None:
        """SIGSTOP the sidecar: it neither renews nor demotes until :meth:`thaw_manager`."""
        assert self.manager is not None and self.manager.poll() is None
        self.manager.send_signal(signal.SIGSTOP)

    def thaw_manager(self) -> None:
        if self.manager is not None and self.manager.poll() is None:
            self.manager.send_signal(signal.SIGCONT)

    def restart_manager(self) -> None:
        """The kubelet restarts the sidecar container (the node goes on running)."""
        assert self.manager is None or self.manager.poll() is not None
        self.start_manager()

    def manager_running(self) -> bool:
        return self.manager is not None and self.manager.poll() is None

    def manager_stopped(self) -> bool:
        """The manager's process is stopped (SIGSTOP, state ``T``)."""
        if not self.manager_running():
            return False
        assert self.manager is not None
        try:
            stat = Path(f"/proc/{self.manager.pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")

    def node_running(self) -> bool:
        return self.node is not None and self.node.poll() is None

    def record_killed(self, pid: int) -> None:
        line = json.dumps({"t": now(), "pid": pid, "name": self.node_name, "event": "killed"})
        with self.events_file.open("a") as f:
            f.write(line + "\n")

    def sigterm_manager(self, timeout: float = 15.0) -> int:
        assert self.manager is not None
        self.manager.send_signal(signal.SIGTERM)
        return self.manager.wait(timeout)

    def stop(self) -> None:
        """Pod deletion: the node first, then the sidecar (native sidecar order). Bounded."""
        self.thaw_manager()  # a frozen process would not act on SIGTERM
        child = self.node_pid() if self.guard else None
        for proc in (self.node, self.manager):
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if child is not None and _alive(child):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)  # orphaned by a guard that had to be killed

    # ---- observation -----------------------------------------------------------------------------
    def events(self) -> list[dict[str, Any]]:
        return read_events([self.events_file])

    def intervals(self) -> list[Interval]:
        return intervals(self.events())

    def forging(self) -> bool:
        spans = self.intervals()
        return bool(spans) and spans[-1].end is None

    def credentials_present(self) -> bool:
        return any(p.exists() for p in self.targets)

    @property
    def http_host(self) -> str:
        """Where the manager's HTTP server listens (``METRICS_BIND_ADDRESS``)."""
        return self.extra_env.get("METRICS_BIND_ADDRESS", "127.0.0.1")

    def get(self, path: str) -> tuple[int, str]:
        url = f"http://{self.http_host}:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()
        except OSError:
            return 0, ""

    def startup_ready(self) -> bool:
        if self.manager is not None and self.manager.poll() is not None:
            raise AssertionError(
                f"{self.name} manager exited with {self.manager.returncode}:\n{self.log_tail()}"
            )
        return self.get("/startup-status")[0] == 200

    def metric(self, name: str) -> float | None:
        code, body = self.get("/metrics")
        if code != 200:
            return None
        for line in body.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.manager_log.read_text().splitlines()[-lines:])
        return "(no log)"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def all_events(pods: list[ForgePod]) -> list[dict[str, Any]]:
    return read_events([p.events_file for p in pods])
