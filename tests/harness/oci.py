"""The built images (``.images/``, made by ``make images``) and a way to run them with runc.

``manifest()`` reads ``.images/images.json``: a list of ``{"name": "<reference with tag>",
"archive": "<file name in .images>", "bytes": N}``, one docker archive per image (the format
``ctr images import`` and ``docker load`` take).

``Container`` runs an image the way a kubelet runs the chart's containers: root filesystem
read-only, a numeric non-root UID/GID, no capabilities, no new privileges, no raised rlimits, its
own PID, mount, IPC and UTS namespaces and its own network namespace (loopback only) unless
``host_network``; ``/dev/shm`` and the given ``tmpfs`` paths are tmpfs, ``binds`` are bind mounts
from the host. runc (Debian's) is used directly: no daemon, state under the test's directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO_ROOT / ".images"
UID = GID = 10001  # the chart's podSecurityContext


@dataclass(frozen=True)
class Image:
    name: str
    """Reference with tag, e.g. ``ghcr.io/cardano-forge/forge-manager:0.1.0``."""
    archive: Path
    bytes: int

    @property
    def repository(self) -> str:
        return self.name.rsplit(":", 1)[0]


def manifest(directory: Path = IMAGES_DIR) -> list[Image]:
    path = directory / "images.json"
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: run 'make images'")
    entries = json.loads(path.read_text())
    return [Image(e["name"], directory / e["archive"], int(e["bytes"])) for e in entries]


def image(repository: str, directory: Path = IMAGES_DIR) -> Image:
    """The image of ``repository`` (reference without tag) in the manifest."""
    found = [i for i in manifest(directory) if i.repository == repository]
    if len(found) != 1:
        raise LookupError(f"{repository}: {len(found)} entries in {directory / 'images.json'}")
    return found[0]


def archive_manifest(archive: Path) -> dict[str, Any]:
    """The docker archive's own manifest entry (Config, RepoTags, Layers)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        entries: list[dict[str, Any]] = json.loads(member.read())
    if len(entries) != 1:
        raise ValueError(f"{archive}: {len(entries)} images in one archive")
    return entries[0]


def image_config(archive: Path) -> dict[str, Any]:
    """The image's configuration (``config``: User, Entrypoint, Env...; ``rootfs``; ``history``)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile(archive_manifest(archive)["Config"])
        assert member is not None
        config: dict[str, Any] = json.loads(member.read())
    return config


def layer_names(archive: Path) -> list[set[str]]:
    """The paths in each layer, bottom first."""
    layers = archive_manifest(archive)["Layers"]
    out = []
    with tarfile.open(archive) as outer:
        for layer in layers:
            member = outer.extractfile(layer)
            assert member is not None
            with tarfile.open(fileobj=member) as inner:
                out.append({n.removeprefix("./").rstrip("/") for n in inner.getnames()})
    return out


def read_files(archive: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """Regular files of the image whose path (no leading ``/``) is ``wanted``; a later layer's
    file replaces an earlier one's."""
    out: dict[str, bytes] = {}
    with tarfile.open(archive) as outer:
        for layer in archive_manifest(archive)["Layers"]:
            member = outer.extractfile(layer)
            assert member is not None
            with tarfile.open(fileobj=member) as inner:
                for entry in inner:
                    name = entry.name.removeprefix("./")
                    if entry.isfile() and wanted(name):
                        data = inner.extractfile(entry)
                        assert data is not None
                        out[name] = data.read()
    return out


def unpack(archive: Path, rootfs: Path) -> None:
    """The image's root filesystem in ``rootfs``: its layers applied in order, with whiteouts."""
    rootfs.mkdir(parents=True)
    layers = archive_manifest(archive)["Layers"]
    with tarfile.open(archive) as outer:
        for layer in layers:
            member = outer.extractfile(layer)
            assert member is not None
            layer_file = rootfs.parent / "layer.tar"
            with layer_file.open("wb") as out:
                shutil.copyfileobj(member, out)
            with tarfile.open(layer_file) as inner:
                names = inner.getnames()
            for name in names:
                path = rootfs / name.removeprefix("./")
                if path.name == ".wh..wh..opq":
                    for child in path.parent.iterdir() if path.parent.is_dir() else []:
                        _remove(child)
                elif path.name.startswith(".wh."):
                    _remove(path.parent / path.name.removeprefix(".wh."))
            subprocess.run(
                ["tar", "-C", str(rootfs), "--numeric-owner", "-xpf", str(layer_file),
                 "--exclude=.wh.*"],
                check=True,
            )  # fmt: skip
            layer_file.unlink()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def runc_available() -> str | None:
    """Why images cannot be run here, or None."""
    if os.geteuid() != 0:
        return "running images needs root (runc without a user namespace)"
    if shutil.which("runc") is None:
        return "no runc: 'apt-get install runc' (make images installs it)"
    return None


@dataclass
class Container:
    """One container of ``rootfs`` (from ``unpack``), run by runc under ``workdir``."""

    rootfs: Path
    workdir: Path
    config: dict[str, Any]
    """The image configuration (``image_config``): entrypoint, environment, working directory."""
    args: list[str] | None = None
    """The command; None: the image's Entrypoint + Cmd."""
    env: dict[str, str] = field(default_factory=dict)
    binds: dict[str, Path] = field(default_factory=dict)
    """Container path -> host path, read-write; ``readonly_binds`` read-only."""
    readonly_binds: dict[str, Path] = field(default_factory=dict)
    tmpfs: list[str] = field(default_factory=list)
    host_network: bool = False
    user: tuple[int, int] = (UID, GID)
    name: str = field(default_factory=lambda: f"cf-test-{uuid.uuid4().hex[:12]}")
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.bundle = self.workdir / self.name
        self.state = self.workdir / "runc-state"
        self.log = self.workdir / f"{self.name}.log"

    def spec(self) -> dict[str, Any]:
        cfg = self.config.get("config", {})
        entry = (cfg.get("Entrypoint") or []) + (cfg.get("Cmd") or [])
        args = self.args if self.args is not None else entry
        env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        env.update(self.env)
        mounts: list[dict[str, Any]] = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "bind", "source": "/sys",
             "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/etc/hosts", "type": "bind", "source": str(self._hosts()),
             "options": ["bind", "ro"]},
        ]  # fmt: skip
        mounts += [
            {"destination": d, "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]}
            for d in self.tmpfs
        ]  # fmt: skip
        mounts += [
            {"destination": d, "type": "bind", "source": str(s), "options": ["rbind", "rw"]}
            for d, s in self.binds.items()
        ]  # fmt: skip
        mounts += [
            {"destination": d, "type": "bind", "source": str(s), "options": ["rbind", "ro"]}
            for d, s in self.readonly_binds.items()
        ]  # fmt: skip
        namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
        if not self.host_network:
            namespaces.append({"type": "network"})
        no_caps: dict[str, list[str]] = {
            k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")
        }
        return {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": {"uid": self.user[0], "gid": self.user[1]},
                "args": args,
                "env": [f"{k}={v}" for k, v in env.items()],
                "cwd": cfg.get("WorkingDir") or "/",
                "capabilities": no_caps,
                "noNewPrivileges": True,
            },
            "root": {"path": str(self.rootfs), "readonly": True},
            "hostname": self.name[:63],
            "mounts": mounts,
            "linux": {
                "namespaces": namespaces,
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"],
            },
        }

    def _hosts(self) -> Path:
        hosts = self.workdir / "hosts"
        if not hosts.exists():
            hosts.write_text("127.0.0.1 localhost\n::1 localhost\n")
        return hosts

    def runc(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        done = subprocess.run(
            ["runc", "--root", str(self.state), *args],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise RuntimeError(f"runc {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def start(self) -> None:
        self.bundle.mkdir(parents=True)
        (self.bundle / "config.json").write_text(json.dumps(self.spec(), indent=1))
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                ["runc", "--root", str(self.state), "run", "--bundle", str(self.bundle), self.name],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def run(self, timeout: float = 60) -> int:
        """Start, wait for the exit, remove; the exit status."""
        self.start()
        try:
            assert self.process is not None
            return self.process.wait(timeout=timeout)
        finally:
            self.remove()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def pid(self) -> int | None:
        """The container's first process as seen from the host, None before it runs."""
        try:
            state = json.loads(self.runc("state", self.name))
        except RuntimeError:
            return None
        pid = int(state.get("pid", 0))
        return pid if pid > 0 and state.get("status") == "running" else None

    def exec(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A command in the running container, as its user and with its (no) capabilities."""
        return subprocess.run(
            ["runc", "--root", str(self.state), "exec", "--user", f"{self.user[0]}:{self.user[1]}",
             self.name, *args],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def kill(self, sig: signal.Signals) -> None:
        self.runc("kill", self.name, str(int(sig)))

    def remove(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.runc("kill", self.name, "KILL", check=False)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.runc("delete", "--force", self.name, check=False)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)
