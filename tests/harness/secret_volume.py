"""A Secret volume as the kubelet lays it out, and its atomic update.

The kubelet's atomic writer (``pkg/volume/util/atomic_writer.go``) keeps each version of a
Secret's files in a hidden timestamped directory, points the symlink ``..data`` at the current
one, and gives each key a symlink ``<key> -> ..data/<key>``. An update writes the new version
into a new directory, points a temporary link ``..data_tmp`` at it, renames that over ``..data``
(one atomic step: every key changes at once for a reader that resolves ``..data`` once) and then
removes the old directory. A reader that opens the keys one by one through their own links can
still see two versions across the swap.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

DATA = "..data"


class SecretVolume:
    def __init__(self, root: Path, files: Mapping[str, bytes], *, mode: int = 0o440) -> None:
        self.root = root
        self.mode = mode
        root.mkdir(parents=True, exist_ok=True)
        self.versions = 0
        self.update(files)
        for key in files:
            (root / key).symlink_to(Path(DATA) / key)

    def _new_version_dir(self) -> Path:
        self.versions += 1
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
        return self.root / f"..{stamp}.{os.getpid()}{self.versions:04d}"

    def update(self, files: Mapping[str, bytes]) -> None:
        """Swap in a new version of every key at once, as the kubelet does."""
        new = self._new_version_dir()
        new.mkdir(mode=0o755)
        for key, data in files.items():
            path = new / key
            path.write_bytes(data)
            path.chmod(self.mode)
        link = self.root / DATA
        old = os.readlink(link) if link.is_symlink() else None
        tmp = self.root / f"{DATA}_tmp"
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(new.name)
        os.rename(tmp, link)
        if old is not None:
            shutil.rmtree(self.root / old)

    def current(self) -> Path:
        return self.root / os.readlink(self.root / DATA)

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()
