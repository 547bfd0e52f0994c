"""``make demo`` on real pods, end to end: ``python -m demo`` with ``DEMO_MODE=pods`` starts a
control plane and a kubelet node of its own, installs both regions with helm, plays the story
(first forger, forced delete of the forging pod, east unhealthy and back), prints the figures
with 0 ms of two forgers, and at the end leaves the host as it found it.

About 5-11 minutes on the 2-core machine (node start, image loading, three transitions, node
stop), on the one node a host can run, so it is not part of ``make test`` (the tests that change
this host run one after another there): ``make pod-demo-test``. It starts and stops its own node.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.e2e_pods.conftest import images_available
from tests.harness import hoststate
from tests.harness import node as nodes
from tests.harness.controlplane import REPO_ROOT

pytestmark = [pytest.mark.node, pytest.mark.pod_demo, pytest.mark.slow]

TRANSITIONS = ("initial election", "local failover", "health failover", "failback")


@pytest.mark.timeout(1800)
def test_the_demo_runs_on_real_pods_and_cleans_up() -> None:
    # Not pytest's tmp_path: under its base directory the node's unix sockets can exceed 107
    # bytes (containerd exited at start-up in CI); the demo's own default is as short.
    with tempfile.TemporaryDirectory(prefix="cf-demo-") as short:
        run_the_demo(Path(short))


def run_the_demo(tmp_path: Path) -> None:
    images_available()
    journal = nodes.read_journal()
    assert journal is None or not nodes.journal_is_live(journal), (
        f"a test node already runs ({journal and journal['state_dir']}): this test starts its own"
    )
    workdir = tmp_path / "demo"
    own = nodes.ownership(workdir / "cluster" / "node")
    before = hoststate.take(own)
    env = {**os.environ, "DEMO_MODE": "pods"}
    result = subprocess.run(
        [sys.executable, "-m", "demo", "--dir", str(workdir), "--own-control-plane",
         "--no-build", "--plain"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1700, check=False,
    )  # fmt: skip
    out = result.stdout
    print(out)
    lines = out.splitlines()
    assert lines[0] == "demo: real pods on a kubelet node", lines[:3]
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr.strip()[-500:]}"
    for name in TRANSITIONS:
        assert re.search(rf"^  {name}\s+\d+\.\d s ", out, re.MULTILINE), name
    assert "  two nodes forging at once: 0 ms in total (must be 0)" in lines
    assert re.search(r"^  set-up: node Ready \d+ s, demo start to the first forger \d+ s", out,
                     re.MULTILINE)  # fmt: skip
    # The node is gone and the host is as before: sysctls, nft, mounts, links, cgroups, paths.
    assert nodes.read_journal() is None
    assert hoststate.compare(before, hoststate.take(own), own) == []
