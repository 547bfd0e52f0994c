"""How a measured value reads in an error sentence and in the ``metrics`` document."""

from __future__ import annotations

import enum
import math


class Unit(enum.StrEnum):
    """Unit of a check's value; decides how the value is written."""

    NUMBER = "number"
    PERCENT = "percent"
    SECONDS = "seconds"
    MILLISECONDS = "milliseconds"
    KES_PERIODS = "kes_periods"


def format_duration(seconds: float) -> str:
    """A duration in words: "42 seconds", "5 minutes", "2 hours 10 minutes", "3 days 4 hours"."""
    total = max(0, round(seconds))
    if total < 60:
        return _plural(total, "second")
    minutes = total // 60
    if minutes < 120:
        return _plural(minutes, "minute")
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return _join(_plural(hours, "hour"), _plural(minutes, "minute") if minutes else "")
    days, hours = divmod(hours, 24)
    return _join(_plural(days, "day"), _plural(hours, "hour") if hours else "")


def format_value(value: float, unit: Unit, *, kes_period_seconds: float) -> str:
    """The value as it appears in a sentence."""
    if math.isinf(value):
        return "infinite" if value > 0 else "minus infinite"
    match unit:
        case Unit.PERCENT:
            return f"{value:.1f}%"
        case Unit.SECONDS:
            return format_duration(value)
        case Unit.MILLISECONDS:
            return f"{value:.0f}ms"
        case Unit.KES_PERIODS:
            periods = math.floor(value)
            left = format_duration(max(0, periods) * kes_period_seconds)
            return f"{_plural(periods, 'KES period')} (about {left})"
        case Unit.NUMBER:
            return f"{value:g}"


def document_value(value: float, unit: Unit) -> float | int:
    """The value as it appears in the JSON ``metrics`` object."""
    if unit is Unit.MILLISECONDS or (unit is not Unit.PERCENT and float(value).is_integer()):
        return round(value)
    return round(value, 1 if unit is Unit.PERCENT else 3)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _join(first: str, second: str) -> str:
    return f"{first} {second}" if second else first
