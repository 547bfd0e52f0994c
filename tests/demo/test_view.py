"""The demo's live view: one row per pod and a verdict on the number of forgers."""

from __future__ import annotations

import re

from demo.view import PodRow, render


def row(pod: str, *, forging: bool = False, holder: bool = False, alive: bool = True) -> PodRow:
    return PodRow(
        region="east",
        pod=pod,
        local_leader=forging,
        pool_holder=holder,
        forging=forging,
        health_failures=0.0 if forging else None,
        last_change=3.2 if forging else None,
        alive=alive,
    )


def plain(text: str) -> list[str]:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).splitlines()


def test_rows_show_the_pool_lease_holder_and_one_forger() -> None:
    lines = plain(render([row("east-0", forging=True, holder=True), row("east-1")], ["note"]))
    east0 = next(line for line in lines if line.startswith("east     east-0"))
    assert east0.split() == [
        "east",
        "east-0",
        "yes",
        "holder",
        "FORGING",
        "healthy",
        "3",
        "s",
        "ago",
    ]
    assert "east-1 (down)" not in "\n".join(lines)
    assert "pool: one forger" in lines
    assert lines[-1] == "note"


def test_two_forgers_are_called_out_and_dead_pods_marked() -> None:
    lines = plain(
        render([row("a", forging=True), row("b", forging=True), row("c", alive=False)], [])
    )
    assert "pool: 2 FORGERS" in lines
    assert any("c (down)" in line for line in lines)
