"""Fault injection: randomised, bounded, seeded scenarios against the real control plane.

Two regions (``east`` priority 1, ``west`` priority 2) of two pods each; every pod is a forge
manager with cluster coordination and a cardano-node stand-in under ``forge-guard``. Each region
reaches the coordination API as a ServiceAccount of its own bound to the chart's coordination
Role, through a breakable TCP proxy in front of a request-aware proxy (answers dropped or
delayed); each pod reaches its local API through a TCP proxy of its own in front of its region's
request-aware proxy. Each region has its own health endpoint and its own copy of the pool's
Secret; the pods of index 1 find their node through ``CARDANO_NODE_PID_FILE`` (the others by
name, as the chart does), and every manager runs with a failpoint file
(``forge_manager.failpoints``). Scenario kinds (:mod:`tests.chaos.scenarios`) are drawn in
shuffled rounds (every kind once per round, order from the seed); each scenario's parameters
(target, duration, mode) come from the same seeded generator.

After each fault is undone the runner waits (bounded) until exactly one node forges, steadily, with
every container running; then it reads the stand-ins' CLOCK_BOOTTIME event logs and prints, for
the scenario, the time two nodes forged (must be 0 ms) and the longest time no node forged, and at
the end a Markdown table of the same per kind. Exit status 1 if any overlap was seen or a scenario
did not recover.

Run: ``python -m tests.chaos.run --scenarios 200 --seed 1`` (starts its own control plane on
loopback; needs ``make tools``; root for ``chattr`` in ``removal_fails``, which falls back to a
directory without write permission otherwise). ``--max-minutes`` stops early, reporting how many
ran; ``--kinds`` picks kinds; ``--workdir`` keeps every pod's logs and event logs.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from argparse import ArgumentParser, Namespace
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO, TypeVar

from tests.chaos.scenarios import SCENARIO_S, SCENARIOS, WORLD_S, PoolWorld, World, source_ok
from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import FAST_TIMING, ForgePod, write_pool_secret
from tests.harness.forging_log import Interval, intervals, longest_gap, overlaps, read_events
from tests.harness.node_standin import now
from tests.harness.regions import (
    FAST_CLUSTER_TIMING,
    RegionPods,
    Regions,
    create_namespace,
    install_crd,
)
from tests.harness.unremovable import restore_all

PRIORITIES = {"east": 1, "west": 2}
PID_FILE_PODS = (1,)
"""Pods of this index find their node through CARDANO_NODE_PID_FILE (the others by name)."""
TOKEN_SECONDS = 48 * 3600
"""The regions' ServiceAccount tokens outlive the longest run."""
RECOVERY_WAIT_S = 180.0
"""Upper bound for the pool to be back to one steady forger after a fault is undone."""
POLL_S = 0.25

W = TypeVar("W", bound=PoolWorld[Any])


@dataclass
class Outcome:
    index: int
    kind: str
    detail: str
    started: float
    ended: float
    overlap_s: float
    longest_gap_s: float
    recovered: bool
    error: str = ""

    def line(self) -> str:
        status = "ok" if self.recovered and not self.error else "FAILED"
        text = (
            f"#{self.index:4d} {self.kind:18s} overlap {self.overlap_s * 1000:5.0f} ms  "
            f"longest gap {self.longest_gap_s:5.1f} s  {status:6s} {self.detail}"
        )
        return text + (f"  [{self.error}]" if self.error else "")


@dataclass
class Report:
    seed: int
    outcomes: list[Outcome] = field(default_factory=list)
    total_overlap_s: float = 0.0
    longest_gap_s: float = 0.0
    wall_s: float = 0.0

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.recovered or o.error]

    def summary(self) -> str:
        """Per kind: scenarios, time two nodes forged, longest and median time with no forger,
        failures; a Markdown table (as committed to the README)."""
        lines = [
            f"chaos: {len(self.outcomes)} scenarios, seed {self.seed}, {self.wall_s / 60:.1f} min",
            "",
            "| kind | n | two forgers | longest gap with no forger | median of the longest gaps"
            " | failed |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for kind in sorted({o.kind for o in self.outcomes}):
            mine = [o for o in self.outcomes if o.kind == kind]
            lines.append(
                f"| {kind} | {len(mine)} | {sum(o.overlap_s for o in mine) * 1000:.0f} ms "
                f"| {max(o.longest_gap_s for o in mine):.1f} s "
                f"| {statistics.median(o.longest_gap_s for o in mine):.1f} s "
                f"| {sum(1 for o in mine if o in self.failures)} |"
            )
        gaps = [o.longest_gap_s for o in self.outcomes] or [0.0]
        lines.append(
            f"| **all** | {len(self.outcomes)} | {self.total_overlap_s * 1000:.0f} ms "
            f"| {self.longest_gap_s:.1f} s | {statistics.median(gaps):.1f} s "
            f"| {len(self.failures)} |"
        )
        lines += [
            "",
            f"TOTAL time two nodes forged: {self.total_overlap_s * 1000:.0f} ms; "
            f"longest time with no forger: {self.longest_gap_s:.1f} s; "
            f"scenarios not recovered or failed: {len(self.failures)}",
        ]
        return "\n".join(lines)


def schedule(rng: random.Random, count: int, kinds: Sequence[str]) -> list[str]:
    """``count`` kinds in shuffled rounds: each kind once per round."""
    out: list[str] = []
    while len(out) < count:
        round_ = list(kinds)
        rng.shuffle(round_)
        out += round_
    return out[:count]


def _clip_overlap(spans: list[Interval], start: float, end: float) -> float:
    total = 0.0
    for o in overlaps(spans, until=end):
        a, b = max(o.start, start), min(o.end, end)
        if b > a:
            total += b - a
    return total


class Runner:
    scenarios = SCENARIOS
    """The kinds this runner draws from (``tests.chaos.quorum`` brings its own world and kinds)."""
    scenario_seconds = SCENARIO_S
    """Mean wall time of each of those kinds, for the estimate printed at the start."""

    def __init__(
        self,
        cp: ControlPlane,
        root: Path,
        seed: int,
        *,
        out: TextIO = sys.stdout,
        timing: dict[str, str] | None = None,
        cluster_timing: dict[str, str] | None = None,
        pods_per_region: int = 2,
    ) -> None:
        self.cp = cp
        self.root = root
        self.seed = seed
        self.rng = random.Random(seed)
        self.out = out
        self.timing = dict(FAST_TIMING if timing is None else timing)
        self.cluster_timing = dict(
            FAST_CLUSTER_TIMING if cluster_timing is None else cluster_timing
        )
        self.pods_per_region = pods_per_region
        self.world: PoolWorld[Any] | None = None
        self.past_pods: list[ForgePod] = []
        self.worlds = 0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # ---- the world -------------------------------------------------------------------------------
    def build_world(self) -> World:
        self.worlds += 1
        namespace = f"chaos-{uuid.uuid4().hex[:8]}"
        create_namespace(self.cp, namespace)
        install_crd(self.cp)
        regions = Regions(
            self.cp,
            namespace,
            self.root / f"world{self.worlds}",
            PRIORITIES,
            pods_per_region=self.pods_per_region,
            guard=True,
            via_proxy=True,
            timing=self.timing,
            cluster_timing=self.cluster_timing,
            service_accounts=True,
            api_proxies=True,
            local_proxies=True,
            pid_files=PID_FILE_PODS,
            failpoints=True,
            token_seconds=TOKEN_SECONDS,
        )
        return self.start_world(World, regions)

    def start_world(self, make: Callable[..., W], regions: RegionPods) -> W:
        """The world ``make`` builds over ``regions`` with this run's generator and timing, its
        pods started and one steady forger waited for (bounded)."""
        world = make(
            cp=self.cp,
            regions=regions,
            rng=self.rng,
            lease_duration=float(self.timing["LEASE_DURATION"]),
            renew_deadline=float(self.timing["LEASE_RENEW_DEADLINE"]),
            retry_period=float(self.timing["LEASE_RETRY_PERIOD"]),
            request_timeout=float(self.timing["KUBE_REQUEST_TIMEOUT"]),
        )
        self.world = world
        regions.start()
        if not self.settle(world):
            raise RuntimeError(f"the pool never got a forger:\n{regions.diagnose()}")
        return world

    def teardown(self) -> None:
        restore_all()
        if self.world is not None:
            self.world.regions.stop()
            self.past_pods += self.world.regions.every_pod
            self.world = None

    def all_spans(self) -> list[Interval]:
        pods = self.past_pods + (self.world.regions.every_pod if self.world else [])
        return intervals(read_events([p.events_file for p in pods]))

    # ---- recovery --------------------------------------------------------------------------------
    def undo_everything(self, world: World) -> None:
        """After an error inside a scenario: no fault may outlive it."""
        restore_all()
        regions = world.regions
        for pod in regions.all_pods:
            pod.disarm_failpoints()
            pod.thaw_manager()
            if pod.use_pid_file and (pid := pod.node_pid()) is not None:
                pod.write_pid_file(pid)
        for proxy in [
            *regions.proxies.values(),
            *(regions.local_proxy(p) for p in regions.all_pods),
        ]:
            if proxy.partitioned:
                proxy.heal()
        for api_proxy in [*regions.api_proxies.values(), *regions.local_api_proxies.values()]:
            api_proxy.clear()
        for server in regions.health.values():
            server.status = 200
        if not self.cp.is_ready():
            with contextlib.suppress(Exception):
                self.cp.stop_apiserver()
            self.cp.start_apiserver()
        for region, secret in world.regions.secrets.items():
            if not all(source_ok(secret / n) for n in ("kes.skey", "vrf.skey", "node.cert")):
                write_pool_secret(secret)
            with contextlib.suppress(Exception):
                world.regions.patch_spec(region, {"forgeState": "Priority-based"})
            with contextlib.suppress(Exception):
                world.regions.set_coordination_rules(region, list_regions=True)

    def settle(self, world: PoolWorld[Any]) -> bool:
        """Bounded wait for one steady forger with every container running."""
        steady_for = 2 * world.retry_period + 1.0
        deadline = time.monotonic() + RECOVERY_WAIT_S
        one_since: float | None = None
        last: ForgePod | None = None
        while time.monotonic() < deadline:
            world.kubelet()
            forgers = world.regions.forgers()
            up = all(p.node_up() and p.manager_running() for p in world.regions.all_pods)
            if len(forgers) == 1 and up:
                if one_since is None or forgers[0] is not last:
                    one_since, last = time.monotonic(), forgers[0]
                elif time.monotonic() - one_since >= steady_for:
                    return True
            else:
                one_since = None
            time.sleep(POLL_S)
        return False

    # ---- the run ---------------------------------------------------------------------------------
    def run(
        self, count: int, kinds: Sequence[str] | None = None, max_minutes: float | None = None
    ) -> Report:
        kinds = list(kinds or self.scenarios)
        plan = schedule(self.rng, count, kinds)
        report = Report(self.seed)
        began = time.monotonic()
        estimate = (WORLD_S + sum(self.scenario_seconds[k] for k in plan)) / 60
        self.say(
            f"chaos: {count} scenarios, seed {self.seed}, kinds {', '.join(kinds)}; timings "
            f"lease {self.timing['LEASE_DURATION']} s / renew {self.timing['LEASE_RENEW_DEADLINE']}"
            f" s / retry {self.timing['LEASE_RETRY_PERIOD']} s; expected about {estimate:.0f} min"
            " (a loaded 2-core machine)"
        )
        first_start: float | None = None
        try:
            world = self.build_world()
            for index, kind in enumerate(plan, start=1):
                if max_minutes is not None and time.monotonic() - began > max_minutes * 60:
                    self.say(f"chaos: stopping after {index - 1} scenarios (--max-minutes)")
                    break
                t0 = now()
                first_start = first_start if first_start is not None else t0
                detail, error = "", ""
                try:
                    detail = self.scenarios[kind](world)
                except Exception as exc:
                    error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    with contextlib.suppress(Exception):
                        self.undo_everything(world)
                recovered = self.settle(world)
                t1 = now()
                spans = self.all_spans()
                outcome = Outcome(
                    index=index,
                    kind=kind,
                    detail=detail,
                    started=t0,
                    ended=t1,
                    overlap_s=_clip_overlap(spans, t0, t1),
                    longest_gap_s=longest_gap(spans, t0, t1),
                    recovered=recovered,
                    error=error,
                )
                report.outcomes.append(outcome)
                self.say(outcome.line())
                if not recovered or outcome.overlap_s > 0:
                    self.say(world.regions.diagnose())
                if not recovered:
                    self.say("chaos: rebuilding the pool in a fresh namespace")
                    self.teardown()
                    world = self.build_world()
        finally:
            self.teardown()
            report.wall_s = time.monotonic() - began
            if first_start is not None:
                spans = self.all_spans()
                end = now()
                report.total_overlap_s = _clip_overlap(spans, first_start, end)
                report.longest_gap_s = max((o.longest_gap_s for o in report.outcomes), default=0)
        return report


def chaos_arguments(description: str, kinds: Sequence[str], scenarios: int) -> ArgumentParser:
    """The options of both runners (``tests.chaos.quorum`` adds its own)."""
    parser = ArgumentParser(description=description)
    parser.add_argument("--scenarios", type=int, default=scenarios)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kinds", help="comma-separated subset of: " + ", ".join(kinds))
    parser.add_argument("--max-minutes", type=float, help="stop starting scenarios after this")
    parser.add_argument("--report", type=Path, help="also write the outcomes as JSON here")
    return parser


def parse_chaos_arguments(
    parser: ArgumentParser, argv: list[str] | None, kinds: Sequence[str]
) -> tuple[Namespace, list[str] | None]:
    """The arguments, and the kinds chosen (None: all ``kinds``); exits naming a bad one."""
    args = parser.parse_args(argv)
    chosen = args.kinds.split(",") if args.kinds else None
    unknown = sorted(set(chosen or []) - set(kinds))
    if unknown:
        parser.error(f"unknown kinds {unknown}; known: {', '.join(kinds)}")
    if args.scenarios < 1:
        parser.error("--scenarios must be at least 1")
    return args, chosen


def unwind_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt, which unwinds through every finally: no process is left
    behind."""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def finish(report: Report, path: Path | None) -> int:
    """Prints the summary, writes the outcomes as JSON to ``path`` (if given); the exit status:
    1 if two nodes ever forged at once or a scenario failed."""
    print(report.summary(), flush=True)
    if path:
        path.write_text(
            json.dumps(
                {
                    "seed": report.seed,
                    "total_overlap_s": report.total_overlap_s,
                    "longest_gap_s": report.longest_gap_s,
                    "wall_s": report.wall_s,
                    "outcomes": [asdict(o) for o in report.outcomes],
                },
                indent=2,
            )
        )
    return 1 if report.total_overlap_s > 0 or report.failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = chaos_arguments(__doc__.split("\n")[0], list(SCENARIOS), scenarios=200)
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the pods' logs and event logs in this new directory (default: a temporary one)",
    )
    args, kinds = parse_chaos_arguments(parser, argv, list(SCENARIOS))
    unwind_on_sigterm()
    if args.workdir is not None and args.workdir.exists():
        parser.error(f"--workdir {args.workdir} exists: name a new directory")
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-"))
        else:
            args.workdir.mkdir(parents=True)
            tmp = str(args.workdir.resolve())
        cp = ControlPlane(root=Path(tmp) / "cp")
        cp.start()
        try:
            report = Runner(cp, Path(tmp), args.seed).run(args.scenarios, kinds, args.max_minutes)
        finally:
            restore_all()  # no unremovable file may outlive the run (nor block its clean-up)
            cp.stop()
    return finish(report, args.report)


if __name__ == "__main__":
    sys.exit(main())
