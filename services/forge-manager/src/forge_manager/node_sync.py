"""Is this pod's cardano-node synced? Its tip slot, from its own Prometheus endpoint, against the
slot the network is at now.

A node that is replaying its ledger or is far behind the chain must not lead: what it forges
extends a stale chain and is lost, and while it holds the Lease a synced standby cannot forge.
So the node's sync state bears on the election:

* a **standby** whose node is not synced stays out of the election (it never acquires);
* a **leader** whose node has not been synced for longer than ``NODE_SYNC_GRACE_SECONDS`` stops
  forging (credentials removed, node signalled) and, one retry period later (the node's settle
  time, like shutdown), releases the Lease so a synced standby takes over at once;
* when no node is synced, nobody forges; ``/health``, the metrics and the log say why.

"Synced" means: a reading of the node's metrics not older than ``stale_after``, holding a tip slot
within ``NODE_SYNC_MAX_LAG_SLOTS`` of the wall-clock slot (either way: a tip far *ahead* means a
wrong ``CARDANO_NETWORK`` or host clock, and fails closed too). The tolerance absorbs the natural
gaps between blocks (one every 20 s on average, gaps over 300 s about once in years on mainnet)
and the few slots a restarted node needs to catch up; the grace keeps a leader from handing over
on a blip of its node's endpoint. The price of both: a leader whose node really falls behind
forges on a stale chain for up to (time to exceed the tolerance) + grace before it hands over.

The HTTP reads run in a thread of their own (:class:`TipSampler`), each bounded by
``NODE_METRICS_TIMEOUT``; the control loop only reads the latest sample, so a hung endpoint never
delays a Lease renewal: it makes the sample stale, which is "not synced". Everything that decides
(:func:`parse_tip_slot`, :func:`judge`, :func:`decide_gate`) is pure.
"""

from __future__ import annotations

import enum
import logging
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from forge_manager import __version__
from forge_manager.networks import BUILT_IN, Network
from forge_manager.timing import DEMOTION_BUDGET_S

log = logging.getLogger("forge_manager")

DEFAULT_METRICS_URL = "http://127.0.0.1:12798/metrics"
TIP_METRICS = ("cardano_node_metrics_slotNum_int", "cardano_node_metrics_slotNum")
"""The legacy tracing system's name, and the new tracing system's (the same name with the type
suffix since cardano-node 9.x; without it when its ``metricsNoSuffix`` option is on)."""
MAX_BODY_BYTES = 4 * 1024 * 1024
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_TRUE = ("1", "true", "yes", "on", "enabled")
_FALSE = ("0", "false", "no", "off", "disabled")


# ---- settings ----------------------------------------------------------------------------------
class NodeSyncConfigError(ValueError):
    """One line: the variable, what was wrong, the expected form."""


@dataclass(frozen=True)
class NodeSyncSettings:
    enabled: bool
    """``NODE_SYNC_CHECK``: false switches the check off (with a warning): any node may lead."""
    metrics_url: str
    """``NODE_METRICS_URL``: the node's Prometheus endpoint (http://127.0.0.1:12798/metrics)."""
    timeout: float
    """``NODE_METRICS_TIMEOUT``: seconds, bound on connecting and on each read (1)."""
    tip_metrics: tuple[str, ...]
    """``NODE_TIP_METRIC``: metric names holding the tip slot, first found wins (see
    :data:`TIP_METRICS`)."""
    network: Network
    """``CARDANO_NETWORK``: mainnet, preprod, preview, or custom with
    ``CARDANO_SHELLEY_START_SLOT``, ``CARDANO_SHELLEY_START_TIME`` and
    ``CARDANO_SLOT_LENGTH_SECONDS``."""
    max_lag_slots: int
    """``NODE_SYNC_MAX_LAG_SLOTS``: the largest distance of the tip from the wall-clock slot that
    counts as synced (300)."""
    grace: float
    """``NODE_SYNC_GRACE_SECONDS``: how long a leader's node may be unsynced before the leader
    hands over (60)."""
    interval: float
    """Seconds between readings: the retry period (``LEASE_RETRY_PERIOD``)."""

    @property
    def stale_after(self) -> float:
        """A reading older than this is not evidence of anything (the endpoint hangs)."""
        return 3 * self.interval + 2 * self.timeout


def load_node_sync_settings(env: Mapping[str, str], *, interval: float) -> NodeSyncSettings:
    """Parse and validate; raises :class:`NodeSyncConfigError` on the first problem."""
    raw = env.get("NODE_SYNC_CHECK", "").strip().lower()
    if raw not in _TRUE + _FALSE + ("",):
        raise NodeSyncConfigError(
            f"NODE_SYNC_CHECK={env['NODE_SYNC_CHECK']!r} is not valid: expected true or false"
        )
    enabled = raw not in _FALSE
    url = env.get("NODE_METRICS_URL", "").strip() or DEFAULT_METRICS_URL
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NodeSyncConfigError(
            f"NODE_METRICS_URL={url!r} is not valid: expected the node's Prometheus endpoint, "
            f"e.g. {DEFAULT_METRICS_URL}"
        )
    timeout = _number(env, "NODE_METRICS_TIMEOUT", "1", low=0.0, high=30.0)
    names = tuple(n.strip() for n in env.get("NODE_TIP_METRIC", "").split(",") if n.strip())
    for name in names:
        if not _METRIC_NAME.match(name):
            raise NodeSyncConfigError(
                f"NODE_TIP_METRIC={env['NODE_TIP_METRIC']!r} is not valid: expected metric "
                f"names separated by commas, e.g. {TIP_METRICS[0]}"
            )
    max_lag = _number(env, "NODE_SYNC_MAX_LAG_SLOTS", "300", low=0.0, integer=True)
    grace = _number(env, "NODE_SYNC_GRACE_SECONDS", "60", low=None)
    return NodeSyncSettings(
        enabled=enabled,
        metrics_url=url,
        timeout=timeout,
        tip_metrics=names or TIP_METRICS,
        network=_network(env),
        max_lag_slots=int(max_lag),
        grace=grace,
        interval=interval,
    )


def _number(
    env: Mapping[str, str],
    name: str,
    default: str,
    *,
    low: float | None,
    high: float | None = None,
    integer: bool = False,
) -> float:
    """A number > ``low`` (>= 0 when ``low`` is None) and <= ``high``."""
    raw = env.get(name, "").strip() or default
    form = "a whole number" if integer else "a number"
    try:
        value = float(int(raw)) if integer else float(raw)
    except ValueError:
        raise NodeSyncConfigError(
            f"{name}={raw!r} is not valid: expected {form}, e.g. {default}"
        ) from None
    bad = not math.isfinite(value) or (value <= low if low is not None else value < 0)
    if bad or (high is not None and value > high):
        bound = f"greater than {low:g}" if low is not None else "0 or more"
        if high is not None:
            bound += f" and at most {high:g}"
        raise NodeSyncConfigError(f"{name}={raw!r} is not valid: expected {form} {bound}")
    return value


_CUSTOM = (
    "CARDANO_SHELLEY_START_SLOT",
    "CARDANO_SHELLEY_START_TIME",
    "CARDANO_SLOT_LENGTH_SECONDS",
)


def _network(env: Mapping[str, str]) -> Network:
    name = env.get("CARDANO_NETWORK", "").strip().lower() or "mainnet"
    given = [v for v in _CUSTOM if env.get(v, "").strip()]
    if name != "custom":
        if name not in BUILT_IN:
            raise NodeSyncConfigError(
                f"CARDANO_NETWORK={env['CARDANO_NETWORK']!r} is not valid: expected mainnet, "
                "preprod, preview or custom"
            )
        if given:
            raise NodeSyncConfigError(
                f"{given[0]} is set but CARDANO_NETWORK={name}: set CARDANO_NETWORK=custom to "
                "use your own genesis values, or remove it"
            )
        return BUILT_IN[name]
    for var in _CUSTOM[:2]:
        if var not in given:
            raise NodeSyncConfigError(
                f"{var} is not set: CARDANO_NETWORK=custom needs CARDANO_SHELLEY_START_SLOT "
                "(first Shelley slot) and CARDANO_SHELLEY_START_TIME (Unix seconds or "
                "2022-06-21T00:00:00Z)"
            )
    slot = _number(env, "CARDANO_SHELLEY_START_SLOT", "0", low=None, integer=True)
    raw_time = env["CARDANO_SHELLEY_START_TIME"].strip()
    try:
        start = int(raw_time)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(raw_time.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise NodeSyncConfigError(
                f"CARDANO_SHELLEY_START_TIME={raw_time!r} is not valid: expected Unix seconds "
                "or an ISO 8601 time with its zone, e.g. 2022-06-21T00:00:00Z"
            ) from None
        start = int(parsed.timestamp())
    length = _number(env, "CARDANO_SLOT_LENGTH_SECONDS", "1", low=0.0)
    return Network("custom", int(slot), start, length)


# ---- reading the tip ---------------------------------------------------------------------------
def parse_tip_slot(text: str, names: Sequence[str]) -> int | None:
    """The tip slot in a Prometheus text exposition: the first of ``names`` present (the largest
    value over its label sets); None when none is present. Raises ValueError when such a sample
    cannot be parsed or is not a slot number. Lines about other metrics are never parsed, so an
    odd line elsewhere in the node's output does not hide its tip."""
    wanted = set(names)
    kept: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            words = stripped.split()
            keep = len(words) >= 3 and words[1] in ("TYPE", "HELP") and words[2] in wanted
        else:
            keep = re.split(r"[\s{]", stripped, maxsplit=1)[0] in wanted
        if keep:
            kept.append(stripped)
    found: dict[str, float] = {}
    for family in text_string_to_metric_families("\n".join(kept) + "\n"):
        for sample in family.samples:
            if sample.name in wanted:
                found[sample.name] = max(found.get(sample.name, -math.inf), sample.value)
    for name in names:
        if name in found:
            value = found[name]
            if not math.isfinite(value) or value < 0 or value != int(value):
                raise ValueError(f"{name} is {value!r}, not a slot number")
            return int(value)
    return None


@dataclass(frozen=True)
class TipSample:
    """One reading of the node's metrics."""

    taken_at: float
    """Monotonic time of the reading."""
    wall_time: float
    """Unix time of the reading (the wall-clock slot is computed for this moment)."""
    tip_slot: int | None
    """None when the metric is absent (or the reading failed)."""
    error: str | None = None
    """Why the endpoint could not be read or parsed; None on success."""


def read_tip(
    session: requests.Session,
    url: str,
    timeout: float,
    names: Sequence[str],
    *,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
) -> TipSample:
    """One GET of the node's metrics; never raises. The whole read is bounded by about twice
    the timeout (connect, then the body within ``2 * timeout``)."""
    started = clock()
    try:
        with session.get(
            url,
            timeout=(timeout, timeout),
            stream=True,
            allow_redirects=False,
            headers={"User-Agent": f"cardano-forge-manager/{__version__}"},
        ) as resp:
            if resp.status_code != 200:
                return TipSample(clock(), wall(), None, f"HTTP {resp.status_code}")
            body = bytearray()
            for chunk in resp.iter_content(65536):
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    return TipSample(clock(), wall(), None, "response larger than 4 MiB")
                if clock() - started > 2 * timeout:
                    return TipSample(clock(), wall(), None, f"response slower than {timeout:g} s")
    except requests.Timeout:
        return TipSample(clock(), wall(), None, f"timed out after {timeout:g} s")
    except requests.ConnectionError as exc:
        refused = "refused" in str(exc).lower()
        why = "connection refused" if refused else f"cannot connect: {str(exc)[:150]}"
        return TipSample(clock(), wall(), None, why)
    except requests.RequestException as exc:
        text = str(exc) or type(exc).__name__
        return TipSample(clock(), wall(), None, f"request failed: {text[:150]}")
    taken, now = clock(), wall()
    try:
        tip = parse_tip_slot(body.decode("utf-8", errors="replace"), names)
    except ValueError as exc:
        return TipSample(taken, now, None, f"unparsable metrics: {str(exc)[:150]}")
    return TipSample(taken, now, tip)


class TipSampler:
    """The thread reading the node's tip every ``interval``; the loop only calls :meth:`latest`."""

    def __init__(
        self,
        settings: NodeSyncSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._wall = wall
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy between two containers of one pod
        self._lock = threading.Lock()
        self._latest: TipSample | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def latest(self) -> TipSample | None:
        with self._lock:
            return self._latest

    def sample_once(self) -> TipSample:
        s = self._settings
        sample = read_tip(
            self._session, s.metrics_url, s.timeout, s.tip_metrics,
            clock=self._clock, wall=self._wall,
        )  # fmt: skip
        with self._lock:
            self._latest = sample
        return sample

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            try:
                self.sample_once()
            except Exception:  # a bug must not end the readings silently: they go stale
                log.exception("reading the node's metrics raised")
            self._stop.wait(max(0.0, self._settings.interval - (self._clock() - started)))

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="node-sync", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self._settings.timeout + 1)
            self._thread = None
        self._session.close()


# ---- the pure decisions ------------------------------------------------------------------------
class SyncState(enum.Enum):
    SYNCED = "synced"
    BEHIND = "behind"
    AHEAD = "ahead"
    NO_TIP = "no_tip"
    UNREACHABLE = "unreachable"
    STALE = "stale"
    DISABLED = "disabled"


@dataclass(frozen=True)
class SyncVerdict:
    state: SyncState
    reason: str
    """In detail, with the numbers of this reading (``/health``, the log on a change of state)."""
    tip_slot: int | None = None
    lag_slots: int | None = None
    """Wall-clock slot minus tip slot at the reading (negative: the tip is ahead)."""
    summary: str = ""
    """The same without the numbers that change every slot: the election's and forging's
    reasons repeat it every cycle, and the loop logs a reason only when it changes."""

    @property
    def synced(self) -> bool:
        return self.state in (SyncState.SYNCED, SyncState.DISABLED)


def judge(
    sample: TipSample | None,
    *,
    now: float,
    network: Network,
    max_lag_slots: int,
    stale_after: float,
) -> SyncVerdict:
    """Synced or not, and why, from the latest reading (``now`` on the monotonic clock)."""
    stale = "no recent reading of its metrics"
    if sample is None:
        return SyncVerdict(SyncState.STALE, "no reading of the node's metrics yet", summary=stale)
    age = now - sample.taken_at
    if age > stale_after:
        return SyncVerdict(
            SyncState.STALE,
            f"the last reading of the node's metrics is {age:.0f} s old (endpoint hanging?)",
            summary=stale,
        )
    if sample.error is not None:
        why = f"its metrics are unreadable: {sample.error}"
        return SyncVerdict(SyncState.UNREACHABLE, why, summary=why)
    tip = sample.tip_slot
    if tip is None:
        why = "no tip slot in its metrics (still replaying its ledger?)"
        return SyncVerdict(SyncState.NO_TIP, why, summary=why)
    wallclock = network.wallclock_slot(sample.wall_time)
    lag = wallclock - tip
    if lag > max_lag_slots:
        return SyncVerdict(
            SyncState.BEHIND,
            f"tip slot {tip} is {lag} slots behind the wall-clock slot {wallclock} "
            f"(at most {max_lag_slots})",
            tip, lag,
            f"its tip is more than {max_lag_slots} slots behind the wall-clock slot",
        )  # fmt: skip
    if -lag > max_lag_slots:
        check = "check CARDANO_NETWORK and the host's clock"
        return SyncVerdict(
            SyncState.AHEAD,
            f"tip slot {tip} is {-lag} slots ahead of the wall-clock slot {wallclock} on "
            f"{network.name}: {check}",
            tip, lag,
            f"its tip is more than {max_lag_slots} slots ahead of the wall-clock slot of "
            f"{network.name}: {check}",
        )  # fmt: skip
    return SyncVerdict(
        SyncState.SYNCED, f"tip slot {tip}, {lag} slots from the wall clock", tip, lag, "synced"
    )


@dataclass(frozen=True)
class SyncGate:
    """What the node's sync state forbids this pod; empty strings forbid nothing."""

    forge: str
    """Why this pod must not forge (even as leader)."""
    election: str
    """Why this pod must stay out of the election (a leader releases the Lease)."""
    note: str = ""
    """A leader within its grace: what is going on."""


OPEN = SyncGate("", "")


def decide_gate(
    verdict: SyncVerdict,
    *,
    leading: bool,
    unsynced_for: float,
    forge_blocked_for: float | None,
    grace: float,
    settle: float = DEMOTION_BUDGET_S,
) -> SyncGate:
    """The node's sync state applied to this pod.

    ``unsynced_for``: seconds the node has been unsynced without interruption (0 when synced);
    ``forge_blocked_for``: seconds since forging was first forbidden, None while it is not."""
    if verdict.synced:
        return OPEN
    what = verdict.summary or verdict.reason
    if not leading:
        why = f"cardano-node not synced: {what}"
        return SyncGate(forge=why, election=why)
    if unsynced_for < grace:
        return SyncGate(
            "", "",
            f"cardano-node not synced for {unsynced_for:.0f} s ({what}); handing over after "
            f"{grace:g} s",
        )  # fmt: skip
    why = (
        f"cardano-node not synced for {unsynced_for:.0f} s, more than "
        f"NODE_SYNC_GRACE_SECONDS={grace:g}: {what}"
    )
    # Stop forging first; release only once the node had time to act on the signal.
    settled = forge_blocked_for is not None and forge_blocked_for >= settle
    return SyncGate(forge=why, election=why if settled else "")


# ---- the check the manager consults ------------------------------------------------------------
class NodeSyncCheck:
    """Latest reading -> verdict -> gate, with the bookkeeping of durations; thread-safe.

    The manager calls :meth:`gate` once a cycle (it never blocks); the HTTP server calls
    :meth:`status` and the metrics collector :meth:`verdict`."""

    def __init__(
        self,
        settings: NodeSyncSettings,
        latest: Callable[[], TipSample | None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._latest = latest
        self._clock = clock
        self._lock = threading.Lock()
        self._unsynced_since: float | None = None
        self._blocked_since: float | None = None
        self._gate = OPEN
        self._state: SyncState | None = None

    def verdict(self) -> SyncVerdict:
        s = self.settings
        if not s.enabled:
            return SyncVerdict(SyncState.DISABLED, "the node sync check is switched off")
        return judge(
            self._latest(), now=self._clock(), network=s.network,
            max_lag_slots=s.max_lag_slots, stale_after=s.stale_after,
        )  # fmt: skip

    def gate(self, *, leading: bool) -> SyncGate:
        verdict = self.verdict()
        now = self._clock()
        with self._lock:
            if verdict.synced:
                self._unsynced_since = None
            elif self._unsynced_since is None:
                self._unsynced_since = now
            unsynced_for = 0.0 if self._unsynced_since is None else now - self._unsynced_since
            blocked_for = None if self._blocked_since is None else now - self._blocked_since
            gate = decide_gate(
                verdict, leading=leading, unsynced_for=unsynced_for,
                forge_blocked_for=blocked_for, grace=self.settings.grace,
            )  # fmt: skip
            if not gate.forge:
                self._blocked_since = None
            elif self._blocked_since is None:
                self._blocked_since = now
            self._report(verdict, gate)
            self._gate = gate
        return gate

    def _report(self, verdict: SyncVerdict, gate: SyncGate) -> None:
        """Log changes of state (not of numbers); must hold the lock."""
        if verdict.state != self._state:
            if verdict.synced:
                log.info("cardano-node sync: %s (%s)", verdict.state.value, verdict.reason)
            else:
                log.warning("cardano-node sync: %s (%s)", verdict.state.value, verdict.reason)
            self._state = verdict.state
        if gate.election and not self._gate.election:
            log.warning("node sync check: %s", gate.election)
        elif gate.forge and not self._gate.forge:
            log.warning("node sync check: stopping forging: %s", gate.forge)
        elif gate.note and not self._gate.note:
            log.warning("node sync check: leader's %s", gate.note)

    def blocked(self) -> str:
        """The reason this pod is kept out of the election or from forging ('' when not)."""
        with self._lock:
            return self._gate.election or self._gate.forge

    def status(self) -> dict[str, Any]:
        """For ``/health``: the verdict, why, and what it does to this pod."""
        v = self.verdict()
        s = self.settings
        out: dict[str, Any] = {
            "enabled": s.enabled,
            "synced": v.synced,
            "state": v.state.value,
            "reason": v.reason,
        }
        if s.enabled:
            out.update(
                tip_slot=v.tip_slot,
                lag_slots=v.lag_slots,
                max_lag_slots=s.max_lag_slots,
                grace_seconds=s.grace,
                network=s.network.name,
                metrics_url=s.metrics_url,
                blocked=self.blocked(),
            )
        return out


class NodeSyncCollector(Collector):
    """Scrape-time gauges of the node sync check."""

    def __init__(self, check: NodeSyncCheck, pod: str, cluster: str) -> None:
        self._check = check
        self._values = [pod, cluster]

    def collect(self) -> Iterator[Metric]:
        labels = ["pod", "cluster"]
        check = self._check

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(self._values, value)
            return g

        v = check.verdict()
        enabled = check.settings.enabled
        yield gauge(
            "cardano_node_sync_check_enabled",
            "0 when NODE_SYNC_CHECK is off: a node that is behind the chain may lead",
            float(enabled),
        )
        status = GaugeMetricFamily(
            "cardano_node_sync_status",
            "1 for the node's current sync state (synced, behind, ahead, no_tip, unreachable, "
            "stale, disabled)",
            labels=[*labels, "status"],
        )
        for state in SyncState:
            status.add_metric([*self._values, state.value], float(state is v.state))
        yield status
        if not enabled:
            return
        yield gauge(
            "cardano_node_synced",
            "1 when the node's tip is within NODE_SYNC_MAX_LAG_SLOTS of the wall-clock slot",
            float(v.synced),
        )
        yield gauge(
            "cardano_node_sync_blocked",
            "1 while the node's sync state keeps this pod out of the election or from forging",
            float(bool(check.blocked())),
        )
        if v.tip_slot is not None:
            yield gauge("cardano_node_tip_slot", "The node's tip slot", float(v.tip_slot))
        if v.lag_slots is not None:
            yield gauge(
                "cardano_node_tip_lag_slots",
                "Wall-clock slot minus the node's tip slot at the last reading",
                float(v.lag_slots),
            )
