"""Failover figures of three regions coordinating through an etcd quorum, and what a quorum write
costs across regions.

``failover``: three simulated regions on loopback (``east`` priority 1, ``west`` 2, ``witness``
3), each with its etcd member, one forge pod (forge manager + cardano-node stand-in under
``forge-guard``) and its own namespace standing for its own cluster, every byte between regions
through breakable links (:mod:`tests.harness.quorum_regions`); default timings (LEASE_DURATION
15, LEASE_RENEW_DEADLINE 10, LEASE_RETRY_PERIOD 2, KUBE_REQUEST_TIMEOUT 1), health checked every
2 s. Times come from the stand-ins' CLOCK_BOOTTIME event logs; every run is checked for overlap.

* region lost: east (forging) loses its etcd member and its pod at once (SIGKILL), either with
  every region calling its own member first or with every region calling east's member first;
  kill to a west node forging; then east restored (member restarted on its data, pod recreated)
  to east forging again (a hand-over);
* partition: east cut off from west and witness (Raft traffic and managers' calls both ways);
  cut to east's node stopping and to a west node forging, and the gap between them; healed to
  east forging again.

``renew``: the cost of the pool lock's cycle (a linearizable read, then the compare-and-swap
write) from a region's manager through its own member, with the same one-way latency on every
link between members, with the Raft leader in the caller's region and elsewhere. etcd's
heartbeat interval and election timeout follow etcd's tuning guide for the latency (heartbeat
about the round trip, election timeout ten heartbeats).

Run: ``python -m bench.quorum --runs 5`` (``--sections failover`` or ``renew``; ``--delays``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from forge_manager.cluster.etcd_client import Etcd
from forge_manager.cluster.etcd_settings import EtcdSettings
from forge_manager.cluster.etcd_store import EtcdPoolLease

from bench.failover import BENCH_CLUSTER_TIMING, DEFAULT_TIMING, line, overlap_ms
from tests.harness.controlplane import ControlPlane
from tests.harness.etcd_quorum import EtcdQuorum
from tests.harness.forge_pod import wait_for
from tests.harness.forging_log import Interval, longest_gap
from tests.harness.node_standin import now
from tests.harness.quorum_regions import QuorumRegions
from tests.harness.regionnet import RegionNet
from tests.harness.regions import install_crd

PRIORITIES = {"east": 1, "west": 2, "witness": 3}
WAIT = 180.0
CLUSTER_TIMING = {**BENCH_CLUSTER_TIMING, "CLUSTER_HEARTBEAT_INTERVAL": "5"}


def _starts(spans: Sequence[Interval], after: float, nodes: set[str]) -> list[float]:
    return [s.start for s in spans if s.start > after and s.node.split("/")[0] in nodes]


def _stop(spans: Sequence[Interval], after: float, nodes: set[str]) -> float | None:
    ends = [s.end for s in spans if s.node.split("/")[0] in nodes and s.start <= after]
    closed = [e for e in ends if e is not None and e >= after]
    return max(closed) if closed and None not in ends else None


def _nodes(r: QuorumRegions, region: str) -> set[str]:
    return {p.node_name for p in r.every_pod if r.region_of(p) == region}


def _steady(r: QuorumRegions, region: str, seconds: float = 4.0) -> None:
    since: list[float] = []

    def check() -> bool:
        if r.forging_regions() != [region]:
            since.clear()
            return False
        since.append(time.monotonic())
        return since[-1] - since[0] >= seconds

    wait_for(check, WAIT, f"{region} alone forging for {seconds:g} s", interval=0.2)


# ---- failover ------------------------------------------------------------------------------------
def failover_section(
    runs: int,
    lost_first_runs: int,
    root: Path,
    report: Callable[[str], None],
    kinds: Sequence[str] = ("loss", "partition"),
) -> bool:
    cp = ControlPlane(root=root / "cp")
    cp.start()
    ok = True
    try:
        install_crd(cp)
        lost: dict[str, list[float]] = {"own": [], "lost": []}
        restored: list[float] = []
        cut_stop: list[float] = []
        cut_take: list[float] = []
        cut_gap: list[float] = []
        healed: list[float] = []
        overlap = 0.0
        order_lost_first = {
            r: ["east", *(x for x in PRIORITIES if x != "east")] for r in PRIORITIES
        }
        plans = [("own", runs, None), ("lost", lost_first_runs, order_lost_first)]
        if "loss" not in kinds:
            plans = []
        for first, n, order in plans:
            if n <= 0:
                continue
            r = QuorumRegions(cp, root / f"loss-{first}", PRIORITIES, timing=DEFAULT_TIMING,
                              cluster_timing=CLUSTER_TIMING, endpoint_order=order)  # fmt: skip
            try:
                r.start()
                for _ in range(n):
                    _steady(r, "east")
                    t0 = now()
                    r.kill_region("east")
                    _steady(r, "west")
                    lost[first].append(min(_starts(r.spans(), t0, _nodes(r, "west"))) - t0)
                    t1 = now()
                    r.restore_region("east")
                    _steady(r, "east")
                    restored.append(min(_starts(r.spans(), t1, _nodes(r, "east"))) - t1)
                    print(f"region lost ({first} member first) run {len(lost[first])}: "
                          f"{lost[first][-1]:.2f} s", file=sys.stderr)  # fmt: skip
            finally:
                r.stop()
            overlap += overlap_ms(r.spans())
        r = QuorumRegions(cp, root / "partition", PRIORITIES, timing=DEFAULT_TIMING,
                          cluster_timing=CLUSTER_TIMING)  # fmt: skip
        try:
            r.start()
            for _ in range(runs if "partition" in kinds else 0):
                _steady(r, "east")
                t0 = now()
                r.partition("east")
                _steady(r, "west")
                spans = r.spans()
                stop = _stop(spans, t0, _nodes(r, "east"))
                take = min(_starts(spans, t0, _nodes(r, "west")))
                if stop is not None:
                    cut_stop.append(stop - t0)
                    cut_gap.append(take - stop)
                cut_take.append(take - t0)
                t1 = now()
                r.heal("east")
                _steady(r, "east")
                healed.append(min(_starts(r.spans(), t1, _nodes(r, "east"))) - t1)
                gap = longest_gap(r.spans(), t0, now())
                print(f"partition run {len(cut_take)}: west {cut_take[-1]:.2f} s, "
                      f"longest gap {gap:.2f} s", file=sys.stderr)  # fmt: skip
        finally:
            r.stop()
        overlap += overlap_ms(r.spans())
    finally:
        cp.stop()
    lease = float(DEFAULT_TIMING["LEASE_DURATION"])
    report("three regions on an etcd quorum (east 1, west 2, witness 3; one pod each; lease "
           "15/10/2, request timeout 1 s; etcd heartbeat 100 ms, election 1000 ms; no added "
           "latency)")  # fmt: skip
    report(line("region lost (own member first) -> west", lost["own"],
                f"cf. lease + 2 s = {lease + 2:g} s"))  # fmt: skip
    report(line("region lost (lost member first) -> west", lost["lost"],
                f"cf. lease + 2 s = {lease + 2:g} s"))  # fmt: skip
    report(line("region restored -> east forging again", restored, "(a hand-over)"))
    report(line("partition: east cut off -> east stopped", cut_stop, "renew deadline 10 s"))
    report(line("partition: east cut off -> west forging", cut_take,
                f"cf. lease + 2 s = {lease + 2:g} s"))  # fmt: skip
    report(line("partition: east stopped -> west forging (gap)", cut_gap))
    report(line("partition healed -> east forging again", healed, "(a hand-over)"))
    report(f"  {'overlapping forging':44s} {overlap:.0f} ms   target 0")
    ok &= overlap == 0
    return ok


# ---- renew latency -------------------------------------------------------------------------------
def _move_leader(quorum: EtcdQuorum, to: str) -> None:
    wait_for(lambda: quorum.leader() is not None, WAIT, "an etcd leader")
    quorum.move_leader(to)
    wait_for(lambda: quorum.leader() == to, WAIT, f"the etcd leader in {to}")


def _ms(samples: Sequence[float]) -> str:
    if not samples:
        return "n=0"
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {1000 * statistics.median(samples):6.1f} ms  p95 {1000 * p95:6.1f} ms"


def renew_section(
    samples: int, delays_ms: Sequence[int], root: Path, report: Callable[[str], None]
) -> bool:
    report(f"pool lock cycle from east through its own member (linearizable read, then the "
           f"compare-and-swap write), {samples} cycles each; same one-way latency between every "
           f"two members")  # fmt: skip
    base: dict[str, float] = {}
    for delay in delays_ms:
        heartbeat = max(100, 2 * delay)  # about the round trip
        election = 10 * heartbeat
        net = RegionNet()
        (root / f"renew-{delay}").mkdir(parents=True)
        quorum = EtcdQuorum(root / f"renew-{delay}", list(PRIORITIES), net,
                            heartbeat_ms=heartbeat, election_ms=election)  # fmt: skip
        try:
            quorum.start()
            net.set_all_delays(delay / 1000)
            etcd = Etcd(
                EtcdSettings((quorum.members["east"].client_url,), None, None, None, "/b"),
                timeout=10.0,
            )
            lock = EtcdPoolLease(etcd, key=f"/b/{delay}/lease", identity="east/bp-0",
                                 lease_duration=15)  # fmt: skip
            lock.create_vacant()
            vacant = lock.read()
            assert vacant is not None
            record = lock.acquire(vacant, lock.new_renew_stamp())
            for leader in ("east", "west"):
                _move_leader(quorum, leader)
                reads: list[float] = []
                writes: list[float] = []
                cycles: list[float] = []
                for _ in range(samples):
                    t0 = time.monotonic()
                    seen = lock.read()
                    t1 = time.monotonic()
                    assert seen is not None and seen.resource_version == record.resource_version
                    record = lock.renew(seen, lock.new_renew_stamp())
                    t2 = time.monotonic()
                    reads.append(t1 - t0)
                    writes.append(t2 - t1)
                    cycles.append(t2 - t0)
                cycle = statistics.median(cycles)
                base.setdefault(leader, cycle)
                report(f"  {delay:3d} ms one way (etcd heartbeat {heartbeat} ms, election "
                       f"{election} ms), leader in {leader:5s}: read {_ms(reads)}; write "
                       f"{_ms(writes)}; cycle {_ms(cycles)}; extra over "
                       f"{delays_ms[0]} ms: {1000 * (cycle - base[leader]):+.0f} ms")  # fmt: skip
        finally:
            quorum.stop()
            net.stop()
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="failover runs per kind")
    parser.add_argument("--lost-first-runs", type=int, help="region-lost runs with every "
                        "region calling the lost member first (default: --runs)")  # fmt: skip
    parser.add_argument("--samples", type=int, default=30, help="renew cycles per setting")
    parser.add_argument("--delays", default="0,20,80,150", help="one-way latencies in ms")
    parser.add_argument("--sections", default="renew,failover", help="renew, failover or both")
    parser.add_argument("--failover-kinds", default="loss,partition",
                        help="failover section: loss, partition or both")  # fmt: skip
    args = parser.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if not sections or set(sections) - {"renew", "failover"}:
        parser.error("--sections takes renew, failover or renew,failover")
    try:
        delays = [int(d) for d in args.delays.split(",") if d.strip()]
    except ValueError:
        parser.error(f"--delays={args.delays!r}: expected milliseconds such as 0,20,80,150")
    if not delays or min(delays) < 0:
        parser.error("--delays needs at least one latency of 0 ms or more")
    lost_first = args.runs if args.lost_first_runs is None else args.lost_first_runs
    kinds = [k.strip() for k in args.failover_kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - {"loss", "partition"}:
        parser.error("--failover-kinds takes loss, partition or loss,partition")
    lines: list[str] = []
    ok = True
    with tempfile.TemporaryDirectory(prefix="quorum-bench-") as tmp:
        if "renew" in sections:
            ok &= renew_section(args.samples, delays, Path(tmp) / "renew", lines.append)
            print("\n".join(lines), flush=True)
            lines.clear()
        if "failover" in sections:
            ok &= failover_section(
                args.runs, lost_first, Path(tmp) / "failover", lines.append, kinds
            )
            print("\n".join(lines), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
