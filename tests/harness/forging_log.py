"""Forging intervals from the node stand-ins' event logs, and the overlap between nodes.

Pure functions over events (dicts with ``t`` on the system-wide CLOCK_BOOTTIME, ``pid``,
``name``, ``event``). A node is one process: ``name/pid`` by default (stand-ins on one host,
named apart); stand-ins in pods are all named ``cardano-node`` and have PIDs of their own PID
namespace, so ``intervals(events, key=pod_process)`` tells them apart by ``host`` (the pod) and
``instance`` (the process). A node's forging interval starts at ``forging_started`` and ends at the
next ``forging_stopped`` or at the end of that process (``exited``, or ``killed`` written by the
harness after it reaped a process it killed with SIGKILL). An interval with no end is open: it
lasts until the ``until`` passed to the analysis (conservatively, the end of the observation).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENDS = ("forging_stopped", "exited", "killed")


@dataclass(frozen=True)
class Interval:
    node: str
    """The forging process (``name/pid``, or the ``key`` given to ``intervals``)."""
    start: float
    end: float | None
    """None while still forging."""

    def end_or(self, until: float) -> float:
        return until if self.end is None else self.end


def read_events(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """All events of the given JSON-lines files, in time order (missing files are empty)."""
    events: list[dict[str, Any]] = []
    for path in paths:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            if line.strip():
                events.append(json.loads(line))
    events.sort(key=lambda e: float(e["t"]))
    return events


def process(event: dict[str, Any]) -> str:
    """``name/pid``: the node of an event of stand-ins sharing one PID namespace."""
    return f"{event['name']}/{event['pid']}"


def pod_process(event: dict[str, Any]) -> str:
    """``host/pid/instance``: the node of an event of stand-ins in pods (``host`` is the pod)."""
    return f"{event['host']}/{event['pid']}/{event['instance']}"


def intervals(
    events: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], str] = process
) -> list[Interval]:
    """Forging intervals per process (``key`` of an event), in order of start."""
    open_at: dict[str, float] = {}
    out: list[Interval] = []
    for e in sorted(events, key=lambda e: float(e["t"])):
        node = key(e)
        if e["event"] == "forging_started" and node not in open_at:
            open_at[node] = float(e["t"])
        elif e["event"] in ENDS and node in open_at:
            out.append(Interval(node, open_at.pop(node), float(e["t"])))
    out.extend(Interval(node, start, None) for node, start in open_at.items())
    return sorted(out, key=lambda i: i.start)


@dataclass(frozen=True)
class Overlap:
    a: str
    b: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def overlaps(spans: Sequence[Interval], until: float) -> list[Overlap]:
    """Every pair of intervals of *different* nodes that share a moment (touching is not)."""
    found: list[Overlap] = []
    for i, x in enumerate(spans):
        for y in spans[i + 1 :]:
            if x.node == y.node:
                continue
            start = max(x.start, y.start)
            end = min(x.end_or(until), y.end_or(until))
            if start < end:
                found.append(Overlap(x.node, y.node, start, end))
    return found


def forging_at(spans: Sequence[Interval], t: float) -> list[str]:
    """Nodes forging at moment ``t``."""
    return [s.node for s in spans if s.start <= t and (s.end is None or t < s.end)]


def longest_gap(spans: Sequence[Interval], start: float, until: float) -> float:
    """Longest time within [start, until] during which no node forged."""
    covered = sorted((max(s.start, start), min(s.end_or(until), until)) for s in spans)
    gap, cursor = 0.0, start
    for a, b in covered:
        if b <= a:
            continue
        if a > cursor:
            gap = max(gap, a - cursor)
        cursor = max(cursor, b)
    return max(gap, until - cursor)


def summary(spans: Sequence[Interval]) -> str:
    """A short human-readable account, for assertion messages."""
    lines = [
        f"{s.node}: {s.start:.3f} -> {'open' if s.end is None else f'{s.end:.3f}'}" for s in spans
    ]
    return "\n".join(lines) or "(no forging at all)"
