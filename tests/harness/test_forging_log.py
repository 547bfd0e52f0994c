"""Unit tests of the forging-interval analysis shared by the integration and chaos suites."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.harness.forging_log import (
    Interval,
    forging_at,
    intervals,
    longest_gap,
    overlaps,
    pod_process,
    read_events,
)


def ev(t: float, pid: int, event: str, name: str = "cn") -> dict[str, Any]:
    return {"t": t, "pid": pid, "name": name, "event": event}


def test_intervals_end_at_stop_exit_or_kill_and_stay_open_otherwise() -> None:
    events = [
        ev(1.0, 10, "forging_started"),
        ev(2.0, 10, "forging_stopped"),
        ev(3.0, 11, "forging_started"),
        ev(4.0, 11, "killed"),
        ev(5.0, 12, "forging_started"),
        ev(4.5, 10, "forging_started"),
        ev(6.0, 10, "exited"),
    ]
    assert intervals(events) == [
        Interval("cn/10", 1.0, 2.0),
        Interval("cn/11", 3.0, 4.0),
        Interval("cn/10", 4.5, 6.0),
        Interval("cn/12", 5.0, None),
    ]


def test_overlap_is_found_between_different_nodes_only() -> None:
    spans = [Interval("a/1", 1.0, 3.0), Interval("b/2", 2.5, None), Interval("a/1", 4.0, 5.0)]
    found = overlaps(spans, until=10.0)
    assert [(o.a, o.b, o.start, o.end) for o in found] == [
        ("a/1", "b/2", 2.5, 3.0),
        ("b/2", "a/1", 4.0, 5.0),
    ]
    assert abs(found[0].seconds - 0.5) < 1e-9


def test_handover_that_touches_is_not_an_overlap() -> None:
    spans = [Interval("a/1", 1.0, 3.0), Interval("b/2", 3.0, 6.0)]
    assert overlaps(spans, until=10.0) == []
    assert forging_at(spans, 3.0) == ["b/2"]
    assert forging_at(spans, 2.0) == ["a/1"]


def test_open_interval_counts_until_the_end_of_observation() -> None:
    spans = [Interval("a/1", 1.0, None), Interval("b/2", 8.0, 9.0)]
    assert overlaps(spans, until=7.0) == []
    assert len(overlaps(spans, until=10.0)) == 1


def test_longest_gap() -> None:
    spans = [Interval("a/1", 1.0, 3.0), Interval("b/2", 5.5, 6.0), Interval("c/3", 5.0, None)]
    assert longest_gap(spans, start=0.0, until=10.0) == 2.0
    assert longest_gap([], start=0.0, until=4.0) == 4.0


def test_read_events_merges_files_in_time_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps(ev(2.0, 1, "forging_started")) + "\n")
    b.write_text(json.dumps(ev(1.0, 2, "started")) + "\n\n")
    events = read_events([a, b, tmp_path / "missing.jsonl"])
    assert [e["t"] for e in events] == [1.0, 2.0]


def test_pods_are_told_apart_by_host_and_instance_not_by_pid() -> None:
    """Every pod's stand-in is ``cardano-node`` with a PID of the pod's namespace: two pods (or a
    force-deleted pod and its replacement of the same name) may log the same name and PID."""

    def pod_ev(t: float, host: str, instance: str, event: str) -> dict[str, Any]:
        return {**ev(t, 27, event, "cardano-node"), "host": host, "instance": instance}

    events = [
        pod_ev(1.0, "east-0", "a1", "forging_started"),
        pod_ev(2.0, "east-1", "b1", "forging_started"),
        pod_ev(3.0, "east-0", "a2", "forging_started"),
        pod_ev(4.0, "east-0", "a1", "killed"),
    ]
    spans = intervals(events, key=pod_process)
    assert [s.node for s in spans] == ["east-0/27/a1", "east-1/27/b1", "east-0/27/a2"]
    assert [(o.a, o.b) for o in overlaps(spans, until=5.0)] == [
        ("east-0/27/a1", "east-1/27/b1"),
        ("east-0/27/a1", "east-0/27/a2"),
        ("east-1/27/b1", "east-0/27/a2"),
    ]
    # Keyed by name and PID, as stand-ins on one host are, the three would be one process.
    assert len(intervals(events)) == 1
