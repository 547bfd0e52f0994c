"""Start-up cost of the Python images (``make images``): each image run with runc as the chart
runs it (UID 10001, read-only root) importing what its entrypoint imports, several times; the
wall time from ``runc run`` to the exit, median and max. Needs root and runc.

Usage: ``python bench/image_start.py [--images DIR] [--runs N]`` (DIR: a ``.images`` directory,
default this tree's). Builds nothing.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import oci

IMPORTS = {
    "ghcr.io/cardano-forge/forge-manager": "import forge_manager.__main__",
    "ghcr.io/cardano-forge/health-endpoint": "import health_endpoint.__main__, gunicorn.app.base",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, default=oci.IMAGES_DIR)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    reason = oci.runc_available()
    if reason:
        print(f"image_start: {reason}", file=sys.stderr)
        return 1
    images = {i.repository: i for i in oci.manifest(args.images)}
    with tempfile.TemporaryDirectory(prefix="image-start-") as tmp:
        for repository, code in IMPORTS.items():
            rootfs = Path(tmp) / repository.rsplit("/", 1)[1]
            oci.unpack(images[repository].archive, rootfs)
            config = oci.image_config(images[repository].archive)
            times = []
            for i in range(args.runs):
                work = Path(tmp) / f"{rootfs.name}-run-{i}"
                work.mkdir()
                c = oci.Container(rootfs, work, config, args=["python", "-c", code], tmpfs=["/tmp"])
                start = time.monotonic()
                status = c.run(timeout=300)
                times.append(time.monotonic() - start)
                if status != 0:
                    print(f"image_start: {repository} exited {status}: {c.output()[-500:]}")
                    return 1
            shutil.rmtree(rootfs)
            print(
                f"{images[repository].name:48} {code:56} median {statistics.median(times):.2f} s"
                f"  max {max(times):.2f} s  ({args.runs} runs)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
