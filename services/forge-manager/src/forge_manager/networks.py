"""Cardano networks: the slot the chain is at *now*, from the network's genesis parameters.

Every public network has a fixed slot schedule since its Shelley hard fork: slot
``shelley_start_slot`` began at Unix time ``shelley_start_time`` and one slot lasts
``slot_length_seconds`` (Byron's 20 s slots lie before that and are never needed now).

Sources: the networks' published genesis files and node configuration (cardano-world,
iohk-nix ``cardano-lib``), and the slot configurations wallets use (zero time / zero slot):

* mainnet: Shelley began at slot 4,492,800 at 2020-07-29T21:44:51Z (Unix 1596059091).
* preprod: systemStart 2022-06-01T00:00:00Z, four Byron epochs of 21,600 slots of 20 s, so
  Shelley began at slot 86,400 at 2022-06-21T00:00:00Z (Unix 1655769600).
* preview: systemStart 2022-10-25T00:00:00Z (Unix 1666656000), Shelley from slot 0.

The health endpoint keeps the same table in ``health_endpoint.networks`` (the two services are
separate packages and images and share no code); a repository test checks that they agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Network:
    """The slot schedule of one Cardano network since its Shelley hard fork."""

    name: str
    """``CARDANO_NETWORK``'s value (``custom`` for operator-given parameters)."""
    shelley_start_slot: int
    """Absolute slot number of the first Shelley slot."""
    shelley_start_time: int
    """Unix time (seconds) at which ``shelley_start_slot`` began."""
    slot_length_seconds: float = 1.0
    """Length of one slot since Shelley."""

    def wallclock_slot(self, unix_time: float) -> int:
        """The slot the network is at, at ``unix_time``."""
        elapsed = unix_time - self.shelley_start_time
        return self.shelley_start_slot + math.floor(elapsed / self.slot_length_seconds)


MAINNET = Network(name="mainnet", shelley_start_slot=4_492_800, shelley_start_time=1_596_059_091)
PREPROD = Network(name="preprod", shelley_start_slot=86_400, shelley_start_time=1_655_769_600)
PREVIEW = Network(name="preview", shelley_start_slot=0, shelley_start_time=1_666_656_000)

BUILT_IN: dict[str, Network] = {n.name: n for n in (MAINNET, PREPROD, PREVIEW)}
