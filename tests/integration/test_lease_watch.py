"""watch.py against the real API server: events, bookmarks, resumption, an API server restart,
and the chart's RBAC (list and watch by name)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from forge_manager.clock import now
from forge_manager.lease import LeaseClient
from forge_manager.watch import (
    LeaseObservation,
    LeaseWatchSource,
    WatchedLease,
    compare_resource_versions,
    watch_api_client,
)
from kubernetes import client

from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.integration

NAME = "cardano-node-leader"
WAIT = 60.0


def until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def writer(api: Any, namespace: str, name: str = NAME, identity: str = "bp-0") -> LeaseClient:
    return LeaseClient(api, namespace=namespace, name=name, identity=identity, lease_duration=15,
                       request_timeout=2.0)  # fmt: skip


@pytest.fixture
def follow(control_plane: ControlPlane) -> Iterator[Callable[..., WatchedLease]]:
    started: list[WatchedLease] = []

    def start(namespace: str, *, api: Any = None, retry_period: float = 1.0,
              watch_seconds: tuple[int, int] | None = None) -> WatchedLease:  # fmt: skip
        source = LeaseWatchSource(watch_api_client(api or control_plane.api_client()),
                                  namespace=namespace, name=NAME, request_timeout=2.0)  # fmt: skip
        watched = WatchedLease(source, NAME, what="test", clock=now, retry_period=retry_period)
        if watch_seconds is not None:
            watched.watcher._watch_seconds = watch_seconds
        started.append(watched.start())
        until(lambda: watched.observed() is not None, "the watch to be live")
        return watched

    yield start
    for w in started:
        w.stop()


def seen_version(watched: WatchedLease, version: str) -> LeaseObservation:
    until(lambda: (o := watched.observed()) is not None and o.version == version,
          f"the watch to show version {version}")  # fmt: skip
    observed = watched.observed()
    assert observed is not None
    return observed


def test_a_watch_shows_every_change_of_its_lease_after_it_was_written_and_nothing_else(
    control_plane: ControlPlane, kube_namespace: str, follow: Callable[..., WatchedLease]
) -> None:
    watched = follow(kube_namespace)
    missing = watched.observed()
    assert missing is not None and missing.record is None and missing.version
    changes: list[tuple[str | None, str | None]] = []
    watched.on_change(lambda b, a: changes.append((b and b.resource_version,
                                                   a and a.resource_version)))  # fmt: skip
    with control_plane.api_client() as api:
        lease, other = writer(api, kube_namespace), writer(api, kube_namespace, "unrelated")
        sent = now()
        rec = lease.acquire(None, lease.new_renew_stamp())
        first = seen_version(watched, rec.resource_version)
        assert first.record is not None and first.record.holder == "bp-0"
        assert first.seen_at >= sent  # late, never early
        versions = [rec.resource_version]
        for _ in range(3):
            sent = now()
            rec = lease.renew(rec, lease.new_renew_stamp())
            other.acquire(other.read(), other.new_renew_stamp())  # another Lease: not shown
            observed = seen_version(watched, rec.resource_version)
            assert observed.seen_at >= sent
            assert observed.record is not None and observed.record.renew_time == rec.renew_time
            versions.append(rec.resource_version)
        assert set(watched.watcher.view().objects) == {NAME}
        client.CoordinationV1Api(api).delete_namespaced_lease(NAME, kube_namespace)
    until(lambda: (o := watched.observed()) is not None and o.record is None, "the deletion")
    gone = watched.observed()
    assert gone is not None and compare_resource_versions(gone.version, versions[-1]) == 1
    assert changes == [
        (None, versions[0]),
        *itertools.pairwise(versions),
        (versions[-1], None),
    ]
    assert (watched.watcher.lists, watched.watcher.watches) == (1, 1)  # one LIST, one stream


def test_bookmarks_move_the_position_and_a_resumed_watch_misses_nothing(
    control_plane: ControlPlane, kube_namespace: str, follow: Callable[..., WatchedLease]
) -> None:
    # A watch of 3 s: the API server sends a bookmark shortly before it ends (and about once a
    # minute otherwise); the stream is then resumed from the bookmark's version.
    watched = follow(kube_namespace, watch_seconds=(3, 3))
    with control_plane.api_client() as api:
        lease, other = writer(api, kube_namespace), writer(api, kube_namespace, "unrelated")
        rec = lease.acquire(None, lease.new_renew_stamp())
        seen_version(watched, rec.resource_version)
        moved = other.acquire(None, other.new_renew_stamp())  # only a bookmark can tell
        until(lambda: compare_resource_versions(watched.watcher.view().position,
                                                moved.resource_version) in (0, 1),
              "a bookmark past the unrelated write")  # fmt: skip
        until(lambda: watched.watcher.watches >= 3, "two resumptions")
        sent = now()
        rec = lease.renew(rec, lease.new_renew_stamp())
        assert seen_version(watched, rec.resource_version).seen_at >= sent
    assert watched.watcher.lists == 1  # resumed from the version, never listed again
    assert watched.observed() is not None  # live throughout


def test_an_api_server_restart_breaks_the_watch_and_the_change_made_meanwhile_is_seen_after(
    control_plane: ControlPlane, kube_namespace: str, follow: Callable[..., WatchedLease]
) -> None:
    """While the API server is away the watch is not live (a follower reads every cycle, and
    those reads fail: it acquires nothing); a change made after the restart, before the watch
    is back, is shown once it is, timed from when it was seen."""
    watched = follow(kube_namespace, retry_period=3.0)
    with control_plane.api_client() as api:
        lease = writer(api, kube_namespace)
        rec = lease.acquire(None, lease.new_renew_stamp())
        seen_version(watched, rec.resource_version)
    control_plane.stop_apiserver()
    try:
        until(lambda: watched.observed() is None, "the watch to break")
        assert watched.watcher.view().error  # says why
    finally:
        control_plane.start_apiserver()
    with control_plane.api_client() as api:
        lease = writer(api, kube_namespace)
        current = lease.read()
        assert current is not None
        sent = now()
        rec = lease.renew(current, lease.new_renew_stamp())
    observed = seen_version(watched, rec.resource_version)
    assert observed.seen_at >= sent
    assert observed.record is not None and observed.record.renew_time == rec.renew_time


def test_the_charts_role_lets_a_pod_watch_its_lease_by_name(
    control_plane: ControlPlane,
    kube_namespace: str,
    tmp_path: Path,
    follow: Callable[..., WatchedLease],
) -> None:
    """The rules of ``charts/cardano-forge/templates/rbac.yaml`` (``tests/chart`` checks the
    chart renders exactly these): list and watch are granted by name, which the API server
    authorises for a list or watch with the field selector ``metadata.name``."""
    rules = [
        client.V1PolicyRule(api_groups=["coordination.k8s.io"], resources=["leases"],
                            verbs=["create"]),
        client.V1PolicyRule(api_groups=["coordination.k8s.io"], resources=["leases"],
                            resource_names=[NAME], verbs=["get", "list", "watch", "update"]),
    ]  # fmt: skip
    sa = "forge-manager"
    with control_plane.api_client() as api:
        core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
        core.create_namespaced_service_account(
            kube_namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=sa))
        )
        rbac.create_namespaced_role(
            kube_namespace, client.V1Role(metadata=client.V1ObjectMeta(name=sa), rules=rules)
        )
        rbac.create_namespaced_role_binding(kube_namespace, client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name=sa),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role",
                                      name=sa),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name=sa,
                                           namespace=kube_namespace)],
        ))  # fmt: skip
        token = core.create_namespaced_service_account_token(
            sa, kube_namespace, client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)),
        ).status.token  # fmt: skip
    kubeconfig = control_plane.token_kubeconfig(tmp_path / "sa.kubeconfig", token, kube_namespace)
    pod_api = control_plane.api_client(kubeconfig)
    watched = follow(kube_namespace, api=pod_api)
    lease = writer(pod_api, kube_namespace)
    rec = lease.acquire(None, lease.new_renew_stamp())
    seen_version(watched, rec.resource_version)
