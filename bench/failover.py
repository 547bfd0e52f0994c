"""Failover figures of the forge manager with forge-guard, its idle cost, and API load.

Each section starts a private control plane (etcd + kube-apiserver on loopback) and pods (forge
manager + cardano-node stand-in under ``forge-guard`` each, as local processes) with the default
timings (LEASE_DURATION 15, LEASE_RENEW_DEADLINE 10, LEASE_RETRY_PERIOD 2, KUBE_REQUEST_TIMEOUT 1).
Times come from the stand-ins' CLOCK_BOOTTIME event logs; every run is checked for overlap.

``local`` (one region, ``--pods`` pods):

* initial election: from the first manager's start (no Lease yet) to the first node forging, the
  pods started one after another as by a StatefulSet (one sample per run of the section);
* planned handover: the forging pod is deleted (node SIGTERM, then the sidecar SIGTERM, the
  native-sidecar order); deletion to another node's ``forging_started``, and where the time goes
  (per run on stderr, medians in the report): the old node's exit, the old manager's SIGTERM and
  its release (the write answered), the successor's watch seeing the release, its acquisition
  (the write answered), its install, from the stand-ins' event logs and the managers' logs;
* unplanned failover: the forging pod's manager and node SIGKILL; kill to the next forger;
* frozen manager: the forging pod's manager SIGSTOP; freeze to forge-guard stopping its node
  (fence) and to the next forger (takeover); the manager is resumed afterwards;
* idle: sidecar and guard CPU (% of one core) and resident memory, and API requests per second
  per pod (the API server's ``apiserver_request_total`` with the pods running, minus a baseline
  measured before they started, divided by the number of pods; a watch is counted once, when it
  ends), and the watches open per pod (``apiserver_longrunning_requests``, verb WATCH).

``cluster`` (regions east priority 1 and west priority 2, ``--pods`` pods each, cluster
management on; health checked every 2 s with timeout 1 s and threshold 3 so that twenty runs fit
in minutes; each region reaches the coordination API through its own breakable loopback proxy):

* health failover: from the threshold-crossing failed check (the third 503 the region's health
  endpoint answered) to a west node forging; and the failback once east is healthy again;
* partition failover: east cut off from the coordination API (black hole) to a west node forging;
* API requests per second per pod with cluster management, and the watches open per pod.

A run whose new forger does not appear within two minutes is reported (with the tail of every
manager's log on stderr) and counted; the section goes on with the next run.

Run: ``python -m bench.failover --runs 20`` (``--sections local`` or ``cluster`` for one part;
``--sections local --local-kinds planned`` for the planned handover alone; ``--keep DIR`` keeps
every pod's logs).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import re
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import ForgePod, all_events, wait_for, write_pool_secret
from tests.harness.forging_log import Interval, forging_at, intervals, overlaps, read_events
from tests.harness.node_standin import now
from tests.harness.regions import Regions, create_namespace, install_crd

DEFAULT_TIMING = {
    "LEASE_DURATION": "15",
    "LEASE_RENEW_DEADLINE": "10",
    "LEASE_RETRY_PERIOD": "2",
    "KUBE_REQUEST_TIMEOUT": "1",
}
BENCH_CLUSTER_TIMING = {
    "HEALTH_CHECK_INTERVAL": "2",
    "HEALTH_CHECK_TIMEOUT": "1",
    "HEALTH_CHECK_FAILURE_THRESHOLD": "3",
}
WAIT = 120.0
LOCAL_KINDS = ("planned", "unplanned", "frozen")
IDLE_WINDOW_S = 30.0
CLK_TCK = 100  # os.sysconf("SC_CLK_TCK") on Linux


# ---- small helpers ------------------------------------------------------------------------------
def forgers_of(pods: Sequence[ForgePod]) -> list[ForgePod]:
    active = forging_at(intervals(all_events(list(pods))), now())
    return [p for p in pods if any(a.startswith(p.node_name + "/") for a in active)]


def forger(pods: Sequence[ForgePod]) -> ForgePod | None:
    found = forgers_of(pods)
    if len(found) > 1:
        raise AssertionError(f"two forgers: {[p.name for p in found]}")
    return found[0] if found else None


def first_start_after(pods: Sequence[ForgePod], t0: float) -> float:
    starts = [
        e["t"] for e in all_events(list(pods)) if e["event"] == "forging_started" and e["t"] > t0
    ]
    return float(min(starts))


def first_stop_after(pod: ForgePod, t0: float) -> float:
    stops = [e["t"] for e in pod.events() if e["event"] == "forging_stopped" and e["t"] > t0]
    return float(min(stops))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def p95(samples: Sequence[float]) -> float:
    if len(samples) < 2:
        return max(samples)
    return statistics.quantiles(samples, n=20, method="inclusive")[18]


def line(name: str, samples: Sequence[float], target: str = "") -> str:
    if not samples:
        return f"  {name:44s} n=0"
    return (
        f"  {name:44s} n={len(samples):<3d} median {statistics.median(samples):6.2f} s  "
        f"p95 {p95(samples):6.2f} s  worst {max(samples):6.2f} s  {target}"
    )


def api_requests(
    cp: ControlPlane, metric: str = "apiserver_request_total", verb: str | None = None
) -> dict[str, float]:
    """``metric`` summed per resource (and ``""`` for all), only for ``verb`` when given."""
    ctx: ssl.SSLContext = cp.ssl_context()
    with urllib.request.urlopen(f"{cp.url}/metrics", timeout=10, context=ctx) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {"": 0.0}
    for row in text.splitlines():
        if not row.startswith(metric + "{"):
            continue
        labels, value = row.rsplit(" ", 1)
        parts = dict(
            (key, val.strip('"'))
            for key, _, val in (p.partition("=") for p in labels[len(metric) + 1 : -1].split(","))
        )
        if verb is not None and parts.get("verb") != verb:
            continue
        resource = parts.get("resource", "")
        out[""] += float(value)
        out[resource] = out.get(resource, 0.0) + float(value)
    return out


def open_watches(cp: ControlPlane) -> dict[str, float]:
    """Watches open now, per resource (``apiserver_longrunning_requests``)."""
    return api_requests(cp, "apiserver_longrunning_requests", verb="WATCH")


def timed_out(pods: Sequence[ForgePod], what: str, exc: AssertionError) -> None:
    print(f"{what}: {exc}", file=sys.stderr)
    for p in pods:
        print(f"---- {p.name} manager log ----\n{p.log_tail(15)}", file=sys.stderr)


def request_rate(cp: ControlPlane, window: float) -> dict[str, float]:
    before = api_requests(cp)
    time.sleep(window)
    after = api_requests(cp)
    return {k: (after.get(k, 0.0) - before.get(k, 0.0)) / window for k in after}


def idle_cost(pods: Sequence[ForgePod], window: float) -> list[tuple[str, float, float]]:
    """(role, CPU % of one core, RSS MiB) of every sidecar and guard over ``window``."""
    leader = forger(pods)
    procs: list[tuple[str, int]] = []
    for p in pods:
        role = "leader" if p is leader else "standby"
        if p.manager is not None:
            procs.append((f"sidecar {role}", p.manager.pid))
        if p.guard and p.node is not None:
            procs.append((f"forge-guard {role}", p.node.pid))
    start = {pid: cpu_seconds(pid) for _, pid in procs}
    time.sleep(window)
    return [
        (role, 100 * (cpu_seconds(pid) - start[pid]) / window, rss_mib(pid)) for role, pid in procs
    ]


def overlap_ms(spans: list[Interval]) -> float:
    return sum(o.seconds for o in overlaps(spans, until=now())) * 1000


def namespace(cp: ControlPlane, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    create_namespace(cp, name)
    return name


# ---- where a planned handover's seconds go -------------------------------------------------------
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: (.*)$")
PHASES = (
    ("node_exited", "old node exited"),
    ("sigterm", "old manager got SIGTERM"),
    ("released", "old manager released (write answered)"),
    ("seen", "successor's watch saw the release"),
    ("pool_released", "old manager released the pool lease"),
    ("acquired", "successor acquired (write answered)"),
    ("pool_acquired", "successor acquired the pool lease"),
    ("installed", "successor installed the credentials"),
    ("forging", "successor's node forging"),
)


def manager_lines(pod: ForgePod, offset: float) -> list[tuple[float, str]]:
    """(CLOCK_BOOTTIME, message) of every line of the manager's text log; ``offset`` is the
    wall clock minus CLOCK_BOOTTIME (the log's times are the wall clock, to the millisecond)."""
    out: list[tuple[float, str]] = []
    try:
        text = pod.manager_log.read_text(errors="replace")
    except OSError:
        return out
    for row in text.splitlines():
        m = _LOG_LINE.match(row)
        if m:
            wall = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.append((wall - offset, m.group(2)))
    return out


def first_line(lines: list[tuple[float, str]], t0: float, text: str) -> float | None:
    return next((t for t, msg in lines if t >= t0 - 0.01 and text in msg), None)


def handover_trace(old: ForgePod, new: ForgePod, t0: float, offset: float) -> dict[str, float]:
    """Seconds after ``t0`` (the pod's deletion) of each step of one planned handover, from the
    stand-ins' event logs and the managers' logs (a step not found is left out)."""
    steps: dict[str, float | None] = {}
    steps["node_exited"] = next(
        (e["t"] for e in old.events() if e["event"] == "exited" and e["t"] > t0), None
    )
    old_lines, new_lines = manager_lines(old, offset), manager_lines(new, offset)
    steps["sigterm"] = first_line(old_lines, t0, "received SIGTERM")
    steps["released"] = first_line(old_lines, t0, "released the lease at resourceVersion")
    steps["seen"] = first_line(new_lines, t0, "the watch saw the lease change (holder " + old.name)
    steps["acquired"] = first_line(new_lines, t0, "acquired the lease at resourceVersion")
    steps["pool_released"] = first_line(old_lines, t0, "shutdown: released the pool lease")
    steps["pool_acquired"] = first_line(new_lines, t0, "cluster: acquiring the ")
    steps["installed"] = first_line(new_lines, t0, "credentials installed")
    steps["forging"] = next(
        (e["t"] for e in new.events() if e["event"] == "forging_started" and e["t"] > t0), None
    )
    return {k: v - t0 for k, v in steps.items() if v is not None}


def trace_text(trace: dict[str, float]) -> str:
    return ", ".join(f"{k} +{trace[k]:.2f}" for k, _ in PHASES if k in trace)


# ---- one region ---------------------------------------------------------------------------------
def local_section(
    runs: int,
    pods_n: int,
    root: Path,
    report: Callable[[str], None],
    kinds: Sequence[str] = LOCAL_KINDS,
) -> bool:
    cp = ControlPlane(root=root / "cp")
    cp.start()
    ns = namespace(cp, "bench")
    secret = write_pool_secret(root / "secret")
    token = uuid.uuid4().hex[:4]  # node names unique on a shared host
    generation = 0

    def new_pod(i: int) -> ForgePod:
        nonlocal generation
        generation += 1
        return ForgePod(f"bp-{i}", root / f"g{generation}", cp.kubeconfig, ns, secret,
                        timing=DEFAULT_TIMING, node_name=f"cnb{token}-{generation}",
                        guard=True)  # fmt: skip

    samples: dict[str, list[float]] = {"planned": [], "unplanned": [], "fence": [], "frozen": []}
    traces: list[dict[str, float]] = []
    offset = time.time() - now()
    timeouts: dict[str, int] = {"planned": 0, "unplanned": 0, "frozen": 0}
    rss: list[float] = []
    pods: list[ForgePod] = []
    everyone: list[ForgePod] = []
    try:
        baseline = request_rate(cp, IDLE_WINDOW_S)
        watches_before = open_watches(cp)
        pods = [new_pod(i) for i in range(pods_n)]
        everyone = list(pods)
        t_start = now()
        for p in pods:
            p.start(timeout=WAIT)
        wait_for(lambda: forger(pods) is not None, WAIT, "a forger")
        initial = first_start_after(pods, t_start) - t_start
        time.sleep(2 * float(DEFAULT_TIMING["LEASE_RETRY_PERIOD"]))
        idle = idle_cost(pods, IDLE_WINDOW_S)
        loaded = request_rate(cp, IDLE_WINDOW_S)
        watches = open_watches(cp)
        for kind in kinds:
            for _ in range(runs):
                wait_for(lambda: forger(pods) is not None, WAIT, "a forger")
                old = forger(pods)
                assert old is not None
                rss += [rss_mib(p.manager.pid) for p in pods if p.manager is not None]
                t0 = now()
                if kind == "planned":
                    old.stop()
                elif kind == "unplanned":
                    old.kill9()
                else:
                    old.freeze_manager()
                rest = [p for p in pods if p is not old]
                try:
                    wait_for(lambda r=rest: forger(r) is not None, WAIT, "a new forger")  # type: ignore[misc]
                except AssertionError as exc:
                    timeouts[kind] += 1
                    timed_out(pods, f"local {kind}", exc)
                    if kind == "frozen":
                        old.thaw_manager()
                    continue
                took = first_start_after(rest, t0) - t0
                trace = ""
                if kind == "planned":
                    successor = forger(rest)
                    if successor is not None:
                        traces.append(handover_trace(old, successor, t0, offset))
                        trace = f" ({trace_text(traces[-1])})"
                if kind == "frozen":
                    samples["fence"].append(first_stop_after(old, t0) - t0)
                    samples["frozen"].append(took)
                    old.thaw_manager()
                    wait_for(lambda o=old: o.metric("cardano_leader_status") == 0.0, WAIT,  # type: ignore[misc]
                             "the resumed manager to stay demoted")  # fmt: skip
                else:
                    samples[kind].append(took)
                    index = pods.index(old)
                    replacement = new_pod(int(old.name.split("-")[1]))
                    pods[index] = replacement  # stopped at the end even if its start fails
                    everyone.append(replacement)
                    replacement.start(timeout=WAIT)
                print(f"local {kind} run {len(samples[kind])}: {took:.2f} s{trace}",
                      file=sys.stderr)  # fmt: skip
    finally:
        for p in pods:
            p.stop()
        cp.stop()
    overlap = overlap_ms(intervals(read_events([p.events_file for p in everyone])))
    lease = float(DEFAULT_TIMING["LEASE_DURATION"])
    report(f"one region, {pods_n} pods, forge-guard on (lease 15 s, renew deadline 10 s, "
           "retry 2 s)")  # fmt: skip
    report(f"  {'initial election (no Lease yet; one sample)':44s} {initial:6.2f} s   "
           "first manager started to first node forging")  # fmt: skip
    report(line("planned handover (pod deleted)", samples["planned"], "target p95 < 3 s"))
    for key, what in PHASES:
        steps = [t[key] for t in traces if key in t]
        if steps and key != "forging":
            report(line(f"  deletion to {what}", steps))
    report(line("unplanned failover (pod kill -9)", samples["unplanned"],
                f"target p95 <= {lease:g} s (lease)"))  # fmt: skip
    report(line("frozen manager: guard fenced its node", samples["fence"],
                "renew deadline 10 s after the last renewal"))  # fmt: skip
    report(line("frozen manager: next node forging", samples["frozen"],
                f"cf. lease {lease:g} s"))  # fmt: skip
    if any(timeouts.values()):
        report(f"  {'runs without a new forger within 120 s':44s} "
               + ", ".join(f"{k} {v}" for k, v in timeouts.items()))  # fmt: skip
    report(f"  {'sidecar RSS during the runs':44s} median {statistics.median(rss):6.1f} MiB  "
           f"max {max(rss):6.1f} MiB   target < 60 MB")  # fmt: skip
    for role in sorted({r for r, _, _ in idle}):
        mine = [(c, m) for r, c, m in idle if r == role]
        cpu, mem = statistics.mean(c for c, _ in mine), max(m for _, m in mine)
        report(f"  idle {role:39s} CPU {cpu:5.2f} % of a core  RSS {mem:6.1f} MiB  "
               f"(n={len(mine)}, {IDLE_WINDOW_S:g} s)")  # fmt: skip
    per_pod = (loaded[""] - baseline[""]) / pods_n
    lease_rate = (loaded.get("leases", 0.0) - baseline.get("leases", 0.0)) / pods_n
    report(f"  {'API requests per pod (local election only)':44s} {per_pod:5.2f} /s "
           f"(leases {lease_rate:.2f} /s; API server's own baseline {baseline['']:.2f} /s "
           "subtracted)")  # fmt: skip
    open_per_pod = (watches.get("leases", 0.0) - watches_before.get("leases", 0.0)) / pods_n
    report(f"  {'watches open per pod (leases)':44s} {open_per_pod:5.2f}")
    report(f"  {'overlapping forging':44s} {overlap:.0f} ms   target 0")
    return overlap == 0 and not any(timeouts.values())


# ---- two regions --------------------------------------------------------------------------------
def cluster_section(
    runs: int,
    pods_n: int,
    root: Path,
    report: Callable[[str], None],
    *,
    extra_env: dict[str, str] | None = None,
    health_runs: bool = True,
    planned_runs: int = 0,
) -> bool:
    cp = ControlPlane(root=root / "cp")
    cp.start()
    ns = namespace(cp, "bench")
    install_crd(cp)
    threshold = int(BENCH_CLUSTER_TIMING["HEALTH_CHECK_FAILURE_THRESHOLD"])
    retry = float(DEFAULT_TIMING["LEASE_RETRY_PERIOD"])
    health: list[float] = []
    health_total: list[float] = []
    failback: list[float] = []
    partition: list[float] = []
    partition_stop: list[float] = []
    partition_back: list[float] = []
    planned: list[float] = []
    traces: list[dict[str, float]] = []
    offset = time.time() - now()
    timeouts = 0
    baseline = request_rate(cp, IDLE_WINDOW_S)
    watches_before = open_watches(cp)
    r = Regions(cp, ns, root / "regions", {"east": 1, "west": 2}, pods_per_region=pods_n,
                guard=True, via_proxy=True, timing=DEFAULT_TIMING,
                cluster_timing={**BENCH_CLUSTER_TIMING, **(extra_env or {})})  # fmt: skip

    def in_region(region: str) -> list[ForgePod]:
        return r.pods[region]

    def wait_region(region: str) -> ForgePod:
        def check() -> bool:
            f = r.forgers()
            return len(f) == 1 and r.region_of(f[0]) == region

        wait_for(check, WAIT, f"one forger, in {region}")
        time.sleep(2 * retry)  # let both regions publish their status
        return r.forgers()[0]

    try:
        r.start()
        wait_region("east")
        loaded = request_rate(cp, IDLE_WINDOW_S)
        watches = open_watches(cp)
        for _ in range(planned_runs):
            old = wait_region("east")
            t0 = now()
            r.replace(old)  # deleted (node, then sidecar) and recreated, as by the StatefulSet
            wait_for(lambda: len(r.forgers()) == 1, WAIT, "a new forger")
            successor = r.forgers()[0]
            planned.append(first_start_after(r.all_pods, t0) - t0)
            traces.append(handover_trace(old, successor, t0, offset))
            print(f"cluster planned run {len(planned)}: {planned[-1]:.2f} s to {successor.name} "
                  f"({trace_text(traces[-1])})", file=sys.stderr)  # fmt: skip
        for _ in range(runs if health_runs else 0):
            old = wait_region("east")
            t0 = now()
            r.health["east"].status = 503
            wait_region("west")
            crossing = [t for t, s in r.health["east"].answers if t > t0 and s == 503][
                threshold - 1
            ]
            new = first_start_after(in_region("west"), t0)
            health.append(new - crossing)
            health_total.append(new - t0)
            t1 = now()
            r.health["east"].status = 200
            wait_region("east")
            failback.append(first_start_after(in_region("east"), t1) - t1)
            print(f"cluster health run {len(health)}: {health[-1]:.2f} s", file=sys.stderr)
            del old
        for _ in range(runs):
            old = wait_region("east")
            t0 = now()
            r.proxies["east"].partition("blackhole")
            try:
                wait_region("west")
            except AssertionError as exc:
                timeouts += 1
                timed_out(r.pods["east"] + r.pods["west"], "cluster partition", exc)
                r.proxies["east"].heal()
                continue
            partition.append(first_start_after(in_region("west"), t0) - t0)
            partition_stop.append(first_stop_after(old, t0) - t0)
            t1 = now()
            r.proxies["east"].heal()
            wait_region("east")
            partition_back.append(first_start_after(in_region("east"), t1) - t1)
            print(f"cluster partition run {len(partition)}: {partition[-1]:.2f} s", file=sys.stderr)
    finally:
        r.stop()
        cp.stop()
    overlap = overlap_ms(r.spans())
    lease = float(DEFAULT_TIMING["LEASE_DURATION"])
    report(f"two regions x {pods_n} pods, cluster management, forge-guard on (lease 15/10/2; "
           "health every 2 s, timeout 1 s, threshold 3"
           + "".join(f"; {k}={v}" for k, v in (extra_env or {}).items()) + ")")  # fmt: skip
    if planned_runs:
        report(line("planned handover (east's forger deleted)", planned, "target p95 < 3 s"))
        for key, what in PHASES:
            steps = [t[key] for t in traces if key in t]
            if steps and key != "forging":
                report(line(f"  deletion to {what}", steps))
    report(line("health: threshold-crossing check -> west", health))
    report(line("health: first failed check -> west", health_total))
    report(line("failback: east healthy again -> east", failback,
                f"(health walks {threshold}..0, one check each)"))  # fmt: skip
    report(line("partition: east cut off -> west forging", partition,
                f"target p95 <= lease + 1 s = {lease + 1:g} s"))  # fmt: skip
    report(line("partition: east cut off -> east stopped", partition_stop,
                "renew deadline 10 s"))  # fmt: skip
    report(line("partition healed -> east forging again", partition_back))
    pods_total = 2 * pods_n
    per_pod = (loaded[""] - baseline[""]) / pods_total
    report(f"  {'API requests per pod (cluster management)':44s} {per_pod:5.2f} /s (leases "
           f"{(loaded.get('leases', 0) - baseline.get('leases', 0)) / pods_total:.2f} /s, "
           f"cardanoforgeclusters "
           f"{loaded.get('cardanoforgeclusters', 0) / pods_total:.2f} /s)")  # fmt: skip
    open_per_pod = (watches.get("leases", 0.0) - watches_before.get("leases", 0.0)) / pods_total
    report(f"  {'watches open per pod (leases)':44s} {open_per_pod:5.2f}")
    if timeouts:
        report(f"  {'partition runs without west forging in 120 s':44s} {timeouts}")
    report(f"  {'overlapping forging':44s} {overlap:.0f} ms   target 0")
    return overlap == 0 and not timeouts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pods", type=int, default=3, help="pods (per region for cluster)")
    parser.add_argument("--sections", default="local,cluster", help="local, cluster or both")
    parser.add_argument("--cluster-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra forge-manager environment for the cluster section, e.g. "
                        "CLUSTER_STALE_AFTER=12")  # fmt: skip
    parser.add_argument("--local-kinds", default=",".join(LOCAL_KINDS),
                        help="local section: planned, unplanned and/or frozen")  # fmt: skip
    parser.add_argument("--no-health-runs", action="store_true",
                        help="cluster section: partition runs only")  # fmt: skip
    parser.add_argument("--cluster-planned", type=int, default=0, metavar="N",
                        help="cluster section: first N planned handovers (east's forging pod "
                        "deleted, as bench/pods.py does on real pods)")  # fmt: skip
    parser.add_argument("--keep", metavar="DIR", type=Path,
                        help="work in DIR and keep it (the pods' logs and event logs)")  # fmt: skip
    args = parser.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    extra = dict(item.split("=", 1) for item in args.cluster_env if "=" in item)
    if not sections or set(sections) - {"local", "cluster"}:
        parser.error("--sections takes local, cluster or local,cluster")
    kinds = [k.strip() for k in args.local_kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - set(LOCAL_KINDS):
        parser.error("--local-kinds takes planned, unplanned and frozen, comma-separated")
    lines: list[str] = []
    ok = True
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep.resolve())
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="failover-bench-"))
        if "local" in sections:
            ok &= local_section(args.runs, args.pods, Path(tmp) / "local", lines.append, kinds)
        if "cluster" in sections:
            pods = min(args.pods, 2)
            ok &= cluster_section(args.runs, pods, Path(tmp) / "cluster", lines.append,
                                  extra_env=extra, health_runs=not args.no_health_runs,
                                  planned_runs=args.cluster_planned)  # fmt: skip
    print("\n".join(lines), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
