"""What both ways of running the demo share: its errors, its transitions and the closing figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tests.harness.forging_log import Interval, longest_gap, overlaps


class DemoError(RuntimeError):
    """One line: what went wrong and what to do."""


class Stopped(Exception):
    """Ctrl-C or SIGTERM."""


@dataclass
class Transition:
    name: str
    seconds: float
    detail: str


def report(transitions: Sequence[Transition], spans: Sequence[Interval], end: float) -> int:
    """Print each transition and the overlap of forgers (from the stand-ins' own logs); 0 when
    no two nodes forged at once, else 1."""
    overlap = sum(o.seconds for o in overlaps(spans, end))
    start = min((s.start for s in spans), default=end)
    print("\ncardano-forge demo: transitions")
    for t in transitions:
        print(f"  {t.name:<18} {t.seconds:6.1f} s  {t.detail}")
    print(f"  two nodes forging at once: {overlap * 1000:.0f} ms in total (must be 0)")
    print(f"  longest time with no forger after the first block producer: "
          f"{longest_gap(spans, start, end):.1f} s")  # fmt: skip
    return 0 if overlap == 0 else 1
