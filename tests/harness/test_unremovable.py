"""A removal that fails for real, and its undoing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.unremovable import make_unremovable, restore_all


def _files(tmp_path: Path) -> list[Path]:
    d = tmp_path / "secrets"
    d.mkdir()
    files = [d / n for n in ("kes.skey", "vrf.skey", "node.cert")]
    for f in files:
        f.write_text("key")
    return files


def test_a_directory_made_unremovable_refuses_every_unlink_until_restored(tmp_path: Path) -> None:
    files = _files(tmp_path)
    change = make_unremovable(files[0].parent)
    try:
        for f in files:
            with pytest.raises(OSError):
                f.unlink()
        with pytest.raises(OSError):
            (files[0].parent / ".kes.skey.tmp").write_text("x")
    finally:
        change.restore()
    change.restore()  # idempotent
    for f in files:
        f.unlink()


def test_restore_all_undoes_what_is_left(tmp_path: Path) -> None:
    files = _files(tmp_path)
    make_unremovable(files[1])
    assert restore_all() == 1
    assert restore_all() == 0
    for f in files:
        f.unlink()
