"""The faults of the fault-injection suite, one function per kind of scenario.

Each scenario gets the :class:`World` (two regions of guarded forge pods on the real control plane
and a seeded ``random.Random``), injects one fault with random parameters, holds it for a random,
bounded time, then undoes what it did (the kubelet's part included: restarting a killed container,
recreating a deleted pod) and returns a one-line description. Waiting for the pool to recover and
judging the forging logs is the runner's job (:mod:`tests.chaos.run`).
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import ForgePod, wait_for
from tests.harness.regions import Regions

SOURCE_FILES = ("kes.skey", "vrf.skey", "node.cert")
START_WAIT = 90.0
"""Upper bound for a container or the API server to come back."""


@dataclass
class World:
    cp: ControlPlane
    regions: Regions
    rng: random.Random
    lease_duration: float
    renew_deadline: float
    retry_period: float
    notes: list[str] = field(default_factory=list)

    def pick(self, prefer_forger: float = 0.7) -> ForgePod:
        """The forging pod with probability ``prefer_forger`` (if any), else any pod."""
        forgers = self.regions.forgers()
        if forgers and self.rng.random() < prefer_forger:
            return forgers[0]
        return self.rng.choice(self.regions.all_pods)

    def pick_region(self, prefer_forger: float = 0.7) -> str:
        forgers = self.regions.forgers()
        if forgers and self.rng.random() < prefer_forger:
            return self.regions.region_of(forgers[0])
        return self.rng.choice(sorted(self.regions.pods))

    def hold(self, low: float, high: float) -> float:
        seconds = round(self.rng.uniform(low, high), 1)
        time.sleep(seconds)
        return seconds

    def kubelet(self) -> None:
        """Restart every container that is not running (the sidecar first, as in a pod)."""
        for pod in self.regions.all_pods:
            if not pod.manager_running():
                pod.restart_manager()
        for pod in self.regions.all_pods:
            if not pod.node_running():
                with contextlib.suppress(AssertionError):
                    wait_for(pod.startup_ready, START_WAIT, f"{pod.name} /startup-status")
                pod.start_node()


Scenario = Callable[[World], str]


def kill9_manager(w: World) -> str:
    """The sidecar is OOM-killed; the node goes on running; the kubelet restarts the sidecar."""
    pod = w.pick()
    pod.kill9_manager()
    held = w.hold(0.5, 1.5 * w.lease_duration)
    pod.restart_manager()
    return f"{pod.name} manager SIGKILL, restarted after {held:g} s"


def kill9_node(w: World) -> str:
    """cardano-node crashes; the container (forge-guard and node) is restarted."""
    pod = w.pick()
    pod.kill9_node()
    held = w.hold(0.2, 3.0)
    w.kubelet()
    return f"{pod.name} node SIGKILL, restarted after {held:g} s"


def kill9_pod(w: World) -> str:
    """The whole pod dies (node and sidecar SIGKILL); the StatefulSet recreates it."""
    pod = w.pick()
    pod.kill9()
    held = w.hold(0.0, 3.0)
    w.regions.replace(pod)
    return f"{pod.name} pod SIGKILL, recreated after {held:g} s"


def delete_pod(w: World) -> str:
    """A planned deletion (node SIGTERM, then the sidecar); the StatefulSet recreates it."""
    pod = w.pick(prefer_forger=0.9)
    pod.stop()
    held = w.hold(0.0, 2.0)
    w.regions.replace(pod)
    return f"{pod.name} pod deleted, recreated after {held:g} s"


def freeze_manager(w: World) -> str:
    """SIGSTOP of the sidecar for longer than the lease: only forge-guard can fence the node."""
    pod = w.pick(prefer_forger=0.8)
    if not pod.manager_running():
        pod.restart_manager()
    pod.freeze_manager()
    try:
        held = w.hold(w.lease_duration + 1, w.lease_duration + 6)
    finally:
        pod.thaw_manager()
    return f"{pod.name} manager SIGSTOP for {held:g} s"


def apiserver_outage(w: World) -> str:
    """The control plane (the local and the coordination API) goes away and comes back."""
    w.cp.stop_apiserver()
    try:
        held = w.hold(1.0, 1.5 * w.lease_duration)
    finally:
        w.cp.start_apiserver()
    return f"kube-apiserver stopped for {held:g} s (restart included in recovery)"


def _source(w: World, region: str) -> Path:
    return w.regions.secrets[region] / w.rng.choice(SOURCE_FILES)


def source_missing(w: World) -> str:
    """A file of a region's mounted Secret disappears for a while (the forger may move)."""
    region = w.pick_region()
    path = _source(w, region)
    saved = path.read_bytes()
    path.unlink()
    try:
        also = _maybe_handover(w, region)
        held = w.hold(2.0, 10.0)
    finally:
        _restore(path, saved)
    return f"{region} source {path.name} missing for {held:g} s{also}"


def source_corrupt(w: World) -> str:
    """A file of a region's Secret is empty or not a text envelope for a while."""
    region = w.pick_region()
    path = _source(w, region)
    saved = path.read_bytes()
    kind = w.rng.choice(["empty", "garbage"])
    _restore(path, b"" if kind == "empty" else b'{"type": "truncated')
    try:
        also = _maybe_handover(w, region)
        held = w.hold(2.0, 10.0)
    finally:
        _restore(path, saved)
    return f"{region} source {path.name} {kind} for {held:g} s{also}"


def _maybe_handover(w: World, region: str) -> str:
    """Half of the time the region's forger is deleted, so a standby must read the sources."""
    forgers = [p for p in w.regions.forgers() if w.regions.region_of(p) == region]
    if not forgers or w.rng.random() < 0.5:
        return ""
    # The recreated pod's sidecar starts; its startup probe cannot pass while the source is bad,
    # so its node is started by the kubelet step of the recovery, once the Secret is whole again.
    w.regions.replace(forgers[0], start=False).start_manager()
    return f", its forger {forgers[0].name} deleted meanwhile"


def _restore(path: Path, data: bytes) -> None:
    """Replace the file atomically, as the kubelet updates a mounted Secret."""
    tmp = path.with_name(f".{path.name}.chaos")
    tmp.write_bytes(data)
    tmp.replace(path)


def partition(w: World) -> str:
    """A region is cut off from the coordination API (its local API stays reachable)."""
    region = w.pick_region()
    mode = w.rng.choice(["blackhole", "refuse"])
    proxy = w.regions.proxies[region]
    proxy.partition(mode)  # type: ignore[arg-type]
    try:
        held = w.hold(3.0, 2.0 * w.lease_duration)
    finally:
        proxy.heal()
    return f"{region} cut off from the coordination API ({mode}) for {held:g} s"


def partition_freeze(w: World) -> str:
    """The forging region is cut off from the coordination API, and before its pool-wide Lease
    deadline its forger's manager freezes: only forge-guard can stop the node, and only if the
    permit it was given ends at the pool Lease's deadline, not at the (still renewed) local one."""
    forgers = w.regions.forgers()
    pod = forgers[0] if forgers else w.rng.choice(w.regions.all_pods)
    region = w.regions.region_of(pod)
    proxy = w.regions.proxies[region]
    proxy.partition("blackhole")
    try:
        before = w.hold(0.5, w.renew_deadline - 0.2)
        pod.freeze_manager()
        try:
            held = w.hold(w.lease_duration + 1, w.lease_duration + 4)
        finally:
            pod.thaw_manager()
    finally:
        proxy.heal()
    return f"{region} cut off, {pod.name} manager SIGSTOP {before:g} s later for {held:g} s"


def health_flap(w: World) -> str:
    """A region's health endpoint flips between 503 and 200; it ends healthy."""
    region = w.pick_region()
    server = w.regions.health[region]
    flips = w.rng.randint(2, 8)
    total = 0.0
    try:
        for i in range(flips):
            server.status = 503 if i % 2 == 0 else 200
            total += w.hold(0.3, 4.0)
    finally:
        server.status = 200
    return f"{region} health flapped {flips} times over {total:.1f} s"


def node_lag(w: World) -> str:
    """A node falls behind the chain (its tip far behind, or none, as during a ledger replay)
    and catches up: a leader forges on within NODE_SYNC_GRACE_SECONDS and hands over to a
    synced standby after it; an unsynced standby stays out of the election."""
    pod = w.pick(prefer_forger=0.8)
    grace = float(pod.env().get("NODE_SYNC_GRACE_SECONDS", "60"))
    behind = w.rng.choice([600, None])
    pod.set_tip_lag(behind)
    try:
        held = w.hold(0.5, 2 * grace + 2 * w.retry_period)
    finally:
        pod.set_tip_lag(0)
    what = "600 slots behind" if behind else "without a tip"
    return f"{pod.name} node {what} for {held:g} s (grace {grace:g} s)"


def both_enabled(w: World) -> str:
    """An operator sets every region's forgeState to Enabled, then back to Priority-based."""
    names = sorted(w.regions.pods)
    for region in names:
        # Retried: a region whose first local election is still running (a lease duration) has
        # not created its resource yet.
        _patch_retrying(w, region, {"forgeState": "Enabled"})
    try:
        held = w.hold(3.0, 15.0)
    finally:
        for region in names:
            _patch_retrying(w, region, {"forgeState": "Priority-based"})
    return f"all regions forgeState Enabled for {held:g} s"


def _patch_retrying(w: World, region: str, spec: dict[str, object]) -> None:
    deadline = time.monotonic() + START_WAIT
    while True:
        try:
            w.regions.patch_spec(region, spec)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


SCENARIOS: dict[str, Scenario] = {
    "kill9_manager": kill9_manager,
    "kill9_node": kill9_node,
    "kill9_pod": kill9_pod,
    "delete_pod": delete_pod,
    "freeze_manager": freeze_manager,
    "apiserver_outage": apiserver_outage,
    "source_missing": source_missing,
    "source_corrupt": source_corrupt,
    "partition": partition,
    "partition_freeze": partition_freeze,
    "health_flap": health_flap,
    "both_enabled": both_enabled,
    "node_lag": node_lag,
}

# Rough mean wall time of fault + recovery with FAST_TIMING on an idle 2-core machine, for the
# runner's estimate only.
MEAN_SCENARIO_S = 15.0


def source_ok(path: Path) -> bool:
    """A text envelope (what the restore writes back); used by the runner's final check."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "cborHex" in data
