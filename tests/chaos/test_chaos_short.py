"""A short seeded fault-injection run, part of ``make test``; the full run is ``make chaos``.

Six scenarios with the fastest safe timings, on the session's real control plane: two of the
kinds that most directly threaten the one property from the start (a frozen manager, a region cut
off from the coordination API) and four of those issue 11 added (a deleted Lease, a write applied
whose answer is lost, a manager frozen by a failpoint between its decision and its action, a
credential removal that fails for real). No two nodes may ever forge at once, and every scenario
must end with one steady forger.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.chaos.run import Runner
from tests.harness.controlplane import ControlPlane

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.chaos,
    pytest.mark.timeout(900),  # bounded, but slower than most on a busy 2-core host
]

SEED = 20240611
KINDS = [
    "freeze_manager",
    "partition",
    "lease_deleted",
    "answer_lost",
    "frozen_decision",
    "removal_fails",
]


def test_short_seeded_chaos_run(control_plane: ControlPlane, tmp_path: Path) -> None:
    out = io.StringIO()
    report = Runner(control_plane, tmp_path, SEED, out=out).run(len(KINDS), KINDS)
    text = out.getvalue() + "\n" + report.summary()
    assert sorted(o.kind for o in report.outcomes) == sorted(KINDS), text
    assert report.total_overlap_s == 0.0, text
    assert all(o.overlap_s == 0.0 for o in report.outcomes), text
    assert not report.failures, text
