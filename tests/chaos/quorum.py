"""Fault injection across regions coordinating through an etcd quorum (``make chaos``, part two).

Three regions (``east`` priority 1, ``west`` 2, ``witness`` 3), each with its etcd member, its
forge pods (forge manager and a cardano-node stand-in under ``forge-guard``) and its own namespace
for its own cluster; everything between regions crosses breakable, slowable links
(:mod:`tests.harness.quorum_regions`). The kinds here threaten what the quorum is for: a whole
region lost (its member and pods killed), a region partitioned from the other two (also the
forging region holding the etcd Raft leader), two members of three down (quorum lost), etcd
leader changes and member restarts while the holder renews, and a slow link between one region
and the quorum. The runner is :class:`tests.chaos.run.Runner`'s
(shuffled seeded rounds, wait for one steady forger, overlap and longest gap per scenario from the
stand-ins' logs) over this world.

Run: ``python -m tests.chaos.quorum --scenarios 30 --seed 1`` (starts its own control plane on
loopback; needs ``make tools``).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.chaos.run import (
    Runner,
    chaos_arguments,
    finish,
    parse_chaos_arguments,
    unwind_on_sigterm,
)
from tests.chaos.scenarios import PoolWorld
from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import ForgePod
from tests.harness.quorum_regions import QuorumRegions
from tests.harness.regions import install_crd

PRIORITIES = {"east": 1, "west": 2, "witness": 3}


@dataclass
class QuorumWorld(PoolWorld[QuorumRegions]):
    """The three regions on an etcd quorum, as the quorum kinds get them."""


QuorumScenario = Callable[[QuorumWorld], str]


def region_loss(w: QuorumWorld) -> str:
    """A whole region lost (etcd member and pods SIGKILLed), back after a while."""
    region = w.pick_region()
    w.regions.kill_region(region)
    held = w.hold(w.lease_duration + 2.0, 2.5 * w.lease_duration)
    w.regions.restore_region(region)
    return f"region {region} lost for {held:g} s (member and pods killed), restored"


def region_partition(w: QuorumWorld) -> str:
    """A region cut off from the other two (etcd peers and managers), then healed."""
    region = w.pick_region()
    w.regions.partition(region)
    held = w.hold(0.5 * w.lease_duration, 2.5 * w.lease_duration)
    w.regions.heal(region)
    return f"region {region} partitioned for {held:g} s"


def leader_region_partition(w: QuorumWorld) -> str:
    """The forging region, holding the etcd Raft leader too, cut off from the other two for
    longer than the lease: its member leads a minority until check-quorum makes it step down,
    the majority elects a leader and another region takes the pool while it is cut off."""
    forgers = w.regions.forgers()
    region = w.regions.region_of(forgers[0]) if forgers else w.pick_region()
    with contextlib.suppress(Exception):
        w.regions.quorum.move_leader(region)
    leader = w.regions.quorum.leader()
    w.regions.partition(region)
    held = w.hold(w.lease_duration + 2.0, 2.5 * w.lease_duration)
    w.regions.heal(region)
    return f"region {region} (etcd leader in {leader}) partitioned for {held:g} s"


def quorum_loss(w: QuorumWorld) -> str:
    """Two of three etcd members down: nobody may forge until one returns."""
    members = sorted(w.regions.quorum.members)
    down = w.rng.sample(members, 2)
    for region in down:
        w.regions.quorum.kill(region)
    held = w.hold(1.0, 1.5 * w.lease_duration)
    for region in down:
        w.regions.quorum.start_member(region, wait=False)
    for region in down:
        w.regions.quorum.wait_healthy(region)
    return f"etcd members {' and '.join(down)} down for {held:g} s (quorum lost)"


def etcd_leader_change(w: QuorumWorld) -> str:
    """The Raft leader moves between members while the holder renews."""
    moves = []
    for _ in range(w.rng.randint(2, 4)):
        target = w.rng.choice(sorted(w.regions.quorum.members))
        with contextlib.suppress(Exception):
            w.regions.quorum.move_leader(target)
            moves.append(target)
        w.hold(0.3, 2.0)
    return f"etcd leader moved to {', '.join(moves) or 'nowhere (no leader to ask)'}"


def etcd_member_restart(w: QuorumWorld) -> str:
    """One member restarts (killed or stopped; the leader half of the time)."""
    quorum = w.regions.quorum
    leader = quorum.leader()
    region = leader if leader and w.rng.random() < 0.5 else w.rng.choice(sorted(quorum.members))
    how = w.rng.choice(["SIGKILL", "SIGTERM"])
    (quorum.kill if how == "SIGKILL" else quorum.stop_member)(region)
    held = w.hold(0.5, w.lease_duration)
    quorum.start_member(region)
    role = " (the leader)" if region == leader else ""
    return f"etcd member {region}{role} {how}, restarted after {held:g} s"


def slow_link(w: QuorumWorld) -> str:
    """One region's links get a one-way latency, often above the request timeout."""
    region = w.pick_region(prefer_forger=0.5)
    delay = round(w.rng.uniform(0.3, 3.0) * w.request_timeout, 2)
    w.regions.slow(region, delay)
    held = w.hold(w.lease_duration, 2.0 * w.lease_duration)
    w.regions.slow(region, 0.0)
    return f"region {region} links +{delay * 1000:.0f} ms one way for {held:g} s"


QUORUM_SCENARIOS: dict[str, QuorumScenario] = {
    "region_loss": region_loss,
    "region_partition": region_partition,
    "leader_region_partition": leader_region_partition,
    "quorum_loss": quorum_loss,
    "etcd_leader_change": etcd_leader_change,
    "etcd_member_restart": etcd_member_restart,
    "slow_link": slow_link,
}

# The run described in services/forge-manager/docs/cluster-coordination.md (14 scenarios, two of
# each kind) took 7 min: about 30 s a scenario, not measured per kind; for the estimate only.
QUORUM_SCENARIO_S = dict.fromkeys(QUORUM_SCENARIOS, 30.0)


class QuorumRunner(Runner):
    """:class:`~tests.chaos.run.Runner` over three regions on an etcd quorum."""

    scenarios = QUORUM_SCENARIOS  # type: ignore[assignment]
    scenario_seconds = QUORUM_SCENARIO_S

    def __init__(self, *args: Any, pods_per_region: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, pods_per_region=pods_per_region, **kwargs)

    def build_world(self) -> QuorumWorld:  # type: ignore[override]
        self.worlds += 1
        install_crd(self.cp)
        regions = QuorumRegions(
            self.cp,
            self.root / f"quorum{self.worlds}",
            PRIORITIES,
            pods_per_region=self.pods_per_region,
            guard=True,
            timing=self.timing,
            cluster_timing=self.cluster_timing,
        )
        return self.start_world(QuorumWorld, regions)

    def undo_everything(self, world: QuorumWorld) -> None:  # type: ignore[override]
        """After an error inside a scenario: no fault may outlive it."""
        pods: list[ForgePod] = world.regions.all_pods
        for pod in pods:
            pod.thaw_manager()
        world.regions.heal()
        for region in world.regions.quorum.members:
            world.regions.slow(region, 0.0)
        for region in world.regions.quorum.members:
            with contextlib.suppress(Exception):
                world.regions.quorum.start_member(region, wait=False)


def main(argv: list[str] | None = None) -> int:
    parser = chaos_arguments(__doc__.split("\n")[0], list(QUORUM_SCENARIOS), scenarios=30)
    parser.add_argument("--pods-per-region", type=int, default=1)
    args, kinds = parse_chaos_arguments(parser, argv, list(QUORUM_SCENARIOS))
    unwind_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="chaos-quorum-") as tmp:
        cp = ControlPlane(root=Path(tmp) / "cp")
        cp.start()
        try:
            runner = QuorumRunner(cp, Path(tmp), args.seed, pods_per_region=args.pods_per_region)
            report = runner.run(args.scenarios, kinds, args.max_minutes)
        finally:
            cp.stop()
    return finish(report, args.report)


if __name__ == "__main__":
    sys.exit(main())
