"""The forge manager and the health endpoint each keep the networks' slot schedules (separate
packages and images, no shared code): the two tables must agree."""

from __future__ import annotations

from forge_manager import networks as fm
from health_endpoint import networks as he


def test_both_services_know_the_same_networks() -> None:
    assert set(fm.BUILT_IN) == set(he.BUILT_IN) == {"mainnet", "preprod", "preview"}
    for name, ours in fm.BUILT_IN.items():
        theirs = he.BUILT_IN[name]
        assert (ours.shelley_start_slot, ours.shelley_start_time, ours.slot_length_seconds) == (
            theirs.shelley_start_slot,
            theirs.shelley_start_time,
            theirs.slot_length_seconds,
        ), name
        for t in (theirs.shelley_start_time, 1_700_000_000.5, 1_760_000_000):
            assert ours.wallclock_slot(t) == theirs.wallclock_slot(t), (name, t)
