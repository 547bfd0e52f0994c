"""Durations on the command line (``--for 2h``, ``--timeout 90s``) and in tables (``3m12s``)."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
EXAMPLES = "e.g. 30s, 15m, 2h, 1h30m or 1d"


class DurationError(ValueError):
    """One line naming the bad text and the accepted forms."""


def parse_duration(text: str, *, what: str = "duration", maximum: float | None = None) -> float:
    """Seconds from ``2h``, ``1h30m``, ``45s``, ``500ms``, ``1d`` or a plain number of seconds.

    Zero, negative, non-finite and unit-less garbage are refused; so is anything above
    ``maximum`` seconds when given."""
    raw = text.strip().lower()
    bad = DurationError(f"{what} {text!r} is not a duration: use a number with a unit, {EXAMPLES}")
    if not raw:
        raise bad
    try:
        seconds = float(raw)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _PART.finditer(raw):
            if match.start() != pos:
                raise bad from None
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(raw):
            raise bad from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise DurationError(f"{what} {text!r} must be greater than zero, {EXAMPLES}")
    if maximum is not None and seconds > maximum:
        raise DurationError(
            f"{what} {text!r} is longer than the allowed {format_duration(maximum)}"
        )
    return seconds


def format_duration(seconds: float | None) -> str:
    """``3m12s``, ``2h``, ``1d4h``, ``850ms``; ``-`` for None. Negative values read as 0."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{max(seconds, 0.0) * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    total = round(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
        if len(parts) == 2:
            break
    return "".join(parts)
