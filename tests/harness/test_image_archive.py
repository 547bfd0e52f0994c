"""Single-layer docker-archive images: the layout ``ctr images import`` reads, deterministic."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

from tests.harness.image_archive import ImageFile, ImageSpec, write_docker_archive


def test_archive_has_manifest_config_and_layer_with_matching_digests(tmp_path: Path) -> None:
    binary = tmp_path / "probe"
    binary.write_bytes(b"\x7fELF fake")
    spec = ImageSpec(
        name="localhost/t/probe:1",
        files=(ImageFile("/probe", binary), ImageFile("/alias", link_to="probe")),
        entrypoint=("/probe",),
    )

    image_id = write_docker_archive(spec, tmp_path / "a.tar")
    again = write_docker_archive(spec, tmp_path / "b.tar")

    assert image_id == again
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        (entry,) = manifest
        assert entry["RepoTags"] == ["localhost/t/probe:1"]
        config_bytes = tar.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        layer_bytes = tar.extractfile(entry["Layers"][0]).read()  # type: ignore[union-attr]
    config = json.loads(config_bytes)
    assert image_id == "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]
    assert config["config"]["Entrypoint"] == ["/probe"]
    layer_path = tmp_path / "layer.tar"
    layer_path.write_bytes(layer_bytes)
    with tarfile.open(layer_path) as layer:
        members = {m.name: m for m in layer.getmembers()}
    assert members["probe"].mode == 0o755
    assert members["probe"].uid == 0
    assert members["alias"].issym() and members["alias"].linkname == "probe"
