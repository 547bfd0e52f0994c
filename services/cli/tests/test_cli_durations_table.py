from __future__ import annotations

import pytest
from cardano_forge_cli.durations import DurationError, format_duration, parse_duration
from cardano_forge_cli.table import render_table, yes_no


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2h", 7200),
        ("90m", 5400),
        ("1h30m", 5400),
        ("45s", 45),
        ("500ms", 0.5),
        ("1d", 86400),
        ("1d12h", 129600),
        (" 2H ", 7200),
        ("30", 30),
        ("1.5h", 5400),
    ],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "2x", "h", "2h-", "-5m", "0", "0s", "1h 30m", "inf", "nan", "2hh"]
)
def test_bad_durations_say_what_is_accepted(text: str) -> None:
    with pytest.raises(DurationError, match=r"e\.g\. 30s, 15m, 2h"):
        parse_duration(text, what="--for")


def test_duration_maximum() -> None:
    with pytest.raises(DurationError, match="longer than the allowed 30d"):
        parse_duration("31d", what="--for", maximum=30 * 86400)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.25, "250ms"),
        (-3, "0ms"),
        (5.04, "5.0s"),
        (42, "42s"),
        (192, "3m12s"),
        (7200, "2h"),
        (93784, "1d2h"),
        (3600 * 25 + 61, "1d1h"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_table_pads_columns_and_uppercases_headers() -> None:
    out = render_table(["region", "state"], [["east", "Priority-based"], ["west-long", "Disabled"]])
    assert out.splitlines() == [
        "REGION      STATE",
        "east        Priority-based",
        "west-long   Disabled",
    ]


def test_table_cells_stay_on_one_line_and_rows_must_fit() -> None:
    assert render_table(["a"], [["x\ny"]]).splitlines()[1] == "x y"
    with pytest.raises(ValueError, match="row 1 has 1 cells for 2 columns"):
        render_table(["a", "b"], [["x"]])


def test_yes_no_unknown() -> None:
    assert (yes_no(True), yes_no(False), yes_no(None)) == ("yes", "no", "unknown")
