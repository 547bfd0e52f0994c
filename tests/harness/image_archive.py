"""Single-layer container images written as ``docker-archive`` tarballs, daemonless.

The test node needs two tiny images of its own: the pod sandbox's ``pause`` and the smoke tests'
``nodeprobe``, each one static binary ``FROM scratch``. Writing the archive directly (a layer tar,
an image config and ``manifest.json``, as ``docker save`` does) needs no image builder, no storage
under ``/var/lib/containers`` and no network; ``ctr images import`` loads it into the node's
containerd. The output is deterministic: the same files give the same image ID.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ImageFile:
    """A regular file (``source``) or a symlink (``link_to``) at ``path`` in the image."""

    path: str
    source: Path | None = None
    link_to: str | None = None
    mode: int = 0o755


@dataclass(frozen=True)
class ImageSpec:
    name: str  # e.g. localhost/cardano-forge-test/pause:0123abcd
    files: tuple[ImageFile, ...]
    entrypoint: tuple[str, ...]
    env: tuple[str, ...] = field(default=("PATH=/",))


def _tar_bytes(files: tuple[ImageFile, ...]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for f in sorted(files, key=lambda f: f.path):
            info = tarfile.TarInfo(f.path.lstrip("/"))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if f.link_to is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = f.link_to
                info.mode = 0o777
                tar.addfile(info)
            elif f.source is not None:
                data = f.source.read_bytes()
                info.size = len(data)
                info.mode = f.mode
                tar.addfile(info, io.BytesIO(data))
            else:
                raise ValueError(f"image file {f.path} has neither a source nor a link target")
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_docker_archive(spec: ImageSpec, out: Path) -> str:
    """Write ``spec`` as a docker-archive to ``out``; return the image ID (config digest)."""
    layer = _tar_bytes(spec.files)
    layer_sha = _sha(layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": list(spec.entrypoint), "Env": list(spec.env)},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_sha}"]},
        "history": [{"created_by": "cardano-forge tests/harness/image_archive.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_sha = _sha(config_bytes)
    manifest = [
        {
            "Config": f"{config_sha}.json",
            "RepoTags": [spec.name],
            "Layers": [f"{layer_sha}/layer.tar"],
        }
    ]
    members = {
        f"{layer_sha}/layer.tar": layer,
        f"{config_sha}.json": config_bytes,
        "manifest.json": json.dumps(manifest).encode(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)
    return f"sha256:{config_sha}"


def content_tag(*paths: Path) -> str:
    """A short tag naming the content of ``paths`` (a changed binary gets a new image name)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:12]
