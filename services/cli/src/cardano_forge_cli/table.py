"""Plain-text tables, kubectl style: upper-case headers, columns padded with spaces."""

from __future__ import annotations

from collections.abc import Sequence


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, gap: int = 3) -> str:
    """A table with one header line; every cell is one line (newlines become spaces)."""
    cells = [[_clean(h).upper() for h in headers]] + [[_clean(c) for c in row] for row in rows]
    for i, row in enumerate(cells):
        if len(row) != len(headers):
            raise ValueError(f"row {i} has {len(row)} cells for {len(headers)} columns")
    widths = [max(len(row[col]) for row in cells) for col in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append((" " * gap).join(padded).rstrip())
    return "\n".join(lines)


def _clean(cell: str) -> str:
    return " ".join(str(cell).split())


def yes_no(value: bool | None, *, yes: str = "yes", no: str = "no") -> str:
    """``yes``/``no``, or ``unknown`` when the fact could not be read."""
    if value is None:
        return "unknown"
    return yes if value else no
