"""Fixtures shared by the integration tier.

``control_plane`` starts one real etcd + kube-apiserver per test session (on free loopback
ports, in a temporary directory); ``kube_namespace`` gives each test a namespace of its own;
``prometheus_factory`` starts real Prometheus servers with the scrape configuration a test gives.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.harness.controlplane import ControlPlane
from tests.harness.prometheus import prometheus_factory  # noqa: F401  (a fixture for every test)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    integration = Path(__file__).parent / "integration"
    for item in items:
        if item.path.is_relative_to(integration):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(root=tmp_path_factory.mktemp("controlplane"))
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def kube_namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace; after the test the API server is running again (a test may stop it)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    with control_plane.api_client() as api:
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
        )
    yield name
    if not control_plane.is_ready():
        control_plane.start_apiserver()
    with control_plane.api_client() as api:
        # Without a controller manager the namespace stays Terminating; its objects are
        # unreachable to other tests, which use their own namespaces.
        client.CoreV1Api(api).delete_namespace(name)
