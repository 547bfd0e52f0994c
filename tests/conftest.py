"""Fixtures shared by the integration tier.

``control_plane`` starts one real etcd + kube-apiserver per test session (on free loopback
ports, in a temporary directory); ``kube_namespace`` gives each test a namespace of its own;
``prometheus_factory`` starts real Prometheus servers with the scrape configuration a test gives.
``kube_node`` is a real single-node cluster where pods run as containers: a control plane of its
own (free ports) plus ``tests.harness.node.Node``; ``node_namespace`` is a namespace on it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.harness import hoststate
from tests.harness.controlplane import ControlPlane
from tests.harness.node import Node, ownership
from tests.harness.prometheus import prometheus_factory  # noqa: F401  (a fixture for every test)

HOST_MARKERS = "node or images"
"""Tests that change this host (the kubelet-backed node: one per host) or run containers with
runc: ``make integration`` runs them in a pytest run of their own, one at a time, beside the run of
all the others (``-m``, see the Makefile)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    integration = Path(__file__).parent / "integration"
    for item in items:
        if item.path.is_relative_to(integration):
            item.add_marker(pytest.mark.integration)
        if "kube_node" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("node"):
            raise pytest.UsageError(
                f"{item.nodeid} uses the node: mark its module pytest.mark.node, so that "
                "make integration runs it in the run of the tests that change this host"
            )


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


@pytest.fixture(scope="session")
def kube_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A real single-node cluster for the session: its own control plane on free ports (the
    shared ``control_plane`` has no controllers, and its tests rely on that) and a kubelet-backed
    node. Needs root; one node per host. At the end the node is stopped and the host compared
    with the snapshot taken before it started: any setting left changed fails the session."""
    cp = ControlPlane(root=tmp_path_factory.mktemp("nodecluster"))
    cp.start()
    node = Node(control_plane=cp, root=cp.root / "node")
    try:
        node.start()
    except BaseException:
        cp.stop()
        raise
    before = node.host_snapshot
    try:
        yield node
    finally:
        try:
            node.stop()
        finally:
            cp.stop()
        left = hoststate.compare(before, hoststate.take(ownership(node.root)), ownership(node.root))
        if left:
            pytest.fail(f"the test node left {len(left)} host change(s): {'; '.join(left[:5])}")


@pytest.fixture
def node_namespace(kube_node: Node) -> Iterator[str]:
    """A fresh namespace on the node cluster (its default ServiceAccount exists), deleted after."""
    name = f"n-{uuid.uuid4().hex[:10]}"
    kube_node.create_namespace(name)
    yield name
    kube_node.kubectl("delete", "namespace", name, "--wait=false", check=False)
