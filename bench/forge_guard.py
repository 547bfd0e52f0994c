"""forge-guard's reaction time: from the permit's deadline to the node no longer forging.

The real forge-guard binary (``make tools`` builds ``.tools/bin/forge-guard``) runs the
cardano-node stand-in as its child, with the chart's check interval (100 ms). The script plays a
forge manager that freezes: it installs the credentials, writes the permit (``boottime <ns> <boot
id>``, passing ``--ahead`` seconds later), enables forging with SIGHUP, then does nothing. Times
come from the stand-in's event log, on CLOCK_BOOTTIME like the permit, so no polling is measured:

* signal: the permit passes with the node up -> the stand-in's ``forging_stopped`` (the guard
  removed the files and sent SIGHUP);
* stop: one credential cannot be removed (a non-empty directory in its place) -> the stand-in's
  ``exited`` (the guard sent SIGTERM);
* booting: the permit passes while the node boots -> the credentials gone (polled every 5 ms, so
  up to 5 ms late); the node is not signalled, which the run checks.

Run: ``python -m bench.forge_guard --runs 20``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness.forge_pod import FORGE_GUARD, GUARD_INTERVAL, REPO_ROOT, write_pool_secret
from tests.harness.node_standin import now

BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def wait(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    give_up = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > give_up:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.005)


class Node:
    """forge-guard around the stand-in, in a directory of its own."""

    def __init__(self, root: Path, startup_delay: float) -> None:
        self.dir = root / uuid.uuid4().hex[:8]
        self.secrets = self.dir / "secrets"
        self.secrets.mkdir(parents=True)
        self.permit = self.dir / "permit"
        self.events_file = self.dir / "events.jsonl"
        self.pid_file = self.dir / "node.pid"
        self.targets = [self.secrets / n for n in ("kes.skey", "vrf.skey", "node.cert")]
        write_pool_secret(self.secrets)  # start-up credentials
        socket = self.dir / "node.socket"
        standin = [
            sys.executable, "-m", "tests.harness.node_standin",
            "--name", f"cnb{uuid.uuid4().hex[:6]}", "--socket-path", str(socket),
            "--event-log", str(self.events_file), "--pid-file", str(self.pid_file),
            "--startup-delay", str(startup_delay), "--start-as-non-producing-node",
            "--shelley-kes-key", str(self.targets[0]), "--shelley-vrf-key", str(self.targets[1]),
            "--shelley-operational-certificate", str(self.targets[2]),
        ]  # fmt: skip
        guard = [
            str(FORGE_GUARD), "--permit-file", str(self.permit),
            "--credentials", ",".join(map(str, self.targets)),
            "--interval", GUARD_INTERVAL, "--socket", str(socket),
        ]  # fmt: skip
        self.log = (self.dir / "guard.log").open("wb")
        self.proc = subprocess.Popen(
            [*guard, "--", *standin], stdout=self.log, stderr=self.log, cwd=REPO_ROOT
        )

    def events(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(line) for line in self.events_file.read_text().splitlines()]
        except FileNotFoundError:
            return []

    def first(self, event: str) -> float | None:
        return next((float(e["t"]) for e in self.events() if e["event"] == event), None)

    def grant(self, ahead: float) -> float:
        """Write a permit passing ``ahead`` seconds from now; returns its deadline (seconds)."""
        deadline_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME) + int(ahead * 1e9)
        tmp = self.permit.with_name(".permit.tmp")
        tmp.write_text(f"boottime {deadline_ns} {BOOT_ID}\n")
        tmp.replace(self.permit)
        return deadline_ns / 1e9

    def enable(self) -> None:
        os.kill(int(self.pid_file.read_text()), signal.SIGHUP)
        wait(lambda: self.first("forging_started") is not None, "forging_started")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def signal_path(root: Path, ahead: float) -> float:
    node = Node(root, startup_delay=0.2)
    try:
        wait(lambda: node.first("socket_up") is not None, "socket_up")
        deadline = node.grant(ahead)
        node.enable()
        wait(lambda: node.first("forging_stopped") is not None, "forging_stopped")
        stopped = node.first("forging_stopped")
        assert stopped is not None and node.proc.poll() is None
        return stopped - deadline
    finally:
        node.close()


def stop_path(root: Path, ahead: float) -> float:
    node = Node(root, startup_delay=0.2)
    try:
        wait(lambda: node.first("socket_up") is not None, "socket_up")
        deadline = node.grant(ahead)
        node.enable()
        stuck = node.targets[1]
        stuck.unlink()
        (stuck / "held").mkdir(parents=True)
        wait(lambda: node.first("exited") is not None, "exited")
        exited = node.first("exited")
        assert exited is not None
        return exited - deadline
    finally:
        node.close()
        with contextlib.suppress(OSError):
            (node.targets[1] / "held").rmdir()


def booting_path(root: Path, ahead: float) -> float:
    node = Node(root, startup_delay=ahead + 2.0)
    try:
        wait(lambda: node.first("started") is not None, "started")
        deadline = node.grant(ahead)
        wait(lambda: not any(p.exists() for p in node.targets), "credentials removed")
        gone = now() - deadline
        wait(lambda: node.first("socket_up") is not None, "socket_up", timeout=ahead + 20)
        kinds = [e["event"] for e in node.events()]
        if "sighup_ignored" in kinds or node.proc.poll() is not None:
            raise SystemExit(f"a booting node was signalled or stopped: {kinds}")
        return gone
    finally:
        node.close()


def figures(name: str, values: list[float]) -> None:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    print(f"  {name:<8} median {statistics.median(ms):6.1f} ms   p95 {p95:6.1f} ms   "
          f"max {ms[-1]:6.1f} ms   min {ms[0]:6.1f} ms   ({len(ms)} runs)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--ahead", type=float, default=0.5, help="permit lifetime, seconds")
    args = parser.parse_args()
    if not FORGE_GUARD.exists():
        print(f"{FORGE_GUARD} is missing: run 'make tools'", file=sys.stderr)
        return 2
    print(f"forge-guard {GUARD_INTERVAL} interval: from the permit's deadline to ...")
    with tempfile.TemporaryDirectory(prefix="bench-guard-") as tmp:
        root = Path(tmp)
        figures("signal", [signal_path(root, args.ahead) for _ in range(args.runs)])
        figures("stop", [stop_path(root, args.ahead) for _ in range(args.runs)])
        figures("booting", [booting_path(root, args.ahead) for _ in range(args.runs)])
    print("  signal: forging_stopped (files removed, SIGHUP); stop: node exited (SIGTERM);")
    print("  booting: credentials gone (polled), node left alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
