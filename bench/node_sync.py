"""Hand-over figures of the node sync check: a leader whose node falls behind the chain.

Starts a private control plane and two pods (forge manager + cardano-node stand-in under
``forge-guard`` each, as local processes) with the default Lease timings (15 / 10 / 2 / 1 s) and
``NODE_SYNC_MAX_LAG_SLOTS`` 30. Each run makes the forging node's tip lag 600 slots behind the
wall clock (the stand-in's tip-lag file) and measures, from the stand-ins' CLOCK_MONOTONIC event
logs: the lag to the old node stopping, the lag to the other node forging, that time minus the
grace (the cost of detection, settle and acquisition beyond the grace), and the gap with no forger.
Then the lagging node catches up (a synced standby again) and the next run lags the new forger.
Every run is checked for overlap.

Run: ``python -m bench.node_sync --runs 10 --grace 10``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import ForgePod, all_events, wait_for, write_pool_secret
from tests.harness.forging_log import intervals, overlaps
from tests.harness.node_standin import now
from tests.harness.regions import create_namespace

DEFAULT_TIMING = {
    "LEASE_DURATION": "15",
    "LEASE_RENEW_DEADLINE": "10",
    "LEASE_RETRY_PERIOD": "2",
    "KUBE_REQUEST_TIMEOUT": "1",
}
WAIT = 120.0
BEHIND = 600


def forger(pods: list[ForgePod]) -> ForgePod | None:
    forging = [p for p in pods if p.forging()]
    return forging[0] if len(forging) == 1 else None


def line(label: str, values: list[float]) -> str:
    return (f"  {label:44s} min {min(values):6.2f}  median {statistics.median(values):6.2f}  "
            f"max {max(values):6.2f} s  (n={len(values)})")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--grace", type=float, default=10.0, help="NODE_SYNC_GRACE_SECONDS")
    args = parser.parse_args()
    env = {"NODE_SYNC_MAX_LAG_SLOTS": "30", "NODE_SYNC_GRACE_SECONDS": f"{args.grace:g}"}
    samples: dict[str, list[float]] = {"stop": [], "forge": [], "beyond": [], "gap": []}
    with tempfile.TemporaryDirectory(prefix="node-sync-bench-") as tmp:
        root = Path(tmp)
        cp = ControlPlane(root=root / "cp")
        cp.start()
        token = uuid.uuid4().hex[:4]
        pods: list[ForgePod] = []
        try:
            create_namespace(cp, "bench")
            secret = write_pool_secret(root / "secret")
            pods = [
                ForgePod(f"bp-{i}", root, cp.kubeconfig, "bench", secret, timing=DEFAULT_TIMING,
                         node_name=f"cns{token}-{i}", guard=True, extra_env=env)
                for i in range(2)
            ]  # fmt: skip
            for p in pods:
                p.start()
            for run in range(args.runs):
                wait_for(lambda: forger(pods) is not None, WAIT, "a forger")
                old = forger(pods)
                assert old is not None
                new = next(p for p in pods if p is not old)
                wait_for(lambda n=new: n.metric("cardano_node_synced") == 1.0, WAIT,  # type: ignore[misc]
                         "the standby to be synced")  # fmt: skip
                t0 = now()
                old.set_tip_lag(BEHIND)
                wait_for(new.forging, WAIT, "the synced standby to forge")
                spans = intervals(all_events(pods))
                stop = max(s.end for s in spans if s.node.startswith(old.node_name + "/")
                           and s.end is not None)  # fmt: skip
                start = min(s.start for s in spans if s.node.startswith(new.node_name + "/")
                            and s.start > t0)  # fmt: skip
                samples["stop"].append(stop - t0)
                samples["forge"].append(start - t0)
                samples["beyond"].append(start - t0 - args.grace)
                samples["gap"].append(start - stop)
                print(f"run {run + 1}: lag to next forger {start - t0:.2f} s", file=sys.stderr)
                old.set_tip_lag(0)
        finally:
            for p in pods:
                p.stop()
            cp.stop()
        found = overlaps(intervals(all_events(pods)), until=now())
    print(f"node sync hand-over, 2 pods, forge-guard on (lease 15 s, renew deadline 10 s, "
          f"retry 2 s), NODE_SYNC_GRACE_SECONDS {args.grace:g}, max lag 30 slots, lag set "
          f"to {BEHIND} slots")  # fmt: skip
    print(line("lag set -> lagging node stopped forging", samples["stop"]))
    print(line("lag set -> synced standby forging", samples["forge"]))
    print(line("beyond the grace -> synced standby forging", samples["beyond"]))
    print(line("gap with no forger", samples["gap"]))
    overlap_ms = sum(o.seconds for o in found) * 1000
    print(f"  {'overlapping forging':44s} {overlap_ms:.0f} ms   target 0")
    return 0 if not found else 1


if __name__ == "__main__":
    sys.exit(main())
