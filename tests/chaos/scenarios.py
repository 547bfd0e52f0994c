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
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from forge_manager.failpoints import POINTS

from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import ForgePod, wait_for
from tests.harness.regions import POOL_LEASE, RegionPods, Regions
from tests.harness.unremovable import make_unremovable

T = TypeVar("T")
R = TypeVar("R", bound=RegionPods)

SOURCE_FILES = ("kes.skey", "vrf.skey", "node.cert")
START_WAIT = 90.0
"""Upper bound for a container or the API server to come back."""


@dataclass
class PoolWorld(Generic[R]):
    """What a scenario of either runner gets: the regions of guarded forge pods, the seeded
    generator its parameters come from, and the managers' timing."""

    cp: ControlPlane
    regions: R
    rng: random.Random
    lease_duration: float
    renew_deadline: float
    retry_period: float
    request_timeout: float = 0.5
    notes: list[str] = field(default_factory=list)

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


@dataclass
class World(PoolWorld[Regions]):
    def pick(self, prefer_forger: float = 0.7) -> ForgePod:
        """The forging pod with probability ``prefer_forger`` (if any), else any pod."""
        forgers = self.regions.forgers()
        if forgers and self.rng.random() < prefer_forger:
            return forgers[0]
        return self.rng.choice(self.regions.all_pods)

    def forger(self) -> ForgePod:
        """The forging pod (the runner starts each scenario with exactly one), else any."""
        forgers = self.regions.forgers()
        return forgers[0] if forgers else self.rng.choice(self.regions.all_pods)


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
    _retrying(lambda: w.regions.patch_spec(region, spec))


def _retrying(action: Callable[[], None]) -> None:
    """``action`` until it succeeds (an operator's edit retried), for at most START_WAIT."""
    deadline = time.monotonic() + START_WAIT
    while True:
        try:
            action()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _first(probe: Callable[[], T | None], timeout: float) -> T | None:
    """The first non-None answer of ``probe`` within ``timeout`` seconds, else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.1)
    return None


def _local_lease(region: str) -> str:
    return f"{region}-leader"


# ---- the faults of issue 11 ----------------------------------------------------------------------
def lease_deleted(w: World) -> str:
    """A Lease is deleted (``kubectl delete lease``, an etcd or Velero restore): the forging
    region's local Lease or the pool-wide Lease, half of the time while its holder is cut off
    from that API (it cannot learn of the deletion before its renew deadline). Nobody may take
    the vacant place before the old holder's deadline: a follower waits a lease duration from
    when it first saw the Lease missing."""
    which = w.rng.choice(["local", "pool"])
    cut = w.rng.choice([None, None, "blackhole", "refuse"])
    pod = w.forger()
    region = w.regions.region_of(pod)
    if which == "local":
        name, proxy = _local_lease(region), w.regions.local_proxy(pod)
    else:
        name, proxy = POOL_LEASE, w.regions.proxies[region]
    if cut is not None:
        proxy.partition(cut)  # type: ignore[arg-type]
    try:
        w.regions.delete_lease(name)
        held = w.hold(1.0, 1.5 * w.lease_duration)
    finally:
        if cut is not None:
            proxy.heal()
    how = f", holder {pod.name} cut off from that API ({cut})" if cut else f" (holder {pod.name})"
    return f"{which} Lease {name} deleted{how}, held {held:g} s"


def answer_lost(w: World) -> str:
    """Writes are applied by the API server but their answers never arrive (the proxy forwards
    the request and drops the answer): the forging pod's renews of its local Lease, or its
    region's renews of the pool-wide Lease, 1 to 3 in a row. The writer must recognise its own
    applied writes by their stamps and forge on."""
    which = w.rng.choice(["local", "pool"])
    count = w.rng.randint(1, 3)
    pod = w.forger()
    region = w.regions.region_of(pod)
    if which == "local":
        proxy = w.regions.local_api_proxies[region]
        path = rf"/leases/{re.escape(_local_lease(region))}$"
    else:
        proxy = w.regions.api_proxies[region]
        path = rf"/leases/{re.escape(POOL_LEASE)}$"
    before = len(proxy.dropped())
    proxy.drop_answers(method="PUT", path=path, count=count)
    try:
        dropped = _first(
            lambda: n if (n := len(proxy.dropped()) - before) >= count else None,
            count * 3 * (w.retry_period + w.request_timeout) + 10,
        )
        held = w.hold(0.5, w.lease_duration)
    finally:
        proxy.clear()
    done = len(proxy.dropped()) - before if dropped is None else dropped
    return f"{region} {which} Lease: {done} of {count} write(s) applied, answer dropped; {held:g} s"


def api_slow(w: World) -> str:
    """The API answers later than KUBE_REQUEST_TIMEOUT for a while (each request is applied at
    once, its answer comes late): a region's writes of its local Lease or of the pool-wide Lease
    (the writer recognises its own applied writes and forges on), or every request of a region
    to its local API or to the coordination API (the region cannot act; another takes over)."""
    target = w.rng.choice(["local writes", "pool writes", "local API", "coordination API"])
    seconds = round(w.rng.uniform(1.2, 4.0) * w.request_timeout, 2)
    region = w.pick_region()
    local = target.startswith("local")
    proxy = (w.regions.local_api_proxies if local else w.regions.api_proxies)[region]
    if target.endswith("writes"):
        lease = _local_lease(region) if local else POOL_LEASE
        proxy.delay(seconds, method="PUT", path=rf"/leases/{re.escape(lease)}$")
    else:
        proxy.delay(seconds)
    try:
        held = w.hold(3.0, 2.0 * w.lease_duration)
    finally:
        proxy.clear()
    return f"{region} {target} answered {seconds:g} s late for {held:g} s"


def region_cannot_list(w: World) -> str:
    """A region's coordination Role loses ``list`` on cardanoforgeclusters (an RBAC edit): it
    can still heartbeat and write its status, but cannot read the regions. It must stop forging
    and publish ``Eligible=False``; the others must not wait for it."""
    region = w.pick_region(prefer_forger=0.8)
    w.regions.set_coordination_rules(region, list_regions=False)
    try:
        held = w.hold(3.0, 2.5 * w.lease_duration)
    finally:
        _retrying(lambda: w.regions.set_coordination_rules(region, list_regions=True))
    return f"{region} cannot list cardanoforgeclusters for {held:g} s"


def frozen_decision(w: World) -> str:
    """A manager freezes exactly between a decision to forge and its action (a failpoint of the
    real process, ``forge_manager.failpoints``: its thread paused, or the process SIGSTOPped by
    itself) for longer than the lease, after which another pod forges. Every standby is armed,
    then the forger is deleted or its region turns unhealthy; the first standby to decide to
    forge freezes there. Resumed, it must act on no stale decision (``before_install``,
    ``before_enable_signal``), or its late SIGHUP must find the files already removed by
    forge-guard (``after_enable_check``)."""
    point = w.rng.choice(sorted(POINTS))
    action = w.rng.choice(["pause", "stop"])
    trigger = w.rng.choice(["forger deleted", "forging region unhealthy"])
    forger = w.forger()
    health = w.regions.health[w.regions.region_of(forger)]
    armed = [p for p in w.regions.all_pods if p is not forger]
    seen = {p.name: len(p.failpoint_hits()) for p in armed}
    for pod in armed:
        pod.arm_failpoint(point, action)
    frozen: ForgePod | None = None
    held = 0.0
    try:
        if trigger == "forger deleted":
            # Not waiting for the new pod (the kubelet step of the recovery starts its node): the
            # other armed pods are disarmed as soon as the first one froze.
            w.regions.replace(forger, start=False).start_manager()
        else:
            health.status = 503
        frozen = _first(
            lambda: next((p for p in armed if len(p.failpoint_hits()) > seen[p.name]), None),
            4 * w.lease_duration + 10,
        )
        for pod in armed:
            if pod is not frozen:
                pod.disarm_failpoints()
        health.status = 200
        if frozen is not None:
            held = w.hold(w.lease_duration + 1, w.lease_duration + 5)
    finally:
        for pod in armed:
            pod.disarm_failpoints()
        for pod in armed:
            pod.thaw_manager()
        health.status = 200
    where = (
        f"{frozen.name} frozen ({action}) at {point} for {held:g} s"
        if frozen
        else (f"no standby reached {point} ({action})")
    )
    return f"{trigger} ({forger.name}); {where}"


def _pid_file_forger(w: World) -> ForgePod:
    """A pod with CARDANO_NODE_PID_FILE, the forging one when it can be arranged (bounded): the
    forger itself, or its region's PID-file pod after the forger is deleted."""
    forger = w.forger()
    if forger.use_pid_file:
        return forger
    partners = [p for p in w.regions.pods[w.regions.region_of(forger)] if p.use_pid_file]
    if partners and w.rng.random() < 0.8:
        partner = partners[0]
        w.regions.replace(forger)
        found = _first(
            lambda: partner if any(p is partner for p in w.regions.forgers()) else None,
            4 * w.lease_duration + 10,
        )
        if found is not None:
            return found
    return w.rng.choice([p for p in w.regions.all_pods if p.use_pid_file])


def pid_file_other(w: World) -> str:
    """A pod that finds its node through CARDANO_NODE_PID_FILE finds another process of the
    same UID named there: its forge-guard wrapper, or an unrelated process. The manager must
    treat the node as not found: never signal that process, never confirm a demotion it could
    not signal. Half of the time the pod's region turns unhealthy meanwhile, so it must stop
    forging through a node it cannot find: it does not release, the pool-wide Lease expires for
    the others, and forge-guard fences the node at the permit's deadline."""
    pod = _pid_file_forger(w)
    region = w.regions.region_of(pod)
    kind = w.rng.choice(["wrapper", "unrelated"])
    unhealthy = w.rng.random() < 0.5
    health = w.regions.health[region]
    other: subprocess.Popen[bytes] | None = None
    if kind == "unrelated":
        other = subprocess.Popen(["sleep", "3600"])
        pid = other.pid
    else:
        assert pod.node is not None
        pid = pod.node.pid  # forge-guard, the node's parent
    forging = any(p is pod for p in w.regions.forgers())
    pod.write_pid_file(pid)
    try:
        if unhealthy:
            # Long enough for the hand-over, the pool-wide Lease's renew deadline and the permit.
            health.status = 503
            held = w.hold(w.lease_duration + 4, 2 * w.lease_duration + 2)
        else:
            held = w.hold(3.0, 2.0 * w.lease_duration)
    finally:
        health.status = 200
        node = pod.node_pid()
        if node is not None:
            pod.write_pid_file(node)
    signalled = False
    if other is not None:
        signalled = other.poll() is not None  # sleep dies of the SIGHUP it was never to get
        other.kill()
        other.wait(10)
    if signalled:
        raise AssertionError(f"{pod.name}'s manager signalled the unrelated PID {pid}")
    also = f", {region} unhealthy meanwhile" if unhealthy else ""
    role = "forging" if forging else "standby"
    seen = pod.metric("cardano_node_pid_file_mismatches_total")
    return (
        f"{pod.name} ({role}) PID file names its {kind} process {pid} for {held:g} s{also}; "
        f"mismatches counted: {seen if seen is None else int(seen)}"
    )


def removal_fails(w: World) -> str:
    """The forging pod's credentials cannot be removed (its secrets directory or one file made
    unremovable for real, ``tests.harness.unremovable``: chattr +i as root) when it has to stop
    forging: its region turns unhealthy (the manager hands over), its region is cut off from the
    coordination API (the manager's pool-lease deadline), or its manager freezes (forge-guard's
    permit deadline). Whoever finds the removal failing must stop the node (SIGTERM, then
    SIGKILL); nobody else may forge before it has stopped."""
    pod = w.forger()
    region = w.regions.region_of(pod)
    what = w.rng.choice(["directory", "file"])
    trigger = w.rng.choice(["region unhealthy", "region cut off", "manager frozen"])
    path = pod.targets[0].parent if what == "directory" else w.rng.choice(pod.targets)
    health, proxy = w.regions.health[region], w.regions.proxies[region]
    change = make_unremovable(path)
    try:
        if trigger == "region unhealthy":
            health.status = 503
        elif trigger == "region cut off":
            proxy.partition("blackhole")
        elif pod.manager_running():
            pod.freeze_manager()
        held = w.hold(w.lease_duration + 2, 2 * w.lease_duration + 2)
    finally:
        pod.thaw_manager()
        proxy.heal()
        health.status = 200
        change.restore()
    ended = "node stopped" if not pod.node_running() else "node still running"
    return f"{pod.name} {change.describe()}, {trigger} for {held:g} s: {ended}"


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
    "lease_deleted": lease_deleted,
    "answer_lost": answer_lost,
    "api_slow": api_slow,
    "region_cannot_list": region_cannot_list,
    "frozen_decision": frozen_decision,
    "pid_file_other": pid_file_other,
    "removal_fails": removal_fails,
}

# Mean wall time of fault + recovery per kind with FAST_TIMING, measured in a 177-scenario run on a
# shared 2-core machine under load (load average 13 to 70), for the runner's estimate only.
SCENARIO_S: dict[str, float] = {
    "kill9_manager": 13,
    "kill9_node": 11,
    "kill9_pod": 27,
    "delete_pod": 35,
    "freeze_manager": 16,
    "apiserver_outage": 55,
    "source_missing": 27,
    "source_corrupt": 19,
    "partition": 16,
    "partition_freeze": 19,
    "health_flap": 17,
    "both_enabled": 17,
    "node_lag": 58,
    "lease_deleted": 13,
    "answer_lost": 13,
    "api_slow": 19,
    "region_cannot_list": 21,
    "frozen_decision": 28,
    "pid_file_other": 26,
    "removal_fails": 27,
}
WORLD_S = 60.0
"""Building the pool (four pods, the first election) before the first scenario."""


def source_ok(path: Path) -> bool:
    """A text envelope (what the restore writes back); used by the runner's final check."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "cborHex" in data
