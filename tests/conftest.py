"""Fixtures shared by the integration tier.

``control_plane`` starts one real etcd + kube-apiserver per test session (on free loopback
ports, in a temporary directory); ``kube_namespace`` gives each test a namespace of its own;
``prometheus_factory`` starts real Prometheus servers with the scrape configuration a test gives.
``kube_node`` is a real single-node cluster where pods run as containers: a control plane of its
own (free ports) plus ``tests.harness.node.Node``; ``node_namespace`` is a namespace on it.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.harness import hoststate, shards
from tests.harness.controlplane import ControlPlane
from tests.harness.node import Node, ownership
from tests.harness.prometheus import prometheus_factory  # noqa: F401  (a fixture for every test)

HOST_MARKERS = "node or images"
"""Tests that change this host (the kubelet-backed node: one per host) or run containers with
runc: ``make integration`` runs them in a pytest run of their own, one at a time, beside the run of
all the others (``-m``, see the Makefile)."""


DURATIONS_TABLE = Path(__file__).parent / "durations.json"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cardano-forge")
    group.addoption(
        "--shard",
        metavar="K/N",
        help="run only the K-th of N runs that split the selected tests by whole files, balanced "
        "by the seconds in tests/durations.json (make integration runs them side by side)",
    )
    group.addoption(
        "--record-durations",
        metavar="PATH",
        help="write the seconds each test file took (set-up, call, tear-down) to PATH as JSON",
    )


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Iterator[None]:
    """Before the other hooks: markers, and the node rule. After them (``-m``/``-k`` applied):
    only this run's files when ``--shard`` is given."""
    integration = Path(__file__).parent / "integration"
    for item in items:
        if item.path.is_relative_to(integration):
            item.add_marker(pytest.mark.integration)
        if "kube_node" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("node"):
            raise pytest.UsageError(
                f"{item.nodeid} uses the node: mark its module pytest.mark.node, so that "
                "make integration runs it in the run of the tests that change this host"
            )
    yield
    text = config.getoption("--shard")
    if not text:
        return
    try:
        k, n = shards.parse_shard(text)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    runs = shards.assign(
        (item.nodeid.split("::")[0] for item in items), shards.load_weights(DURATIONS_TABLE), n
    )
    keep = [item for item in items if runs[item.nodeid.split("::")[0]] == k]
    drop = [item for item in items if runs[item.nodeid.split("::")[0]] != k]
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep


_file_seconds: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _file_seconds[report.nodeid.split("::")[0]] += report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--record-durations")
    if path and _file_seconds:
        Path(path).write_text(json.dumps(dict(sorted(_file_seconds.items())), indent=1) + "\n")


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
