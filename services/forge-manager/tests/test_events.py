"""Kubernetes Events: emitted on transitions, rate-limited, bounded, and never in the way."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from forge_manager.events import Event, EventRecorder, events_enabled, pod, region

from .fakes import Clock, LeaseStore
from .test_manager import Pod
from .test_switchover import NOW, ask, cycle, pods

POD = pod("pod-0", "cardano")


class Sink:
    def __init__(self, *, fail: bool = False, block: threading.Event | None = None) -> None:
        self.posted: list[Event] = []
        self.fail = fail
        self.block = block
        self.entered = threading.Event()

    def post(self, event: Event) -> None:
        self.entered.set()
        if self.block is not None:
            self.block.wait(30)
        if self.fail:
            raise RuntimeError("HTTP 403 Forbidden: events is forbidden")
        self.posted.append(event)


class Counts:
    def __init__(self) -> None:
        self.posted = 0
        self.dropped: dict[str, int] = {}

    def event_posted(self) -> None:
        self.posted += 1

    def event_dropped(self, cause: str) -> None:
        self.dropped[cause] = self.dropped.get(cause, 0) + 1


def recorder(sink: Sink, clock: Clock, counts: Counts, **kw: float) -> EventRecorder:
    return EventRecorder(
        sink,
        clock=clock,
        wall=lambda: NOW,
        counters=counts,
        **kw,  # type: ignore[arg-type]
    )


def drain(rec: EventRecorder) -> None:
    while not rec._queue.empty():
        event = rec._queue.get_nowait()
        assert event is not None
        rec.post_one(event)


def test_a_flapping_object_is_rate_limited_per_object() -> None:
    clock, counts, sink = Clock(), Counts(), Sink()
    rec = recorder(sink, clock, counts, burst=3, refill_seconds=10.0, capacity=100)
    for i in range(10):
        rec.record(POD, "LeaderElected", f"flap {i}")
    rec.record(region("east", "cardano"), "AcquiredPoolLease", "another object")
    drain(rec)
    assert [e.message for e in sink.posted] == ["flap 0", "flap 1", "flap 2", "another object"]
    assert counts.dropped == {"rate_limited": 7}
    clock.advance(10)
    rec.record(POD, "LeadershipLost", "after a refill")
    rec.record(POD, "LeadershipLost", "too soon")
    drain(rec)
    assert sink.posted[-1].message == "after a refill" and counts.dropped["rate_limited"] == 8


def test_a_full_queue_drops_instead_of_waiting_and_errors_are_swallowed() -> None:
    clock, counts, sink = Clock(), Counts(), Sink(fail=True)
    rec = recorder(sink, clock, counts, capacity=2, burst=100)
    for i in range(5):
        rec.record(pod(f"p{i}", "cardano"), "LeaderElected", "x")
    assert counts.dropped == {"queue_full": 3}
    drain(rec)
    assert counts.dropped == {"queue_full": 3, "api_error": 2} and counts.posted == 0


def test_the_message_is_bounded_and_the_setting_parsed() -> None:
    clock, counts, sink = Clock(), Counts(), Sink()
    rec = recorder(sink, clock, counts)
    rec.record(POD, "RefusedToForge", "x" * 5000, "Warning")
    drain(rec)
    assert len(sink.posted[0].message) == 1024 and sink.posted[0].type == "Warning"
    assert events_enabled({}) and not events_enabled({"KUBE_EVENTS": "false"})
    with pytest.raises(ValueError, match="KUBE_EVENTS='maybe' is not valid: expected true or"):
        events_enabled({"KUBE_EVENTS": "maybe"})


def attach(p: Pod, rec: EventRecorder) -> None:
    p.manager.emit = lambda reason, message, kind: rec.record(
        pod(p.manager.identity, "cardano"), reason, message, kind
    )


def test_every_transition_of_a_switchover_is_an_event(
    world: tuple[Path, LeaseStore, Clock],
) -> None:
    _, store, clock = world
    counts, sink = Counts(), Sink()
    rec = recorder(sink, Clock(), counts, capacity=100)
    a, b, c = pods(world)
    for p in (a, b, c):
        attach(p, rec)
    ask(store, "pod-1", NOW)
    for _ in range(4):
        cycle(clock, a, b, c)
    drain(rec)
    seen = [(e.involved.name, e.reason) for e in sink.posted]
    assert seen == [
        ("pod-1", "SwitchoverReady"),
        ("pod-0", "LeadershipLost"),
        ("pod-0", "ForgingDisabled"),
        ("pod-0", "HandedOver"),
        ("pod-1", "LeaderElected"),
        ("pod-1", "ForgingEnabled"),
    ], seen
    lost = next(e for e in sink.posted if e.reason == "LeadershipLost")
    assert "(switchover)" in lost.message and lost.type == "Normal"
    disabled = next(e for e in sink.posted if e.reason == "ForgingDisabled")
    assert disabled.message.startswith("forging stopped (switchover)")


def run_scenario(world: tuple[Path, LeaseStore, Clock], sink: Sink | None) -> list[object]:
    """A leader, a switchover, an API outage past the renew deadline, a failed source: what the
    pods did (decisions, files, signals), with Events to ``sink`` or none at all."""
    tmp, store, clock = world
    a, b = Pod(tmp, store, clock, "pod-0"), Pod(tmp, store, clock, "pod-1")
    for p in (a, b):
        p.manager._wall = lambda: NOW  # type: ignore[method-assign]
    threads: list[threading.Thread] = []
    if sink is not None:
        rec = recorder(sink, Clock(), Counts(), capacity=4)
        rec.start()
        for p in (a, b):
            attach(p, rec)
    trace: list[object] = []

    def step(*ps: Pod) -> None:
        clock.advance(1)
        for p in ps:
            done = threading.Event()
            result: list[str] = []

            def run(p: Pod = p, result: list[str] = result, done: threading.Event = done) -> None:
                result.append(p.manager.step().replace(str(tmp), "ROOT"))
                done.set()

            t = threading.Thread(target=run, daemon=True)
            t.start()
            threads.append(t)
            assert done.wait(20), "a cycle blocked on an Event"
            trace.append((p.manager.identity, result[0], p.files.all_present(), p.sighups()))

    a.elect()
    for _ in range(2):
        step(a, b)
    ask(store, "pod-1", NOW)
    for _ in range(4):
        step(a, b)
    store.down = True
    for _ in range(12):
        step(a, b)
    store.down = False
    (b.files.sources[0]).write_text("")
    for _ in range(4):
        step(a, b)
    return trace


@pytest.mark.parametrize("failure", ["raises", "blocks"])
def test_an_events_api_failure_changes_nothing_in_forging(
    tmp_path: Path, failure: str, world: tuple[Path, LeaseStore, Clock]
) -> None:
    def fresh(name: str) -> tuple[Path, LeaseStore, Clock]:
        root = tmp_path / name
        (root / "secret").mkdir(parents=True)
        for f in world[0].joinpath("secret").iterdir():
            (root / "secret" / f.name).write_text(f.read_text())
        return root, LeaseStore(), Clock()

    without = run_scenario(fresh("without"), None)
    hang = threading.Event()
    sink = Sink(fail=True) if failure == "raises" else Sink(block=hang)
    try:
        with_failing = run_scenario(fresh("with"), sink)
    finally:
        hang.set()
    assert sink.entered.is_set()  # Events were attempted
    assert with_failing == without
