"""Planned-handover and unplanned-failover times of the forge manager, and its memory.

Starts a private control plane (etcd + kube-apiserver on loopback) and a pool of pods (forge
manager + cardano-node stand-in each, as local processes) with the default timings
(LEASE_DURATION 15, LEASE_RENEW_DEADLINE 10, LEASE_RETRY_PERIOD 2, KUBE_REQUEST_TIMEOUT 1), then:

* planned handover: the forging pod is deleted (node SIGTERM, then the sidecar SIGTERM, the
  native-sidecar order); time from the deletion to another node's ``forging_started``;
* unplanned failover: the forging pod's manager and node are killed with SIGKILL; time from the
  kill to another node's ``forging_started`` (expected: about the lease duration);

each over ``--runs`` runs (median and worst), checking every run for overlapping forging, and the
resident memory (VmRSS) of each sidecar. Run: ``python -m bench.failover --runs 5``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

from kubernetes import client

from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import ForgePod, all_events, wait_for, write_pool_secret
from tests.harness.forging_log import forging_at, intervals, overlaps
from tests.harness.node_standin import now

DEFAULT_TIMING = {
    "LEASE_DURATION": "15",
    "LEASE_RENEW_DEADLINE": "10",
    "LEASE_RETRY_PERIOD": "2",
    "KUBE_REQUEST_TIMEOUT": "1",
}


def forger(pods: list[ForgePod]) -> ForgePod | None:
    active = forging_at(intervals(all_events(pods)), now())
    found = [p for p in pods if any(a.startswith(p.node_name + "/") for a in active)]
    if len(found) > 1:
        raise AssertionError(f"two forgers: {[p.name for p in found]}")
    return found[0] if found else None


def first_start_after(pods: list[ForgePod], t0: float) -> float:
    starts = [e["t"] for e in all_events(pods) if e["event"] == "forging_started" and e["t"] > t0]
    return float(min(starts))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(runs: int, pods_n: int, root: Path) -> int:
    cp = ControlPlane(root=root / "cp")
    cp.start()
    namespace = "bench"
    with cp.api_client() as api:
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
        )
    secret = write_pool_secret(root / "secret")
    generation = 0
    token = uuid.uuid4().hex[:4]  # node names unique on a shared host

    def new_pod(i: int) -> ForgePod:
        nonlocal generation
        generation += 1
        return ForgePod(f"bp-{i}", root / f"g{generation}", cp.kubeconfig, namespace, secret,
                        timing=DEFAULT_TIMING, node_name=f"cnb{token}-{generation}")  # fmt: skip

    pods = [new_pod(i) for i in range(pods_n)]
    everyone = list(pods)
    planned: list[float] = []
    unplanned: list[float] = []
    rss: list[float] = []
    try:
        for p in pods:
            p.start()
        for kind, samples in (("planned", planned), ("unplanned", unplanned)):
            for _ in range(runs):
                wait_for(lambda: forger(pods) is not None, 60, "a forger")
                old = forger(pods)
                assert old is not None
                for p in pods:
                    if p.manager is not None:
                        rss.append(rss_mib(p.manager.pid))
                t0 = now()
                if kind == "planned":
                    old.stop()
                else:
                    old.kill9()
                rest = [p for p in pods if p is not old]
                wait_for(lambda r=rest: forger(r) is not None, 60, "a new forger")  # type: ignore[misc]
                samples.append(first_start_after(rest, t0) - t0)
                index = pods.index(old)
                replacement = new_pod(int(old.name.split("-")[1]))
                replacement.start()
                pods[index] = replacement
                everyone.append(replacement)
                print(f"{kind} run {len(samples)}: {samples[-1]:.2f} s", file=sys.stderr)
    finally:
        for p in pods:
            p.stop()
        cp.stop()
    spans = intervals(all_events(everyone))
    overlap = overlaps(spans, until=now())
    print("forge-manager failover (default timings: lease 15 s, renew deadline 10 s, retry 2 s)")
    for name, samples in (("planned handover (pod deleted)", planned),
                          ("unplanned failover (kill -9)", unplanned)):  # fmt: skip
        print(f"  {name:32s} n={len(samples)}  median {statistics.median(samples):6.2f} s  "
              f"worst {max(samples):6.2f} s")  # fmt: skip
    print(f"  sidecar RSS                      median {statistics.median(rss):6.1f} MiB  "
          f"max {max(rss):6.1f} MiB")  # fmt: skip
    print(f"  overlapping forging              {sum(o.seconds for o in overlap) * 1000:.0f} ms")
    return 1 if overlap else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pods", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="failover-bench-") as tmp:
        return run(args.runs, args.pods, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
