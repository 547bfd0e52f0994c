"""Cardano networks: where the wall-clock slot comes from.

A node's tip slot is only meaningful next to the slot the network is at *now*. Every public
network has a fixed slot schedule since its Shelley hard fork: slot ``shelley_start_slot`` began at
``shelley_start_time`` and one slot lasts ``slot_length_seconds``. Before that lay Byron (20 s
slots), which the schedule below never needs because every network is long past it.

Sources: the networks' published genesis files and node configuration (cardano-world,
iohk-nix ``cardano-lib``):

* mainnet: Shelley began at slot 4,492,800 at 2020-07-29T21:44:51Z.
* preprod: systemStart 2022-06-01T00:00:00Z, four Byron epochs of 21,600 slots of 20 s, so
  Shelley began at slot 86,400 at 2022-06-21T00:00:00Z.
* preview: systemStart 2022-10-25T00:00:00Z, Shelley from epoch 0 (``TestShelleyHardForkAtEpoch``),
  so slot 0 began at 2022-10-25T00:00:00Z.

All three use 1 s slots and 129,600 slots per KES period (36 hours).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Network:
    """The slot schedule of one Cardano network since its Shelley hard fork."""

    name: str
    """Name used in ``CARDANO_NETWORK`` and in messages."""
    shelley_start_slot: int
    """Absolute slot number of the first Shelley slot."""
    shelley_start_time: int
    """Unix time (seconds) at which ``shelley_start_slot`` began."""
    slot_length_seconds: float = 1.0
    """Length of one slot since Shelley."""
    slots_per_kes_period: int = 129_600
    """Slots in one KES period (the genesis ``slotsPerKESPeriod``)."""

    def wallclock_slot(self, unix_time: float) -> int:
        """The slot the network is at, at ``unix_time``."""
        elapsed = unix_time - self.shelley_start_time
        return self.shelley_start_slot + math.floor(elapsed / self.slot_length_seconds)

    def promql_wallclock_slot(self, time_expr: str = "time()") -> str:
        """The same arithmetic as a PromQL scalar expression, evaluated at query time.

        The slot is not rounded down (PromQL's ``floor`` takes vectors, not scalars): the
        fraction of the current slot does not matter for a lag measured in seconds.
        """
        return (
            f"({self.shelley_start_slot} + ({time_expr} - {self.shelley_start_time})"
            f" / {_number(self.slot_length_seconds)})"
        )

    @property
    def kes_period_seconds(self) -> float:
        """Duration of one KES period."""
        return self.slots_per_kes_period * self.slot_length_seconds


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


MAINNET = Network(name="mainnet", shelley_start_slot=4_492_800, shelley_start_time=1_596_059_091)
PREPROD = Network(name="preprod", shelley_start_slot=86_400, shelley_start_time=1_655_769_600)
PREVIEW = Network(name="preview", shelley_start_slot=0, shelley_start_time=1_666_656_000)

BUILT_IN: dict[str, Network] = {n.name: n for n in (MAINNET, PREPROD, PREVIEW)}
