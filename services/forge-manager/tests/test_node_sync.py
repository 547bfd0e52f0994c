"""The node sync check: parsing the tip, the verdict, the gate, settings, and the HTTP reading."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from forge_manager.decision import (
    PERMIT_LOCAL_ONLY,
    CredentialAction,
    ForgingSnapshot,
    NodeView,
    Signalled,
    decide_forging,
)
from forge_manager.networks import MAINNET, PREPROD, PREVIEW
from forge_manager.node_sync import (
    OPEN,
    TIP_METRICS,
    NodeSyncCheck,
    NodeSyncCollector,
    NodeSyncConfigError,
    NodeSyncSettings,
    SyncState,
    SyncVerdict,
    TipSample,
    TipSampler,
    decide_gate,
    judge,
    load_node_sync_settings,
    parse_tip_slot,
    read_tip,
)
from prometheus_client import CollectorRegistry

from .fakes import Clock

WALL = 1_750_000_000.0
NOW_SLOT = MAINNET.wallclock_slot(WALL)

LEGACY = """\
# TYPE cardano_node_metrics_Forge_forged_int gauge
cardano_node_metrics_Forge_forged_int 3
cardano_node_metrics_blockNum_int 11000000
# TYPE cardano_node_metrics_slotNum_int gauge
cardano_node_metrics_slotNum_int 150000000
rts_gc_num_gcs 12345
"""


# ---- parsing ---------------------------------------------------------------------------------
def test_parse_legacy_output() -> None:
    assert parse_tip_slot(LEGACY, TIP_METRICS) == 150_000_000


def test_parse_new_tracing_names_and_priority() -> None:
    no_suffix = "# TYPE cardano_node_metrics_slotNum gauge\ncardano_node_metrics_slotNum 77\n"
    assert parse_tip_slot(no_suffix, TIP_METRICS) == 77
    both = no_suffix + "cardano_node_metrics_slotNum_int 78\n"
    assert parse_tip_slot(both, TIP_METRICS) == 78  # the first name given wins
    assert parse_tip_slot(both, ("cardano_node_metrics_slotNum",)) == 77


def test_parse_absent_and_labels() -> None:
    assert parse_tip_slot("rts_gc_num_gcs 1\n", TIP_METRICS) is None
    assert parse_tip_slot("", TIP_METRICS) is None
    labelled = 'x_slot{a="1"} 5\nx_slot{a="2"} 9\n'
    assert parse_tip_slot(labelled, ("x_slot",)) == 9


def test_parse_ignores_odd_lines_of_other_metrics() -> None:
    text = "this is { not prometheus\n" + LEGACY
    assert parse_tip_slot(text, TIP_METRICS) == 150_000_000


@pytest.mark.parametrize(
    "line",
    [
        "cardano_node_metrics_slotNum_int not-a-number",
        "cardano_node_metrics_slotNum_int -5",
        "cardano_node_metrics_slotNum_int 1.5",
        "cardano_node_metrics_slotNum_int NaN",
    ],
)
def test_parse_rejects_a_tip_that_is_not_a_slot(line: str) -> None:
    with pytest.raises(ValueError):
        parse_tip_slot(line + "\n", TIP_METRICS)


# ---- the verdict -----------------------------------------------------------------------------
def verdict(sample: TipSample | None, now: float = 100.0, max_lag: int = 300) -> SyncVerdict:
    return judge(sample, now=now, network=MAINNET, max_lag_slots=max_lag, stale_after=8.0)


def sample(lag: int | None, taken_at: float = 99.0, error: str | None = None) -> TipSample:
    tip = None if lag is None else NOW_SLOT - lag
    return TipSample(taken_at=taken_at, wall_time=WALL, tip_slot=tip, error=error)


def test_network_wallclock_slots() -> None:
    assert MAINNET.wallclock_slot(1_596_059_091) == 4_492_800
    assert MAINNET.wallclock_slot(1_596_059_091 + 86_400.9) == 4_492_800 + 86_400
    assert PREPROD.wallclock_slot(1_655_769_600 + 10) == 86_410
    assert PREVIEW.wallclock_slot(1_666_656_000 + 10) == 10


def test_judge_states() -> None:
    v = verdict(sample(0))
    assert v.state is SyncState.SYNCED and v.synced and v.lag_slots == 0
    assert v.tip_slot == NOW_SLOT
    assert verdict(sample(300)).synced  # the tolerance is inclusive
    v = verdict(sample(301))
    assert v.state is SyncState.BEHIND and not v.synced and v.lag_slots == 301
    assert v.reason == (
        f"tip slot {NOW_SLOT - 301} is 301 slots behind the wall-clock slot {NOW_SLOT} "
        "(at most 300)"
    )
    v = verdict(sample(-301))
    assert v.state is SyncState.AHEAD and "check CARDANO_NETWORK" in v.reason
    assert verdict(sample(None)).state is SyncState.NO_TIP
    v = verdict(sample(None, error="timed out after 1 s"))
    assert v.state is SyncState.UNREACHABLE
    assert v.reason == v.summary == "its metrics are unreadable: timed out after 1 s"
    assert verdict(None).state is SyncState.STALE
    v = verdict(sample(0, taken_at=91.0))  # 9 s old > 8 s
    assert v.state is SyncState.STALE and "9 s old" in v.reason
    assert v.summary == "no recent reading of its metrics"


def test_summaries_do_not_change_with_every_slot() -> None:
    """The loop logs its reason when it changes: an unsynced standby must not log every cycle."""
    for lag in (301, -301):
        first = verdict(sample(lag))
        later = judge(
            TipSample(109.0, WALL + 9, NOW_SLOT + 9 - lag), now=110.0, network=MAINNET,
            max_lag_slots=300, stale_after=8.0,
        )  # fmt: skip
        assert first.reason != later.reason and first.summary == later.summary
    assert verdict(sample(301)).summary == (
        "its tip is more than 300 slots behind the wall-clock slot"
    )


def test_wrong_network_is_not_synced() -> None:
    """A preview node judged as mainnet: its slot numbers are far lower, so 'behind'."""
    tip = PREVIEW.wallclock_slot(WALL)
    v = judge(
        TipSample(99.0, WALL, tip), now=100.0, network=MAINNET, max_lag_slots=300,
        stale_after=8.0,
    )  # fmt: skip
    assert v.state is SyncState.BEHIND


# ---- the gate --------------------------------------------------------------------------------
SYNCED = SyncVerdict(SyncState.SYNCED, "ok", 1, 0)
BEHIND = SyncVerdict(SyncState.BEHIND, "tip slot 1 is 999 slots behind", 1, 999)


def gate(v: SyncVerdict, leading: bool, unsynced_for: float, blocked: float | None = None) -> Any:
    return decide_gate(
        v, leading=leading, unsynced_for=unsynced_for, forge_blocked_for=blocked, grace=60.0
    )


def test_gate_synced_is_open() -> None:
    assert gate(SYNCED, True, 0.0) == OPEN
    assert gate(SYNCED, False, 0.0) == OPEN
    disabled = SyncVerdict(SyncState.DISABLED, "off")
    assert gate(disabled, False, 0.0) == OPEN


def test_gate_standby_is_out_at_once() -> None:
    g = gate(BEHIND, False, 0.0)
    assert g.election == g.forge == "cardano-node not synced: tip slot 1 is 999 slots behind"


def test_gate_leader_within_grace_keeps_forging() -> None:
    g = gate(BEHIND, True, 59.9)
    assert (g.forge, g.election) == ("", "")
    assert "handing over after 60 s" in g.note


def test_gate_leader_after_grace_stops_forging_then_releases() -> None:
    first = gate(BEHIND, True, 60.0, blocked=None)
    assert first.forge.startswith("cardano-node not synced for 60 s, more than ")
    assert first.election == ""  # keep the Lease until the node had time to stop
    settling = gate(BEHIND, True, 60.2, blocked=0.2)
    assert settling.forge and not settling.election
    settled = gate(BEHIND, True, 62.0, blocked=2.0)
    assert settled.election == settled.forge


def test_forging_decision_of_an_unsynced_leader() -> None:
    node = NodeView(pids=(42,), socket_up=True, booted=True, flag_missing=False)
    snap = ForgingSnapshot(
        now=100.0, leading_until=105.0, permit=PERMIT_LOCAL_ONLY, eligible=True,
        ineligible_reason="", shutting_down=False, node=node, credentials_present=True,
        signalled=Signalled((42,), True), node_unsynced="cardano-node not synced for 61 s",
    )  # fmt: skip
    d = decide_forging(snap)
    assert not d.forge and d.credentials is CredentialAction.REMOVE and d.signal
    assert d.reason.startswith("leader, but not forging: cardano-node not synced for 61 s")


def test_forging_decision_keeps_startup_provisioning_of_an_unsynced_node() -> None:
    """A node that is not running cannot be synced; it must still get credentials to boot."""
    node = NodeView(pids=(), socket_up=False, booted=False, flag_missing=False)
    snap = ForgingSnapshot(
        now=100.0, leading_until=None, permit=PERMIT_LOCAL_ONLY, eligible=True,
        ineligible_reason="", shutting_down=False, node=node, credentials_present=False,
        signalled=None, node_unsynced="cardano-node not synced: no reading",
    )  # fmt: skip
    assert decide_forging(snap).credentials is CredentialAction.INSTALL


# ---- settings --------------------------------------------------------------------------------
def load(**env: str) -> NodeSyncSettings:
    return load_node_sync_settings(env, interval=2.0)


def test_settings_defaults() -> None:
    s = load()
    assert s.enabled and s.network is MAINNET
    assert s.metrics_url == "http://127.0.0.1:12798/metrics"
    assert (s.timeout, s.max_lag_slots, s.grace, s.interval) == (1.0, 300, 60.0, 2.0)
    assert s.tip_metrics == TIP_METRICS
    assert s.stale_after == 8.0


def test_settings_values() -> None:
    s = load(
        NODE_SYNC_CHECK="false", NODE_METRICS_URL="http://10.0.0.1:9999/m",
        NODE_METRICS_TIMEOUT="0.5", NODE_TIP_METRIC="a_slot, b_slot", CARDANO_NETWORK="Preprod",
        NODE_SYNC_MAX_LAG_SLOTS="20", NODE_SYNC_GRACE_SECONDS="0",
    )  # fmt: skip
    assert not s.enabled and s.network is PREPROD
    assert (s.metrics_url, s.timeout, s.tip_metrics) == ("http://10.0.0.1:9999/m", 0.5,
                                                         ("a_slot", "b_slot"))  # fmt: skip
    assert (s.max_lag_slots, s.grace) == (20, 0.0)


def test_custom_network() -> None:
    s = load(CARDANO_NETWORK="custom", CARDANO_SHELLEY_START_SLOT="86400",
             CARDANO_SHELLEY_START_TIME="2022-06-21T00:00:00Z")  # fmt: skip
    assert s.network.wallclock_slot(1_655_769_600 + 5) == PREPROD.wallclock_slot(1_655_769_605)
    s = load(CARDANO_NETWORK="custom", CARDANO_SHELLEY_START_SLOT="0",
             CARDANO_SHELLEY_START_TIME="1000", CARDANO_SLOT_LENGTH_SECONDS="0.2")  # fmt: skip
    assert s.network.wallclock_slot(1001) == 5


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"NODE_SYNC_CHECK": "maybe"}, "NODE_SYNC_CHECK='maybe' is not valid: expected true or"),
        ({"NODE_METRICS_URL": "127.0.0.1:12798"}, "NODE_METRICS_URL='127.0.0.1:12798' is not"),
        ({"NODE_METRICS_TIMEOUT": "0"}, "NODE_METRICS_TIMEOUT='0' is not valid: expected a num"),
        ({"NODE_METRICS_TIMEOUT": "60"}, "greater than 0 and at most 30"),
        ({"NODE_TIP_METRIC": "a-b"}, "NODE_TIP_METRIC='a-b' is not valid"),
        ({"NODE_SYNC_MAX_LAG_SLOTS": "1.5"}, "NODE_SYNC_MAX_LAG_SLOTS='1.5' is not valid"),
        ({"NODE_SYNC_MAX_LAG_SLOTS": "0"}, "expected a whole number greater than 0"),
        ({"NODE_SYNC_GRACE_SECONDS": "-1"}, "NODE_SYNC_GRACE_SECONDS='-1' is not valid"),
        ({"CARDANO_NETWORK": "testnet"}, "CARDANO_NETWORK='testnet' is not valid: expected"),
        (
            {"CARDANO_SHELLEY_START_SLOT": "5"},
            "CARDANO_SHELLEY_START_SLOT is set but CARDANO_NETWORK=mainnet",
        ),
        ({"CARDANO_NETWORK": "custom"}, "CARDANO_SHELLEY_START_SLOT is not set"),
        (
            {
                "CARDANO_NETWORK": "custom",
                "CARDANO_SHELLEY_START_SLOT": "0",
                "CARDANO_SHELLEY_START_TIME": "2022-06-21 00:00",
            },
            "CARDANO_SHELLEY_START_TIME='2022-06-21 00:00' is not valid",
        ),
    ],
)
def test_settings_errors_are_one_line(env: dict[str, str], expected: str) -> None:
    with pytest.raises(NodeSyncConfigError) as err:
        load_node_sync_settings(env, interval=2.0)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


# ---- reading over HTTP -----------------------------------------------------------------------
class Endpoint:
    """A node metrics endpoint a test controls: body, status, and a hang until released."""

    def __init__(self) -> None:
        self.body = LEGACY
        self.status = 200
        self.hang = threading.Event()
        self.release = threading.Event()
        self.requests = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.requests += 1
                if endpoint.hang.is_set():
                    endpoint.release.wait(30)
                data = endpoint.body.encode()
                self.send_response(endpoint.status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/metrics"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    e = Endpoint()
    yield e
    e.close()


def test_read_tip_over_http(endpoint: Endpoint) -> None:
    with requests.Session() as session:
        s = read_tip(session, endpoint.url, 2.0, TIP_METRICS)
        assert (s.tip_slot, s.error) == (150_000_000, None)
        endpoint.status = 503
        s = read_tip(session, endpoint.url, 2.0, TIP_METRICS)
        assert (s.tip_slot, s.error) == (None, "HTTP 503")
        endpoint.status, endpoint.body = 200, "cardano_node_metrics_slotNum_int x\n"
        assert (read_tip(session, endpoint.url, 2.0, TIP_METRICS).error or "").startswith(
            "unparsable metrics"
        )
        endpoint.hang.set()
        s = read_tip(session, endpoint.url, 0.2, TIP_METRICS)
        assert s.error == "timed out after 0.2 s"
        endpoint.release.set()


def test_read_tip_connection_refused() -> None:
    with requests.Session() as session:
        s = read_tip(session, "http://127.0.0.1:9/metrics", 0.5, TIP_METRICS)
    assert (s.tip_slot, s.error) == (None, "connection refused")


def test_a_hung_endpoint_never_blocks_the_gate(endpoint: Endpoint) -> None:
    """The loop consults the check while the reading thread waits on a hung endpoint: the gate
    reads the latest sample only (no request of its own) and keeps the earlier verdict."""
    settings = load(NODE_METRICS_URL=endpoint.url, NODE_METRICS_TIMEOUT="5")
    sampler = TipSampler(settings)
    check = NodeSyncCheck(settings, sampler.latest)
    endpoint.body = f"cardano_node_metrics_slotNum_int {MAINNET.wallclock_slot(time.time())}\n"
    assert sampler.sample_once().error is None
    endpoint.hang.set()
    sampler.start()
    try:
        threading_wait(lambda: endpoint.requests == 2)  # the thread's request hangs
        for _ in range(20):
            assert check.gate(leading=False) == OPEN
        assert endpoint.requests == 2
        assert check.verdict().state is SyncState.SYNCED  # the earlier reading is recent
    finally:
        endpoint.release.set()
        sampler.stop()


def threading_wait(pred: Any) -> None:
    done = threading.Event()
    for _ in range(200):
        if pred():
            return
        done.wait(0.05)
    raise AssertionError("timed out")


# ---- the check and its metrics ---------------------------------------------------------------
class Tip:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lag: int | None = 0

    def __call__(self) -> TipSample:
        tip = None if self.lag is None else NOW_SLOT - self.lag
        return TipSample(self.clock.now, WALL, tip)


def test_check_tracks_grace_and_reports() -> None:
    clock = Clock()
    tip = Tip(clock)
    check = NodeSyncCheck(load(NODE_SYNC_GRACE_SECONDS="10"), tip, clock=clock)
    registry = CollectorRegistry()
    registry.register(NodeSyncCollector(check, "bp-0", "eu"))

    def metric(name: str, **extra: str) -> float | None:
        return registry.get_sample_value(name, {"pod": "bp-0", "cluster": "eu", **extra})

    assert check.gate(leading=True) == OPEN
    assert metric("cardano_node_synced") == 1 and metric("cardano_node_tip_lag_slots") == 0
    assert metric("cardano_node_sync_status", status="synced") == 1
    tip.lag = 1000
    assert check.gate(leading=True).note  # grace starts
    clock.advance(9.9)
    assert not check.gate(leading=True).forge
    tip.lag = 0  # back in time: the grace starts again at the next lag
    assert check.gate(leading=True) == OPEN
    tip.lag = 1000
    check.gate(leading=True)
    clock.advance(9.9)
    assert not check.gate(leading=True).forge
    clock.advance(0.1)
    g = check.gate(leading=True)
    assert g.forge and not g.election
    assert metric("cardano_node_sync_blocked") == 1
    clock.advance(2)
    assert check.gate(leading=True).election
    assert metric("cardano_node_synced") == 0 and metric("cardano_node_tip_lag_slots") == 1000
    assert metric("cardano_node_sync_status", status="behind") == 1
    assert metric("cardano_node_sync_status", status="synced") == 0
    status = check.status()
    assert status["synced"] is False and status["state"] == "behind"
    assert status["blocked"].startswith("cardano-node not synced for 12 s")


def test_disabled_check_is_open_and_says_so() -> None:
    clock = Clock()
    tip = Tip(clock)
    tip.lag = None
    check = NodeSyncCheck(load(NODE_SYNC_CHECK="off"), tip, clock=clock)
    assert check.gate(leading=False) == OPEN
    registry = CollectorRegistry()
    registry.register(NodeSyncCollector(check, "bp-0", "eu"))
    labels = {"pod": "bp-0", "cluster": "eu"}
    assert registry.get_sample_value("cardano_node_sync_check_enabled", labels) == 0
    assert registry.get_sample_value("cardano_node_synced", labels) is None
    assert check.status() == {
        "enabled": False, "synced": True, "state": "disabled",
        "reason": "the node sync check is switched off",
    }  # fmt: skip
