"""Splitting the integration tests into runs that go side by side (``make integration``).

Whole test files go to one run each (module fixtures are set up once), assigned longest first to
the run with the least time so far, by the seconds each file took when last measured
(``tests/durations.json``; a file not in it counts ``UNKNOWN_FILE_S``). The assignment depends
only on the table and the selected files, so every run computes the same split.

``python -m tests.harness.shards merge OUT IN...`` writes the per-file seconds recorded by runs
(``--record-durations``) into ``OUT`` (files not run keep their old figure).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

UNKNOWN_FILE_S = 30.0


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"`` -> ``(2, 3)``; a one-line error naming the expected form otherwise."""
    try:
        k_text, n_text = text.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 1/3") from None
    if not 1 <= k <= n:
        raise ValueError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 1/3")
    return k, n


def assign(files: Iterable[str], weights: Mapping[str, float], n: int) -> dict[str, int]:
    """Each file -> its run (1..n): longest first to the least loaded run (ties: lowest run,
    then file name, so the result is deterministic)."""
    load = [0.0] * n
    out: dict[str, int] = {}
    for f in sorted(set(files), key=lambda f: (-weights.get(f, UNKNOWN_FILE_S), f)):
        run = min(range(n), key=lambda i: (load[i], i))
        load[run] += weights.get(f, UNKNOWN_FILE_S)
        out[f] = run + 1
    return out


def load_weights(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {str(k): float(v) for k, v in data.items()}


def merge(out: Path, inputs: Sequence[Path]) -> dict[str, float]:
    table = load_weights(out)
    for p in inputs:
        table.update(load_weights(p))
    table = {k: round(v, 1) for k, v in sorted(table.items())}
    out.write_text(json.dumps(table, indent=1) + "\n")
    return table


def main(argv: Sequence[str]) -> int:
    if len(argv) < 3 or argv[0] != "merge":
        print("usage: python -m tests.harness.shards merge OUT IN...", file=sys.stderr)
        return 2
    table = merge(Path(argv[1]), [Path(a) for a in argv[2:]])
    print(f"{argv[1]}: {len(table)} files, {sum(table.values()):.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
