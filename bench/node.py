"""Figures of the single-node test cluster: start-up, pod start latency, stop.

Starts a private control plane (free ports) and the node (``tests.harness.node``), then runs
``--pods`` pods of the ``nodeprobe`` image one after another (create to ``Ready``; each pod has
no probe, so Ready means its container started) and as one batch (create of all to all Ready),
then stops the node and checks the host is as it was. Needs root and ``make node-tools``.

Run: ``python -m bench.node --pods 10``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.harness import hoststate
from tests.harness.controlplane import ControlPlane
from tests.harness.node import Node, ownership


def pod(node: Node, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": node.probe_image,
                    "imagePullPolicy": "Never",
                    "args": ["sleep"],
                }
            ],
        },
    }


def ready(core: Any, ns: str, name: str) -> bool:
    status = core.read_namespaced_pod(name, ns).status
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])


def wait_all(core: Any, ns: str, names: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending:
        pending = [n for n in pending if not ready(core, ns, n)]
        if time.monotonic() > deadline:
            raise SystemExit(f"pods not Ready within {timeout:.0f} s: {pending}")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="node-bench-") as tmp:
        cp = ControlPlane(root=Path(tmp) / "cp")
        t0 = time.monotonic()
        cp.start()
        t_cp = time.monotonic() - t0
        node = Node(control_plane=cp, root=Path(tmp) / "node")
        try:
            node.start()
            print(f"control plane ready: {t_cp:.1f} s")
            print(
                f"node Ready: {node.timings['up_s']:.1f} s (bridge API server up at "
                f"{node.timings['bridge_apiserver_s']:.1f} s, containerd at "
                f"{node.timings['containerd_s']:.1f} s, images loaded at "
                f"{node.timings['images_s']:.1f} s)"
            )
            node.create_namespace("bench")
            with cp.api_client() as api:
                core = client.CoreV1Api(api)
                latencies = []
                for i in range(args.pods):
                    start = time.monotonic()
                    core.create_namespaced_pod("bench", pod(node, f"seq-{i}"))
                    wait_all(core, "bench", [f"seq-{i}"])
                    latencies.append(time.monotonic() - start)
                lat = sorted(latencies)
                print(
                    f"pod create->Ready, one at a time ({args.pods}): median "
                    f"{statistics.median(lat):.2f} s, max {lat[-1]:.2f} s, min {lat[0]:.2f} s"
                )
                start = time.monotonic()
                names = [f"batch-{i}" for i in range(args.pods)]
                for name in names:
                    core.create_namespaced_pod("bench", pod(node, name))
                wait_all(core, "bench", names)
                print(
                    f"{args.pods} pods created at once, all Ready: {time.monotonic() - start:.2f} s"
                )
            before = node.host_snapshot
            start = time.monotonic()
            node.stop()
            print(f"node stop with {2 * args.pods} pods: {time.monotonic() - start:.1f} s")
            left = hoststate.compare(
                before, hoststate.take(ownership(node.root)), ownership(node.root)
            )
            print(f"host differences after stop: {len(left)} {left[:3]}")
        finally:
            node.stop()
            cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
