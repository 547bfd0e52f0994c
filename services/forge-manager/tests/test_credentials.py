"""Atomic install (all three or none), removal, and sources that are never modified."""

from __future__ import annotations

import os
import shutil
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


# ---- a Secret volume: the three sources are read as one snapshot --------------------------------
NAMES = ("kes.skey", "vrf.skey", "node.cert")


def _write_version(volume: Path, version: str) -> str:
    """A timestamped directory as the kubelet's atomic writer makes it; returns its name."""
    ts = f"..2026_01_01_00_00_0{version}.123456789"
    (volume / ts).mkdir()
    for name in NAMES:
        (volume / ts / name).write_text(f"{name} {version}\n")
    return ts


def secret_volume(volume: Path, version: str) -> CredentialFiles:
    """A Secret volume: <ts>/ with the keys, ..data -> <ts>, and name -> ..data/name."""
    volume.mkdir()
    ts = _write_version(volume, version)
    (volume / "..data").symlink_to(ts)
    for name in NAMES:
        (volume / name).symlink_to(f"..data/{name}")
    target = volume.parent / "target"
    return CredentialFiles(
        sources=(volume / NAMES[0], volume / NAMES[1], volume / NAMES[2]),
        targets=(target / NAMES[0], target / NAMES[1], target / NAMES[2]),
    )


def update_secret(volume: Path, version: str, *, remove_old: bool) -> None:
    """The kubelet's update: new directory, ..data_tmp -> it, rename over ..data, old removed."""
    old = os.readlink(volume / "..data")
    ts = _write_version(volume, version)
    (volume / "..data_tmp").symlink_to(ts)
    os.rename(volume / "..data_tmp", volume / "..data")
    if remove_old:
        shutil.rmtree(volume / old)


@pytest.mark.parametrize("remove_old", [False, True], ids=["old-kept", "old-removed"])
def test_the_three_sources_are_one_snapshot_across_a_secret_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remove_old: bool
) -> None:
    """The Secret is updated after the first source was read: a new KES key must never be paired
    with an old operational certificate."""
    volume = tmp_path / "secret"
    files = secret_volume(volume, "1")
    original = Path.read_bytes
    updated: list[bool] = []

    def read_bytes(self: Path) -> bytes:
        data = original(self)
        if not updated and self.name in NAMES and volume in self.parents:
            updated.append(True)  # the kubelet swaps the volume right after the first read
            update_secret(volume, "2", remove_old=remove_old)
        return data

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    contents = files.read_sources()
    versions = {c.decode().split()[1] for c in contents}
    assert updated and len(versions) == 1, contents
    monkeypatch.setattr(Path, "read_bytes", original)
    assert files.read_sources()[0] == b"kes.skey 2\n"


def test_a_secret_volume_with_item_paths_and_a_missing_key(tmp_path: Path) -> None:
    """``items: [{key: kes, path: keys/kes.skey}]``: keys -> ..data/keys; errors name the
    configured path."""
    volume = tmp_path / "secret"
    (volume / "..v1" / "keys").mkdir(parents=True)
    for name in NAMES[:2]:
        (volume / "..v1" / "keys" / name).write_text(f"{name} 1\n")
    (volume / "..data").symlink_to("..v1")
    (volume / "keys").symlink_to("..data/keys")
    sources = tuple(volume / "keys" / n for n in NAMES)
    files = CredentialFiles(sources=sources, targets=tuple(tmp_path / "t" / n for n in NAMES))  # type: ignore[arg-type]
    with pytest.raises(SourceError) as exc:
        files.read_sources()
    assert str(exc.value) == (
        f"source operational certificate {sources[2]} (SOURCE_OP_CERT) does not exist"
    )
    (volume / "..v1" / "keys" / NAMES[2]).write_text("node.cert 1\n")
    assert [c.split()[1] for c in files.read_sources()] == [b"1", b"1", b"1"]
