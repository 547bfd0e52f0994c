"""The split of the integration tests into runs side by side (tests/harness/shards.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import shards


def test_every_file_goes_to_exactly_one_run_and_the_split_is_the_same_in_every_run() -> None:
    files = [f"tests/t{i}.py" for i in range(20)]
    weights = {f: float(i) for i, f in enumerate(files)}
    first = shards.assign(files, weights, 3)
    assert set(first) == set(files) and set(first.values()) == {1, 2, 3}
    assert shards.assign(reversed(files), weights, 3) == first


def test_longest_files_are_spread_first() -> None:
    weights = {"a.py": 100.0, "b.py": 90.0, "c.py": 10.0, "d.py": 5.0}
    runs = shards.assign(weights, weights, 2)
    assert runs["a.py"] != runs["b.py"]
    load = {k: sum(w for f, w in weights.items() if runs[f] == k) for k in (1, 2)}
    assert sorted(load.values()) == [100.0, 105.0]


def test_a_file_not_measured_counts_the_default() -> None:
    runs = shards.assign(["new.py", "old.py"], {"old.py": shards.UNKNOWN_FILE_S + 1}, 2)
    assert runs == {"old.py": 1, "new.py": 2}


@pytest.mark.parametrize("text", ["3", "0/2", "3/2", "a/b", "1/2/3", ""])
def test_a_bad_shard_is_one_line_naming_the_form(text: str) -> None:
    with pytest.raises(ValueError, match="expected K/N"):
        shards.parse_shard(text)


def test_merge_keeps_files_not_run_and_takes_the_new_figures(tmp_path: Path) -> None:
    table = tmp_path / "durations.json"
    table.write_text(json.dumps({"a.py": 10, "b.py": 20}))
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"b.py": 7.25, "c.py": 3}))
    assert shards.merge(table, [run]) == {"a.py": 10.0, "b.py": 7.2, "c.py": 3.0}
    assert json.loads(table.read_text()) == {"a.py": 10.0, "b.py": 7.2, "c.py": 3.0}
