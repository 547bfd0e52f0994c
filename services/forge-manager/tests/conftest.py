"""Fixtures shared by the forge-manager unit tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
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


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started; killed and reaped afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        p.kill()
        p.wait()
