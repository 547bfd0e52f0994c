"""Wall-clock slots of the built-in networks, and how values read in sentences."""

from __future__ import annotations

import datetime as dt

import pytest
from health_endpoint.networks import BUILT_IN, MAINNET, PREPROD, PREVIEW, Network
from health_endpoint.units import Unit, document_value, format_duration, format_value


def unix(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(
    ("network", "when", "slot"),
    [
        (MAINNET, "2020-07-29T21:44:51+00:00", 4_492_800),  # Shelley hard fork (epoch 208)
        (MAINNET, "2020-08-03T21:44:51+00:00", 4_492_800 + 432_000),  # epoch 209, 5 days later
        (PREPROD, "2022-06-21T00:00:00+00:00", 86_400),  # after 4 Byron epochs of 5 days
        (PREPROD, "2022-06-01T00:00:00+00:00", 86_400 - 20 * 86_400),  # (Byron used 20 s slots)
        (PREVIEW, "2022-10-25T00:00:00+00:00", 0),
        (PREVIEW, "2022-10-26T00:00:00+00:00", 86_400),  # preview epochs are one day
    ],
)
def test_wallclock_slot(network: Network, when: str, slot: int) -> None:
    assert network.wallclock_slot(unix(when)) == slot


def test_wallclock_slot_rounds_down_within_a_slot() -> None:
    assert MAINNET.wallclock_slot(1_596_059_091.999) == 4_492_800
    half = Network("half", shelley_start_slot=10, shelley_start_time=1000, slot_length_seconds=0.5)
    assert half.wallclock_slot(1001.2) == 12


def test_promql_expression_matches_the_python_arithmetic() -> None:
    assert PREPROD.promql_wallclock_slot() == "(86400 + (time() - 1655769600) / 1)"
    assert PREPROD.promql_wallclock_slot("1655769700") == "(86400 + (1655769700 - 1655769600) / 1)"


def test_built_in_networks() -> None:
    assert set(BUILT_IN) == {"mainnet", "preprod", "preview"}
    assert all(n.kes_period_seconds == 36 * 3600 for n in BUILT_IN.values())


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0, "0 seconds"),
        (1, "1 second"),
        (59.4, "59 seconds"),
        (60, "1 minute"),
        (300, "5 minutes"),
        (359, "5 minutes"),
        (7199, "119 minutes"),
        (7200, "2 hours"),
        (7800, "2 hours 10 minutes"),
        (48 * 3600, "2 days"),
        (10.5 * 86400, "10 days 12 hours"),
        (-5, "0 seconds"),
    ],
)
def test_format_duration(seconds: float, words: str) -> None:
    assert format_duration(seconds) == words


def test_format_value_by_unit() -> None:
    kes = 129_600.0
    assert format_value(45.25, Unit.PERCENT, kes_period_seconds=kes) == "45.2%"
    assert format_value(250.4, Unit.MILLISECONDS, kes_period_seconds=kes) == "250ms"
    assert format_value(300, Unit.SECONDS, kes_period_seconds=kes) == "5 minutes"
    assert format_value(3, Unit.NUMBER, kes_period_seconds=kes) == "3"
    assert format_value(5, Unit.KES_PERIODS, kes_period_seconds=kes) == (
        "5 KES periods (about 7 days 12 hours)"
    )
    assert format_value(1, Unit.KES_PERIODS, kes_period_seconds=kes) == (
        "1 KES period (about 36 hours)"
    )
    assert format_value(float("inf"), Unit.PERCENT, kes_period_seconds=kes) == "infinite"


def test_document_values_are_rounded_for_json() -> None:
    assert document_value(45.234, Unit.PERCENT) == 45.2
    assert document_value(12.6, Unit.MILLISECONDS) == 13
    assert isinstance(document_value(12.6, Unit.MILLISECONDS), int)
    assert document_value(40.0, Unit.NUMBER) == 40
    assert document_value(0.1234, Unit.NUMBER) == 0.123
