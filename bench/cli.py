"""Figures of the cardano-forge CLI: status latency and the gap of a region switchover.

A private control plane, two regions (east priority 1, west priority 2) of two pods each (forge
manager + cardano-node stand-in under forge-guard, as local processes, with Pod objects reached
through the API server's pod proxy), the default timings (lease 15/10/2, request timeout 1,
heartbeat 5 s, stale after 12 s; health every 2 s).

* ``status``: the installed command (``python -m cardano_forge_cli status``) end to end
  (interpreter start included), and the same read in process (``collect``: pods, Leases,
  CardanoForgeClusters and four managers' ``/metrics`` through the pod proxy);
* ``switchover --to-region``, alternating west and east: the command's duration (plan, overrides
  written, waiting until the target forges), the gap with no forger from the stand-ins' own
  logs, and the gap bounds the CLI printed (from the managers' metrics sampled every 0.2 s);
  every run is checked for overlap (two forgers);
* ``switchover --to-pod``, alternating between the two pods of the forging region: the command's
  duration and the gap with no forger from the stand-ins' logs (the forge managers' pod switchover:
  request, ready answer, demotion, release naming the pod, its acquire, the pool-wide Lease
  following).

Run: ``python -m bench.cli --runs 10``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cardano_forge_cli.inventory import Scope, collect
from cardano_forge_cli.kube import Kube, Target

from tests.cli.cli_run import cardano_forge
from tests.cli.live_regions import CHART_CLUSTER_TIMING, CHART_TIMING, hand_over, live_regions
from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import wait_for
from tests.harness.forging_log import overlaps
from tests.harness.node_standin import now
from tests.harness.pod_objects import host_address
from tests.harness.regions import Regions

WAIT = 180.0


def stats(values: Sequence[float], unit: str = "s", scale: float = 1.0) -> str:
    if not values:
        return "no samples"
    v = sorted(x * scale for x in values)
    p95 = v[min(len(v) - 1, round(0.95 * (len(v) - 1)))]
    return (
        f"median {statistics.median(v):7.2f} {unit}  p95 {p95:7.2f} {unit}  "
        f"max {v[-1]:7.2f} {unit}  (n={len(v)})"
    )


def forging_region(r: Regions) -> str | None:
    found = r.forgers()
    return r.region_of(found[0]) if len(found) == 1 else None


def printed_gap(text: str) -> tuple[float, float] | None:
    marker = "no node forged for "
    if marker not in text:
        return None
    low, high = text.split(marker, 1)[1].split(" s ", 1)[0].split(" to ")
    return (float(low) if low != "?" else 0.0), float(high)


def run(runs: int, root: Path, report: Callable[[str], None]) -> bool:
    address = host_address()
    if address is None:
        report("no non-loopback IPv4 address on this host: the pod proxy cannot reach the managers")
        return False
    cp = ControlPlane(root=root / "cp")
    cp.start()
    try:
        ns = "bench-cli"
        with live_regions(
            cp,
            ns,
            root / "regions",
            {"east": 1, "west": 2},
            address=address,
            timing=CHART_TIMING,
            cluster_timing=CHART_CLUSTER_TIMING,
            never_two=False,  # counted below, as a figure
        ) as r:
            wait_for(lambda: forging_region(r) == "east", WAIT, "east to forge")
            wait_for(
                lambda: (r.cfc("west").get("status") or {}).get("effectivePriority") == 2,
                WAIT,
                "west to publish its status",
            )

            command, in_process = [], []
            with Kube(Target(str(cp.kubeconfig))) as kube:
                for _ in range(runs):
                    started = time.monotonic()
                    collect(kube, None, Scope(namespace=ns))
                    in_process.append(time.monotonic() - started)
                    done = cardano_forge("status", kubeconfig=cp.kubeconfig, namespace=ns)
                    assert done.code == 0, done
                    command.append(done.seconds)
            report(line("status, the command (interpreter start included)", command))
            report(line("status, in process (collect)", in_process))

            took, gaps, cli_high, cli_low = [], [], [], []
            target = "west"
            for i in range(runs):
                old = r.forgers()[0]
                started = now()
                done = cardano_forge(
                    "switchover",
                    "--to-region",
                    target,
                    "--yes",
                    "--for",
                    "1h",
                    kubeconfig=cp.kubeconfig,
                    namespace=ns,
                )
                assert done.code == 0, done
                wait_for(lambda t=target: forging_region(r) == t, WAIT, f"{target} to forge")
                new = r.forgers()[0]
                stop, start = hand_over(r, old, new, started)
                took.append(done.seconds)
                gaps.append(start - stop)
                bounds = printed_gap(done.out)
                if bounds is not None:
                    cli_low.append(bounds[0])
                    cli_high.append(bounds[1])
                print(
                    f"switchover {i + 1} to {target}: command {done.seconds:.1f} s, gap "
                    f"{(start - stop) * 1000:.0f} ms, CLI said {bounds}",
                    file=sys.stderr,
                )
                target = "east" if target == "west" else "west"
            report(line("switchover --to-region: the command", took))
            report(line("switchover: no forger (stand-ins' logs)", gaps, scale=1000, unit="ms"))
            report(line("switchover: CLI's upper bound", cli_high, scale=1000, unit="ms"))
            report(line("switchover: CLI's lower bound", cli_low, scale=1000, unit="ms"))

            pod_took, pod_gaps = [], []
            for i in range(runs):
                old = r.forgers()[0]
                region = r.region_of(old)
                new = next(p for p in r.pods[region] if p is not old)
                wait_for(
                    lambda p=new: p.metric("cardano_node_synced") == 1, WAIT, f"{new.name} synced"
                )
                started = now()
                done = cardano_forge(
                    "switchover",
                    "--to-pod",
                    new.name,
                    "--yes",
                    "--timeout",
                    "120s",
                    kubeconfig=cp.kubeconfig,
                    namespace=ns,
                )
                assert done.code == 0, done
                wait_for(lambda p=new: r.forgers() == [p], WAIT, f"{new.name} to forge")
                stop, start = hand_over(r, old, new, started)
                pod_took.append(done.seconds)
                pod_gaps.append(start - stop)
                print(
                    f"pod switchover {i + 1} {old.name} -> {new.name}: command "
                    f"{done.seconds:.1f} s, gap {(start - stop) * 1000:.0f} ms",
                    file=sys.stderr,
                )
            report(line("switchover --to-pod: the command", pod_took))
            report(line("pod switchover: no forger (stand-ins' logs)", pod_gaps, 1000, "ms"))
            overlap = sum(o.seconds for o in overlaps(r.spans(), until=now())) * 1000
            report(f"  {'two nodes forging at once':50s} {overlap:.0f} ms   target 0")
            return overlap == 0
    finally:
        cp.stop()


def line(label: str, values: Sequence[float], scale: float = 1.0, unit: str = "s") -> str:
    return f"  {label:50s} {stats(values, unit, scale)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    lines = ["cardano-forge CLI: two regions x 2 pods, forge-guard on, lease 15/10/2"]
    with tempfile.TemporaryDirectory(prefix="cli-bench-") as tmp:
        ok = run(args.runs, Path(tmp), lines.append)
    print("\n".join(lines), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
