"""A node stand-in killed without a word gets its end recorded."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.harness.exit_watch import ExitWatch
from tests.harness.forge_pod import ForgePod, wait_for, write_pool_secret
from tests.harness.forging_log import intervals


def test_a_sigkilled_stand_in_is_recorded_killed_once(tmp_path: Path) -> None:
    pod = ForgePod(
        "p-0", tmp_path, tmp_path / "no-kubeconfig", "ns", write_pool_secret(tmp_path / "s")
    )
    for target in pod.targets:
        target.write_text((pod.secret_dir / target.name).read_text())
    pod.non_producing = False  # boots forging: the files are there
    watch = ExitWatch(lambda: [pod]).start()
    try:
        pod.start_node()
        wait_for(lambda: pod.forging(), 30, "the stand-in to forge")
        pid = pod.node_pid()
        assert pid is not None
        before = time.clock_gettime(time.CLOCK_BOOTTIME)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pod.forging(), 10, "the death to be recorded")
        [span] = intervals(pod.events())
        assert span.end is not None and span.end >= before
        assert watch.recorded == [("p-0", pid)]
        assert pod.node is not None
        pod.node.wait(10)
        pod.start_node()  # a stand-in that ends on SIGTERM says so itself
        wait_for(lambda: pod.node_pid() is not None and pod.forging(), 30, "the restart")
        pod.stop()
        time.sleep(0.5)
        assert watch.recorded == [("p-0", pid)]
    finally:
        watch.stop()
        pod.stop()
