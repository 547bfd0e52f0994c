"""The credential files cardano-node reads: KES key, VRF key, operational certificate.

Install: for each file, a temporary file in the *target* directory is written, fsynced and set to
mode 0600; then the three are renamed into place and the directories fsynced. All three or none:
if anything fails, every temporary file and every target is removed. Sources are only read.

Remove: unlink all three targets (a missing one is fine).

cardano-node treats a missing file as "disable forging" and any other problem (a half-written
file, a permission error) as "keep the previous state", so files must appear complete or not at
all; a rename in one directory is atomic.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

NAMES = ("KES key", "VRF key", "operational certificate")
SOURCE_VARS = ("SOURCE_KES_KEY", "SOURCE_VRF_KEY", "SOURCE_OP_CERT")


class SourceError(Exception):
    """A source file is missing, empty or unreadable; the pod stays out of the election."""


class CredentialError(Exception):
    """Writing or removing target files failed."""


class _SnapshotVanished(Exception):
    """The directory a Secret volume's ``..data`` pointed to was replaced while being read."""


DATA_LINK = "..data"
"""The symlink through which the kubelet's atomic writer swaps a Secret volume's contents."""
SNAPSHOT_ATTEMPTS = 3


def _volume_of(path: Path) -> tuple[Path, Path] | None:
    """``(volume root, path below it)`` when ``path`` is reached through the ``..data`` link of a
    Kubernetes atomic-writer volume: the root holds a ``..data`` symlink, and the first
    component of the path below the root is a symlink to ``..data/<that component>``."""
    for root in path.parents:
        if not (root / DATA_LINK).is_symlink():
            continue
        rel = path.relative_to(root)
        try:
            link = os.readlink(root / rel.parts[0])
        except OSError:
            return None
        return (root, rel) if Path(link) == Path(DATA_LINK, rel.parts[0]) else None
    return None


def _snapshot_paths(sources: Sequence[Path]) -> tuple[Path, ...]:
    """Where to read each source so that the files of one volume come from one version: the
    directory ``..data`` points to, resolved once per volume."""
    resolved: dict[Path, str | None] = {}
    out: list[Path] = []
    for source in sources:
        volume = _volume_of(source)
        if volume is None:
            out.append(source)
            continue
        root, rel = volume
        if root not in resolved:
            try:
                resolved[root] = os.readlink(root / DATA_LINK)
            except OSError:
                resolved[root] = None
        version = resolved[root]
        out.append(source if version is None else root / version / rel)
    return tuple(out)


@dataclass(frozen=True)
class CredentialFiles:
    sources: tuple[Path, Path, Path]
    targets: tuple[Path, Path, Path]

    def read_sources(self) -> tuple[bytes, bytes, bytes]:
        """The three source contents, as one snapshot; :class:`SourceError` names the bad one.

        A Kubernetes Secret volume is updated by swapping its ``..data`` symlink to a new
        timestamped directory (and then deleting the old one). Reading the three files through
        their own links one by one could pair a new KES key with an old certificate, so the
        link is resolved once per volume and all files are read from that one directory; when
        it vanishes mid-read (the old directory deleted), the snapshot is taken again."""
        for attempt in range(SNAPSHOT_ATTEMPTS):
            paths = _snapshot_paths(self.sources)
            try:
                return self._read(paths, last=attempt == SNAPSHOT_ATTEMPTS - 1)
            except _SnapshotVanished:
                continue
        raise AssertionError("unreachable: the last attempt raises SourceError")

    def _read(self, paths: tuple[Path, ...], *, last: bool) -> tuple[bytes, bytes, bytes]:
        out: list[bytes] = []
        for name, var, source, path in zip(NAMES, SOURCE_VARS, self.sources, paths, strict=True):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                if path != source and not last:
                    raise _SnapshotVanished from None
                raise SourceError(f"source {name} {source} ({var}) does not exist") from None
            except OSError as exc:
                raise SourceError(
                    f"source {name} {source} ({var}) is unreadable: {exc.strerror}"
                ) from None
            if not data.strip():
                raise SourceError(f"source {name} {source} ({var}) is empty")
            out.append(data)
        return (out[0], out[1], out[2])

    def any_present(self) -> bool:
        return any(os.path.lexists(p) for p in self.targets)

    def all_present(self) -> bool:
        """All three targets exist and are non-empty (the seed's startup-status rule)."""
        try:
            return all(p.stat().st_size > 0 for p in self.targets)
        except OSError:
            return False

    def _matches(self, contents: tuple[bytes, bytes, bytes]) -> bool:
        try:
            return all(
                p.read_bytes() == c and (p.stat().st_mode & 0o777) == 0o600
                for p, c in zip(self.targets, contents, strict=True)
            )
        except OSError:
            return False

    def install(self) -> bool:
        """Make the targets equal to the sources. Returns True when files were written.

        Raises :class:`SourceError` (targets removed) or :class:`CredentialError` (targets
        removed as far as possible)."""
        try:
            contents = self.read_sources()
        except SourceError:
            self.remove()
            raise
        if self._matches(contents):
            return False
        temps: list[Path] = []
        try:
            for target, data in zip(self.targets, contents, strict=True):
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp_name = tempfile.mkstemp(prefix=temporary_prefix(target), dir=target.parent)
                temps.append(Path(tmp_name))
                try:
                    os.fchmod(fd, 0o600)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
            for written, target in zip(temps, self.targets, strict=True):
                written.replace(target)
            for directory in {t.parent for t in self.targets}:
                _fsync_dir(directory)
        except OSError as exc:
            for leftover in temps:
                with contextlib.suppress(OSError):
                    leftover.unlink()
            with contextlib.suppress(CredentialError):
                self.remove()
            raise CredentialError(f"installing credentials failed: {exc}") from exc
        return True

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files an interrupted install left in the target directories."""
        return remove_temporaries(self.targets)

    def remove(self) -> bool:
        """Unlink all three targets. Returns True when at least one existed."""
        count, errors = remove_targets(self.targets)
        removed = count > 0
        for directory in {t.parent for t in self.targets}:
            with contextlib.suppress(OSError):
                _fsync_dir(directory)
        if errors:
            raise CredentialError("removing credentials failed: " + "; ".join(errors))
        return removed


def temporary_prefix(target: Path) -> str:
    """Name prefix of the temporary files an install writes beside ``target`` (``mkstemp`` adds
    eight random characters): ``.kes.skey.`` for ``kes.skey``. They hold key material until
    renamed; a crash leaves them behind."""
    return f".{target.name}."


def remove_temporaries(targets: Sequence[Path]) -> int:
    """Delete the temporaries an interrupted install left beside ``targets``; returns how many."""
    count = 0
    for target in targets:
        with contextlib.suppress(OSError):
            for stale in target.parent.glob(temporary_prefix(target) + "*"):
                with contextlib.suppress(OSError):
                    stale.unlink()
                    count += 1
    return count


def remove_targets(targets: Sequence[Path]) -> tuple[int, list[str]]:
    """Unlink ``targets`` (a missing one is fine): how many existed, and the failures."""
    removed = 0
    errors: list[str] = []
    for target in targets:
        try:
            target.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            errors.append(f"{target}: {exc.strerror}")
    return removed, errors


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
