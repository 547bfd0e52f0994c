"""The manager with the node sync check, against in-memory doubles of the Lease, node and clock.

Every pod's node serves a tip that a test moves: synced, lagging, or absent."""

from __future__ import annotations

from pathlib import Path

from forge_manager.credentials import CredentialFiles
from forge_manager.decision import NodeView
from forge_manager.manager import ForgeManager
from forge_manager.metrics import ForgeMetrics
from forge_manager.networks import MAINNET
from forge_manager.node_sync import (
    NodeSyncCheck,
    NodeSyncCollector,
    TipSample,
    load_node_sync_settings,
)
from forge_manager.server import health
from prometheus_client import CollectorRegistry

from .fakes import Clock, FakeLease, FakeNode, LeaseStore, Signals
from .test_manager import settings_for

WALL = 1_750_000_000.0
GRACE = 10.0
RETRY = 2.0


class Tip:
    """The node's metrics: a tip ``lag`` slots behind the wall clock (None: no tip)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lag: int | None = 0

    def __call__(self) -> TipSample:
        wall = WALL + self.clock.now
        tip = None if self.lag is None else MAINNET.wallclock_slot(wall) - self.lag
        return TipSample(self.clock.now, wall, tip)


class SyncPod:
    def __init__(self, tmp: Path, store: LeaseStore, clock: Clock, name: str, **env: str) -> None:
        self.name = name
        self.settings = settings_for(tmp, name)
        self.lease = FakeLease(store, name)
        self.node = FakeNode()
        self.signals = Signals()
        self.files = CredentialFiles(self.settings.sources, self.settings.targets)
        self.tip = Tip(clock)
        sync = load_node_sync_settings(
            {"NODE_SYNC_MAX_LAG_SLOTS": "60", "NODE_SYNC_GRACE_SECONDS": str(GRACE), **env},
            interval=RETRY,
        )
        self.check = NodeSyncCheck(sync, self.tip, clock=clock)
        self.manager = ForgeManager(
            self.settings,
            lease=self.lease,
            files=self.files,
            node=self.node,
            signal_node=self.signals,
            clock=clock,
            settle=lambda _s: None,
            node_sync=self.check,
        )
        self.registry = CollectorRegistry()
        self.manager.metrics = ForgeMetrics(
            self.registry, pod=name, cluster="c1", sample=self.manager.sample
        )
        self.registry.register(NodeSyncCollector(self.check, name, "c1"))

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {"pod": self.name, "cluster": "c1", **labels})

    def forging(self) -> bool:
        return self.metric("cardano_forging_enabled") == 1

    def enables(self) -> int:
        return int(self.registry.get_sample_value("cardano_sighup_signals_total",
                                                  {"reason": "enable"}) or 0)  # fmt: skip


def cycle(clock: Clock, *pods: SyncPod) -> list[str]:
    """One retry period: every pod steps once; never two pods with credentials installed."""
    clock.advance(RETRY)
    reasons = [p.manager.step() for p in pods]
    holding = [p.name for p in pods if p.files.any_present()]
    assert len(holding) <= 1, f"credentials on {holding}: {reasons}"
    return reasons


def elect(clock: Clock, *pods: SyncPod) -> list[str]:
    """Cycles until one pod forges: a pod that sees no Lease creates it vacant and takes it once
    that record stayed unchanged for a lease duration. Returns the reasons of the cycle in which
    it started."""
    for _ in range(int(pods[0].settings.lease_duration / RETRY) + 3):
        reasons = cycle(clock, *pods)
        if any(p.forging() for p in pods):
            return reasons
    raise AssertionError(f"no pod forges after a lease duration: {reasons}")


def test_unsynced_standby_does_not_acquire(world: tuple[Path, LeaseStore, Clock]) -> None:
    tmp, store, clock = world
    pod = SyncPod(tmp, store, clock, "pod-0")
    pod.tip.lag = 500
    reason = pod.manager.step()
    assert reason == (
        "staying out of the election: cardano-node not synced: its tip is more than 60 slots "
        "behind the wall-clock slot; not the leader"
    )
    assert cycle(clock, pod) == [reason]  # the same words every cycle: logged once
    assert pod.check.status()["reason"].endswith("is 500 slots behind the wall-clock slot "
                                                 f"{pod.check.status()['tip_slot'] + 500} "
                                                 "(at most 60)")  # fmt: skip
    assert store.record is None and not pod.files.any_present()
    assert pod.metric("cardano_node_synced") == 0
    assert pod.metric("cardano_node_sync_blocked") == 1
    pod.tip.lag = None  # replaying: no tip at all
    assert "not synced: no tip slot in its metrics (still replaying" in cycle(clock, pod)[0]
    assert store.record is None
    pod.tip.lag = 3
    reasons = elect(clock, pod)
    assert reasons[0].startswith("lease without a holder unchanged for ")
    assert "; acquiring it; leader" in reasons[0]
    assert pod.forging() and pod.metric("cardano_node_sync_blocked") == 0


def test_node_down_and_unsynced_still_gets_startup_credentials(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    """The node refuses to start without credentials; a node not started cannot be synced: the
    check must not keep it from ever booting."""
    tmp, store, clock = world
    pod = SyncPod(tmp, store, clock, "pod-0")
    pod.node.view = NodeView(pids=(), socket_up=False, booted=False, flag_missing=False)
    pod.tip.lag = None
    reason = pod.manager.step()
    assert "provisioning credentials so it can boot non-producing" in reason
    assert pod.files.all_present() and store.record is None


def test_lagging_leader_hands_over_to_a_synced_standby(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    a, b = SyncPod(tmp, store, clock, "pod-0"), SyncPod(tmp, store, clock, "pod-1")
    elect(clock, a, b)
    assert a.forging() and not b.forging()
    a.tip.lag = 500
    lagged_at = clock.now
    reasons: list[str] = []
    while not b.forging():
        reasons.append(cycle(clock, a, b)[0])
        assert clock.now - lagged_at < GRACE + 4 * RETRY, reasons
    # Within the grace the leader forges on; then it stops, keeps the Lease one retry period
    # (the node's settle time), releases it, and the standby acquires in the same period.
    assert reasons[0].startswith("renewing the lease; leader (cluster management disabled)")
    stop = next(i for i, r in enumerate(reasons) if "not forging" in r)
    assert clock.now - RETRY - lagged_at >= GRACE
    assert reasons[stop].startswith(
        "renewing the lease; leader, but not forging: cardano-node not synced for "
    )
    assert reasons[stop].endswith(
        "more than NODE_SYNC_GRACE_SECONDS=10: its tip is more than 60 slots behind the "
        "wall-clock slot"
    )
    assert reasons[stop + 1] == "released the lease; not the leader"
    assert len(reasons) == stop + 2
    assert not a.forging() and not a.files.any_present()
    assert a.signals.sent[-1] == (42,)
    assert a.metric("cardano_forge_demotions_total") is None  # labelled by cause:
    demotions = a.registry.get_sample_value(
        "cardano_forge_demotions_total", {"cause": "node_not_synced"}
    )
    assert demotions == 1
    # The old leader's node catches up: it follows, it does not take the Lease back.
    a.tip.lag = 0
    for _ in range(10):
        cycle(clock, a, b)
    assert b.forging() and not a.forging()
    assert store.record is not None and store.record.holder == "pod-1"


def test_a_brief_lag_does_not_make_the_leader_flap(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    a, b = SyncPod(tmp, store, clock, "pod-0"), SyncPod(tmp, store, clock, "pod-1")
    elect(clock, a, b)
    assert a.forging() and a.enables() == 1
    for lag in (500, None, 500, 61):  # behind, a blip of the endpoint, behind: < grace in all
        a.tip.lag = lag
        cycle(clock, a, b)
    a.tip.lag = 5  # a few slots after a restart: within the tolerance
    for _ in range(20):
        reasons = cycle(clock, a, b)
        assert "not synced" not in reasons[0]
    assert a.forging() and a.enables() == 1 and not b.forging()


def test_all_lagging_nobody_forges_and_says_why(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    tmp, store, clock = world
    a, b = SyncPod(tmp, store, clock, "pod-0"), SyncPod(tmp, store, clock, "pod-1")
    elect(clock, a, b)
    assert a.forging()
    a.tip.lag = b.tip.lag = 500
    for _ in range(int(GRACE / RETRY) + 3):
        cycle(clock, a, b)
    assert store.record is not None and store.record.holder is None  # released
    for _ in range(20):  # longer than a lease duration: still nobody
        reasons = cycle(clock, a, b)
        assert not a.forging() and not b.forging()
        assert not a.files.any_present() and not b.files.any_present()
    standby = (
        "staying out of the election: cardano-node not synced: its tip is more than 60 slots "
        "behind the wall-clock slot; not the leader"
    )
    assert reasons == [standby, standby]
    for pod in (a, b):
        assert pod.metric("cardano_node_synced") == 0
        assert pod.metric("cardano_node_sync_status", status="behind") == 1
        assert pod.metric("cardano_node_sync_blocked") == 1
        assert pod.metric("cardano_node_tip_lag_slots") == 500
        code, body = health(0.1, 10.0, pod.check.status())
        assert code == 200  # liveness is not sync: restarting the sidecar would not help
        assert body["node_sync"]["state"] == "behind"
        assert body["node_sync"]["blocked"] == (
            "cardano-node not synced: its tip is more than 60 slots behind the wall-clock slot"
        )
        assert "is 500 slots behind the wall-clock slot" in body["node_sync"]["reason"]
    # The first node to catch up takes the Lease and forges.
    b.tip.lag = 0
    elect(clock, a, b)
    assert b.forging() and not a.forging()


def test_switched_off_any_node_may_lead(world: tuple[Path, LeaseStore, Clock]) -> None:
    tmp, store, clock = world
    pod = SyncPod(tmp, store, clock, "pod-0", NODE_SYNC_CHECK="false")
    pod.tip.lag = None
    assert "; acquiring it; leader" in elect(clock, pod)[0]
    assert pod.forging()
    assert pod.metric("cardano_node_sync_check_enabled") == 0
    assert pod.metric("cardano_node_sync_status", status="disabled") == 1
