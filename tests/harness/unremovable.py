"""Making files impossible to remove, for real, and undoing it: a removal that fails.

:func:`make_unremovable` takes a directory (nothing in it can be removed, or created) or a file
(that one cannot be removed) and uses what is real on this machine:

* as root, ``chattr +i`` (the immutable attribute: ``unlink`` fails with EPERM even for root,
  whose CAP_DAC_OVERRIDE ignores permissions; ext4, xfs, btrfs, tmpfs since Linux 6.0);
* as root where the file system has no such attribute, a read-only bind mount of the directory
  onto itself (``unlink`` fails with EROFS; a file target falls back to its directory);
* not root, the directory loses its write permission (``unlink`` fails with EACCES; a file
  target falls back to its directory).

It returns the :class:`Unremovable` that undoes it. Every change is also kept in a module-wide
record so that :func:`restore_all` undoes whatever a crashed scenario left behind (an immutable
directory would also make the removal of the test's temporary directory fail).
"""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

_lock = threading.Lock()
_active: list[Unremovable] = []


class UnremovableError(RuntimeError):
    """The change could not be made (one line)."""


@dataclass
class Unremovable:
    path: Path
    how: str
    """``chattr``, ``ro-bind`` or ``chmod``."""
    mode: int = 0

    def restore(self) -> None:
        """Undo (idempotent)."""
        with _lock:
            if self not in _active:
                return
            _active.remove(self)
        if self.how == "chattr":
            _run("chattr", "-i", str(self.path))
        elif self.how == "ro-bind":
            _run("umount", str(self.path))
        else:
            os.chmod(self.path, self.mode)

    def describe(self) -> str:
        return {"chattr": "chattr +i", "ro-bind": "read-only bind mount", "chmod": "chmod a-w"}[
            self.how
        ] + f" on {self.path.name}"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


def make_unremovable(path: Path) -> Unremovable:
    if os.geteuid() == 0:
        if _run("chattr", "+i", str(path)).returncode == 0:
            return _remember(Unremovable(path, "chattr"))
        directory = path if path.is_dir() else path.parent
        bind = _run("mount", "--bind", str(directory), str(directory))
        if bind.returncode == 0:
            ro = _run("mount", "-o", "remount,bind,ro", str(directory))
            if ro.returncode == 0:
                return _remember(Unremovable(directory, "ro-bind"))
            _run("umount", str(directory))
        raise UnremovableError(
            f"cannot make {path} unremovable: neither chattr +i nor a read-only bind mount "
            f"works here ({bind.stderr.strip()})"
        )
    directory = path if path.is_dir() else path.parent
    mode = stat.S_IMODE(directory.stat().st_mode)
    os.chmod(directory, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return _remember(Unremovable(directory, "chmod", mode))


def _remember(change: Unremovable) -> Unremovable:
    with _lock:
        _active.append(change)
    return change


def restore_all() -> int:
    """Undo every change still in place; returns how many there were."""
    with _lock:
        pending = list(_active)
    for change in reversed(pending):
        change.restore()
    return len(pending)
