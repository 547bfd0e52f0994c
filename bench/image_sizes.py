"""Sizes of the built images (``make images``): each archive in ``.images/`` and, per image, the
base layer and the layers its Dockerfile adds, uncompressed, plus the biggest directories those
layers add.

Usage: ``python bench/image_sizes.py``. Reads ``.images/images.json``; builds nothing.
"""

from __future__ import annotations

import sys
import tarfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness.oci import archive_manifest, manifest

MIB = 1024 * 1024


def main() -> int:
    try:
        images = manifest()
    except FileNotFoundError as exc:
        print(f"image_sizes: {exc}", file=sys.stderr)
        return 1
    print(f"{'image':52} {'archive':>9} {'base':>8} {'added':>8}  biggest additions")
    for image in images:
        sizes: list[int] = []
        added: Counter[str] = Counter()
        with tarfile.open(image.archive) as outer:
            for i, layer in enumerate(archive_manifest(image.archive)["Layers"]):
                member = outer.extractfile(layer)
                assert member is not None
                with tarfile.open(fileobj=member) as inner:
                    total = 0
                    for entry in inner:
                        total += entry.size
                        parts = entry.name.removeprefix("./").split("/")
                        if i > 0 and entry.isfile():
                            added["/".join(parts[: min(len(parts) - 1, 6)])] += entry.size
                    sizes.append(total)
        biggest = ", ".join(f"{d or '/'} {n / MIB:.0f}" for d, n in added.most_common(3))
        print(
            f"{image.name:52} {image.bytes / MIB:8.0f}M {sizes[0] / MIB:7.0f}M "
            f"{sum(sizes[1:]) / MIB:7.0f}M  {biggest} (MiB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
