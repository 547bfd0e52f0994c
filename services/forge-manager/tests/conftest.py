"""Fixtures shared by the forge-manager unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .fakes import Clock, LeaseStore


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, LeaseStore, Clock]:
    secret = tmp_path / "secret"
    secret.mkdir()
    for name in ("kes.skey", "vrf.skey", "node.cert"):
        (secret / name).write_text(f'{{"type": "{name}", "cborHex": "5820"}}\n')
    return tmp_path, LeaseStore(), Clock()
