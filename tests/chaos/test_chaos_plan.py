"""The runners plan a run of their own kinds before they build anything (no control plane)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, cast

import pytest

from tests.chaos.quorum import QUORUM_SCENARIOS, QuorumRunner
from tests.harness.controlplane import ControlPlane


class _Built(Exception):
    """Raised where the world would be built: the run got past its planning."""


class _PlanOnly(QuorumRunner):
    def build_world(self) -> Any:
        raise _Built


def test_the_quorum_runner_plans_every_quorum_kind(tmp_path: Path) -> None:
    out = io.StringIO()
    runner = _PlanOnly(cast(ControlPlane, None), tmp_path, 1, out=out)
    with pytest.raises(_Built):
        runner.run(2 * len(QUORUM_SCENARIOS))
    assert "expected about" in out.getvalue()
