"""Atomic install (all three or none), removal, and sources that are never modified."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from forge_manager.credentials import CredentialError, CredentialFiles, SourceError


@pytest.fixture
def files(tmp_path: Path) -> CredentialFiles:
    src = tmp_path / "secret"
    src.mkdir()
    for name in ("kes.skey", "vrf.skey", "node.cert"):
        (src / name).write_text(f"{name}-content\n")
        (src / name).chmod(0o444)
    dst = tmp_path / "target"
    return CredentialFiles(
        sources=(src / "kes.skey", src / "vrf.skey", src / "node.cert"),
        targets=(dst / "kes.skey", dst / "vrf.skey", dst / "node.cert"),
    )


def test_install_writes_all_three_with_mode_0600(files: CredentialFiles) -> None:
    before = [(p.stat().st_mtime_ns, p.read_bytes()) for p in files.sources]
    assert files.install() is True
    for src, dst in zip(files.sources, files.targets, strict=True):
        assert dst.read_bytes() == src.read_bytes()
        assert dst.stat().st_mode & 0o777 == 0o600
    assert files.all_present()
    assert files.install() is False  # already equal: nothing written
    assert [(p.stat().st_mtime_ns, p.read_bytes()) for p in files.sources] == before
    assert sorted(os.listdir(files.targets[0].parent)) == ["kes.skey", "node.cert", "vrf.skey"]


@pytest.mark.parametrize("problem", ["missing", "empty"])
def test_bad_source_installs_nothing_and_removes_existing(
    files: CredentialFiles, problem: str
) -> None:
    files.install()
    bad = files.sources[2]
    bad.chmod(0o644)
    if problem == "missing":
        bad.unlink()
    else:
        bad.write_text("  \n")
    with pytest.raises(SourceError) as exc:
        files.install()
    assert f"(SOURCE_OP_CERT) {'does not exist' if problem == 'missing' else 'is empty'}" in str(
        exc.value
    )
    assert not files.any_present()


def test_failed_write_leaves_no_file_behind(files: CredentialFiles) -> None:
    target_dir = files.targets[0].parent
    target_dir.mkdir()
    # A directory in the way of the third rename: the first two must not stay installed.
    files.targets[2].mkdir()
    (files.targets[2] / "x").write_text("blocks rename")
    with pytest.raises(CredentialError):
        files.install()
    assert not files.targets[0].exists() and not files.targets[1].exists()
    assert [p.name for p in target_dir.iterdir()] == ["node.cert"]  # only the obstacle


def test_remove_and_stale_temporaries(files: CredentialFiles) -> None:
    files.install()
    stale = files.targets[0].parent / ".kes.skey.abc123"
    stale.write_text("half")
    assert files.remove_stale_temporaries() == 1 and not stale.exists()
    assert files.remove() is True
    assert not files.any_present()
    assert files.remove() is False
