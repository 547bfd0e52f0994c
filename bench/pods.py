"""Figures of the chart on real pods: two regions installed with helm on the single-node cluster.

Starts a private control plane and the node (``tests.harness.node``; root, ``make node-tools``,
``make images``), then installs the chart for regions east (priority 1) and west (priority 2),
two pods each, as the real-pod tests do (``tests.harness.pod_pool``: the built images, the
cardano-node stand-in, a real Prometheus and each region's health endpoint, the chart's default
Lease timings 15/10/2 s), and measures, from the stand-ins' CLOCK_BOOTTIME event logs:

* ``install``: ``helm install`` of both regions to the first node forging (``--installs``
  times: each a fresh install into fresh namespaces, the previous one uninstalled);
* ``handover``: ``kubectl delete pod`` of the forging pod (the kubelet stops the node, then the
  forge manager, which releases its Leases) to another node forging, ``--runs`` times;
* ``failover``: ``kubectl delete pod --grace-period=0 --force`` of the forging pod to another
  node forging, ``--runs`` times (the API object goes at once and the StatefulSet recreates the
  pod while the kubelet still stops the old one, with its minimum grace of 2 s: on a live node
  this is not a crash; a lost node is the lease duration, see ``bench/failover.py``);
* ``memory``: each container's memory from its cgroup (``memory.usage_in_bytes`` and the working
  set, usage minus inactive file pages, as the kubelet counts it), forger and standby;
* ``images``: the images' sizes (``bench/image_sizes.py``).

Between runs the pool returns to its steady state (every pod Ready, one node forging). Every run
is checked for two nodes forging at once; the total is printed (it must be 0 ms).

Run: ``python -m bench.pods --runs 20 --installs 5`` (``--sections handover,failover`` for part).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.harness import oci
from tests.harness.controlplane import ControlPlane
from tests.harness.forging_log import longest_gap
from tests.harness.node import CGROUP_ROOT, Node
from tests.harness.node_standin import now
from tests.harness.pod_pool import COORDINATION, PodPool, PoolError

SECTIONS = ("install", "handover", "failover", "memory", "images")
MIB = 1024 * 1024


def p95(samples: Sequence[float]) -> float:
    if len(samples) < 2:
        return max(samples)
    return statistics.quantiles(samples, n=20, method="inclusive")[18]


def line(name: str, samples: Sequence[float]) -> str:
    if not samples:
        return f"  {name:52s} n=0"
    return (
        f"  {name:52s} n={len(samples):<3d} median {statistics.median(samples):6.2f} s  "
        f"p95 {p95(samples):6.2f} s  max {max(samples):6.2f} s"
    )


class Bench:
    def __init__(self, node: Node, work: Path, deadline: float = float("inf")) -> None:
        self.node = node
        self.work = work
        self.deadline = deadline
        """time.monotonic() after which no further run starts (the figures say how many ran)."""
        self.overlap_s = 0.0
        self.pools = 0
        self.samples: dict[bool, tuple[list[float], list[float]]] = {}
        """Per kind of delete (forced or not): delete to next forger, time without a forger."""

    def new_pool(self) -> PodPool:
        self.pools += 1
        pool = PodPool(node=self.node, root=self.work / f"pool-{self.pools}")
        pool.prepare()
        return pool

    def finish(self, pool: PodPool) -> None:
        self.overlap_s += sum(o.seconds for o in pool.overlaps())
        pool.stop()
        for name in [r.name for r in pool.regions] + [COORDINATION]:
            self.node.kubectl("delete", "namespace", name, "--wait=true", check=False, timeout=300)

    def install(self, runs: int) -> PodPool:
        """``runs`` fresh installs; the last one is kept for the other sections."""
        times: list[float] = []
        pool: PodPool | None = None
        for run in range(runs):
            if pool is not None:
                if time.monotonic() > self.deadline:
                    break
                self.finish(pool)
            pool = self.new_pool()
            pool.install()
            first = pool.wait_one_forger(timeout=600)
            started = pool.forging_started(first, pool.installed_at)[0]["t"]
            times.append(started - pool.installed_at)
            print(f"    install {run + 1}: {first} forged {times[-1]:.1f} s after helm install",
                  flush=True)  # fmt: skip
            pool.wait_ready(600)
        assert pool is not None
        print(line("helm install (2 regions) to the first forging node", times))
        return pool

    def delete(self, pool: PodPool, runs: int, *, force: bool, quiet: bool = False) -> None:
        """``runs`` deletes (forced or not) of the forging pod; samples kept in ``self.samples``
        (printed unless ``quiet``: then ``summary`` prints them)."""
        what = "forced delete" if force else "delete"
        takeover, gaps = self.samples.setdefault(force, ([], []))
        for _ in range(runs):
            if time.monotonic() > self.deadline:
                print(f"    time budget spent: {len(takeover)} {what}(s) done")
                break
            pool.wait_ready(600)
            forger = pool.wait_one_forger(timeout=300)
            region = pool.region_of(forger)
            deleted_at = now()
            extra = ["--grace-period=0", "--force"] if force else []
            pool.node.kubectl("delete", "pod", "-n", region.name, forger, "--wait=false", *extra)
            successor = pool.wait_one_forger(timeout=300, not_in=(forger,))
            started = pool.forging_started(successor, deleted_at)[0]["t"]
            takeover.append(started - deleted_at)
            gaps.append(longest_gap(pool.spans(), deleted_at, started + 0.001))
            print(f"    {what} {len(takeover)}: {forger} -> {successor} in {takeover[-1]:.2f} s "
                  f"(no forger for {gaps[-1]:.2f} s)", flush=True)  # fmt: skip
        if not quiet:
            self.summary()

    def summary(self) -> None:
        for force, (takeover, gaps) in sorted(self.samples.items()):
            name = "failover (--force)" if force else "planned handover (kubectl delete pod)"
            print(line(f"{name}: delete to next forger", takeover))
            print(line(f"{name}: time without a forger", gaps))

    def memory(self, pool: PodPool) -> None:
        pool.wait_ready(600)
        forger = pool.wait_one_forger(timeout=300)
        print(f"  {'pod / container':52s} {'usage':>9s} {'working set':>12s}")
        rows: list[tuple[str, int, int]] = []
        for region in pool.regions:
            with pool.core() as core:
                pods = core.list_namespaced_pod(region.name).items
            for pod in sorted(pods, key=lambda p: p.metadata.name):
                role = ("forger" if pod.metadata.name == forger else
                        "standby" if "health" not in pod.metadata.name else "")  # fmt: skip
                for status in (pod.status.init_container_statuses or []) + (
                    pod.status.container_statuses or []
                ):
                    usage = cgroup_memory(pod.metadata.uid, status)
                    if usage is None:
                        continue
                    label = f"{pod.metadata.name} / {status.name} {role}".strip()
                    rows.append((label, usage[0], usage[1]))
        for name, usage, working in rows:
            print(f"  {name:52s} {usage / MIB:8.1f}M {working / MIB:11.1f}M")


def cgroup_memory(pod_uid: str, status: object) -> tuple[int, int] | None:
    """(usage, working set) in bytes of a running container, from its memory cgroup (v1)."""
    container_id = getattr(status, "container_id", None)
    state = getattr(status, "state", None)
    if not container_id or state is None or state.running is None:
        return None
    cid = container_id.split("://", 1)[1]
    for qos in ("", "burstable/", "besteffort/"):
        base = Path(f"/sys/fs/cgroup/memory/{CGROUP_ROOT}/kubepods/{qos}pod{pod_uid}/{cid}")
        if base.is_dir():
            usage = int((base / "memory.usage_in_bytes").read_text())
            lines = (ln.split() for ln in (base / "memory.stat").read_text().splitlines())
            stat = {key: int(value) for key, value in lines}
            return usage, max(0, usage - stat.get("total_inactive_file", 0))
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of handover and failover")
    parser.add_argument("--installs", type=int, default=5, help="fresh installs measured")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument(
        "--budget", type=float, default=0, help="seconds after which no run starts (0: no limit)"
    )
    args = parser.parse_args(argv)
    sections = args.sections.split(",")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    if "images" in sections:
        from bench import image_sizes  # noqa: PLC0415

        print("images (make images):")
        image_sizes.main()
    if not set(sections) - {"images"}:
        return 0
    oci.manifest()  # one line and exit 1 without make images
    started = time.monotonic()
    overlap_s = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-pods-") as tmp:
        work = Path(tmp)
        cp = ControlPlane(root=work / "cp")
        cp.start()
        node = Node(control_plane=cp, root=work / "node")
        try:
            node.start()
            print(f"node up in {node.timings.get('up_s', 0):.0f} s; "
                  f"load average {Path('/proc/loadavg').read_text().split()[0]}")  # fmt: skip
            deadline = started + args.budget if args.budget > 0 else float("inf")
            bench = Bench(node, work, deadline)
            pool = bench.install(max(1, args.installs if "install" in sections else 1))
            if "memory" in sections:
                print("memory of each container (cgroup):")
                bench.memory(pool)
            if "handover" in sections and "failover" in sections:
                # Alternate, so that a time budget spent leaves as many runs of each.
                for run in range(args.runs):
                    if time.monotonic() > deadline:
                        print(f"    time budget spent after {run} runs of each")
                        break
                    bench.delete(pool, 1, force=False, quiet=True)
                    bench.delete(pool, 1, force=True, quiet=True)
                bench.summary()
            elif "handover" in sections:
                bench.delete(pool, args.runs, force=False)
            elif "failover" in sections:
                bench.delete(pool, args.runs, force=True)
            bench.finish(pool)
            overlap_s = bench.overlap_s
            print(f"two nodes forging at once, all runs: {overlap_s * 1000:.0f} ms")
        except PoolError as exc:
            print(f"bench.pods: {exc}", file=sys.stderr)
            return 1
        finally:
            node.stop()
            cp.stop()
    print(f"bench.pods took {time.monotonic() - started:.0f} s; load average now "
          f"{Path('/proc/loadavg').read_text().split()[0]}")  # fmt: skip
    return 0 if overlap_s == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
