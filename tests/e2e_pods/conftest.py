"""The two-region install shared by the real-pod tests of this directory (one per module)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.harness import oci
from tests.harness.node import Node
from tests.harness.pod_pool import COORDINATION, PodPool


def images_available() -> None:
    """Skip without ``make images`` (fail under ``make test``, which builds them first)."""
    if (oci.IMAGES_DIR / "images.json").is_file():
        return
    reason = "no .images/images.json: run 'make images'"
    if os.environ.get("CARDANO_FORGE_REQUIRE_IMAGES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pool(kube_node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodPool]:
    """East and west installed with helm and ready, one node forging. Torn down after the
    module: both releases uninstalled, the namespaces and Prometheus gone."""
    images_available()
    missing = [
        i.name for i in oci.manifest() if i.name not in kube_node.loaded_images
    ]  # images built after the node started (make images in between): load them now
    if missing:
        kube_node.load_images_from(oci.IMAGES_DIR)
    # Its events and collected logs stay with pytest's temporary directories after the run.
    pool = PodPool(node=kube_node, root=tmp_path_factory.mktemp("pod-pool"))
    pool.prepare()
    try:
        pool.install()
        pool.wait_ready(600)  # a first start on a busy host: image unpacking, probes
        pool.wait_one_forger()
        yield pool
    finally:
        pool.stop()
        for name in [r.name for r in pool.regions] + [COORDINATION]:
            kube_node.kubectl("delete", "namespace", name, "--wait=false", check=False)
