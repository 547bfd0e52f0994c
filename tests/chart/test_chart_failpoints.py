"""The forge manager's failpoints (a fault-injection test hook) are never switched on by the chart.

``forge_manager.failpoints`` is inert unless ``FORGE_MANAGER_FAILPOINTS`` names a file. The chart
must never set it: not in a template, not in a default value, in no rendering of the values
matrix of ``test_chart.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from forge_manager import failpoints

from tests.chart.test_chart import CHART, MATRIX, render

pytestmark = pytest.mark.chart


def test_no_chart_file_names_the_failpoint_variable() -> None:
    named = [
        str(p.relative_to(CHART))
        for p in CHART.rglob("*")
        if p.is_file() and failpoints.ENV.encode() in p.read_bytes()
    ]
    assert named == []


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_no_rendered_container_sets_failpoints(case: str, tmp_path: Path) -> None:
    values, apis = MATRIX[case]
    docs = render(values, tmp_path, api_versions=apis)
    assert docs
    assert failpoints.ENV not in "".join(str(d) for d in docs)
