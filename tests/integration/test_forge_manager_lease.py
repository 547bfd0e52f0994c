"""lease.LeaseClient against the real API: optimistic concurrency, release, bounded calls."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from forge_manager.lease import LeaseClient, LeaseError, LeaseLost, api_client
from kubernetes import client

from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.integration


def make(cp: ControlPlane, namespace: str, identity: str, api: object) -> LeaseClient:
    return LeaseClient(api, namespace=namespace, name="cardano-node-leader", identity=identity,
                       lease_duration=15, request_timeout=1.0)  # fmt: skip


def test_acquire_renew_conflict_release(control_plane: ControlPlane, kube_namespace: str) -> None:
    with control_plane.api_client() as api:
        a = make(control_plane, kube_namespace, "bp-0", api)
        b = make(control_plane, kube_namespace, "bp-1", api)
        assert a.read() is None
        created = a.acquire(None, a.new_renew_stamp())
        assert created.holder == "bp-0" and created.duration_seconds == 15
        with pytest.raises(LeaseLost):
            b.acquire(None, b.new_renew_stamp())  # already exists
        stamp = a.new_renew_stamp()
        renewed = a.renew(created, stamp)
        assert renewed.resource_version != created.resource_version
        assert renewed.renew_time == stamp  # recognisable as our own write
        with pytest.raises(LeaseLost):
            b.acquire(created, b.new_renew_stamp())  # stale resourceVersion: 409
        with pytest.raises(LeaseLost):
            a.renew(created, a.new_renew_stamp())
        released = a.release(renewed)
        assert released.holder is None
        assert released.released_by == "bp-0"  # a release names its holder
        taken = b.acquire(released, b.new_renew_stamp())
        assert taken.holder == "bp-1" and taken.transitions == 1
        assert taken.released_by is None  # a held record carries no release marker
        current = b.read()
        assert current is not None and current.resource_version == taken.resource_version


def test_a_write_to_a_deleted_lease_is_lost(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    with control_plane.api_client() as api:
        a = make(control_plane, kube_namespace, "bp-0", api)
        rec = a.acquire(None, a.new_renew_stamp())
        client.CoordinationV1Api(api).delete_namespaced_lease(a.name, kube_namespace)
        # Leases allow create-on-update: without the UID precondition this renew would create
        # the Lease again and the old leader would forge on.
        with pytest.raises(LeaseLost, match="was deleted since it was read"):
            a.renew(rec, a.new_renew_stamp())
        assert a.read() is None
        # Deleted and created again by someone else: a write against the old object is lost too.
        rec = a.acquire(None, a.new_renew_stamp())
        client.CoordinationV1Api(api).delete_namespaced_lease(a.name, kube_namespace)
        b = make(control_plane, kube_namespace, "bp-1", api)
        b.acquire(None, b.new_renew_stamp())
        with pytest.raises(LeaseLost):
            a.renew(rec, a.new_renew_stamp())
        held = a.read()
        assert held is not None and held.holder == "bp-1"


def test_calls_fail_while_the_api_is_down(control_plane: ControlPlane, kube_namespace: str) -> None:
    with control_plane.api_client() as api:
        a = make(control_plane, kube_namespace, "bp-0", api)
        rec = a.acquire(None, a.new_renew_stamp())
        control_plane.stop_apiserver()
        try:
            with pytest.raises(LeaseError):
                a.renew(rec, a.new_renew_stamp())
            with pytest.raises(LeaseError):
                a.read()
        finally:
            control_plane.start_apiserver()


def test_a_server_that_never_answers_cannot_block_a_call(
    control_plane: ControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accepts TCP connections and says nothing: only the request timeout ends the call."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    kubeconfig = control_plane.write_kubeconfig(
        tmp_path / "silent.kubeconfig", user={"token": "x"}, user_name="u",
        server=f"https://127.0.0.1:{port}",
    )  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    try:
        with api_client() as api:
            c = make(control_plane, "default", "bp-0", api)
            c.request_timeout = 0.5
            started = time.monotonic()
            with pytest.raises(LeaseError) as exc:
                c.read()
            waited = time.monotonic() - started
    finally:
        silent.close()
    assert "timed out" in str(exc.value).lower() or "timeout" in str(exc.value).lower()
    # Upper bound with slack: a call without a timeout would hang here until pytest-timeout.
    assert waited < 5.0


def test_writes_keep_client_go_record_semantics(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    """acquireTime kept on renew, leaseTransitions counted after a release too, and the labels and
    annotations of the object kept (only the release marker comes and goes)."""
    with control_plane.api_client() as api:
        raw_api = client.CoordinationV1Api(api)
        a = make(control_plane, kube_namespace, "bp-0", api)
        b = make(control_plane, kube_namespace, "bp-1", api)

        def raw() -> client.V1Lease:
            return raw_api.read_namespaced_lease(a.name, kube_namespace)

        a.acquire(None, a.new_renew_stamp())
        obj = raw()
        acquired_at = obj.spec.acquire_time
        assert acquired_at is not None
        obj.metadata.labels = {**(obj.metadata.labels or {}), "team": "pool-ops"}
        obj.metadata.annotations = {"example.com/note": "keep me"}
        raw_api.replace_namespaced_lease(a.name, kube_namespace, obj)
        current = a.read()
        assert current is not None
        time.sleep(0.01)
        renewed = a.renew(current, a.new_renew_stamp())
        obj = raw()
        assert obj.spec.acquire_time == acquired_at
        assert obj.metadata.labels["team"] == "pool-ops"
        assert obj.metadata.labels["app.kubernetes.io/managed-by"] == "cardano-forge-manager"
        assert obj.metadata.annotations == {"example.com/note": "keep me"}
        released = a.release(renewed)
        obj = raw()
        assert obj.metadata.annotations == {
            "example.com/note": "keep me",
            "cardano.io/released-by": "bp-0",
        }
        assert released.transitions == renewed.transitions == 0
        taken = b.acquire(released, b.new_renew_stamp())
        assert taken.transitions == 1  # a new holder after a release is a transition
        obj = raw()
        assert obj.metadata.annotations == {"example.com/note": "keep me"}  # marker gone
        assert obj.metadata.labels["team"] == "pool-ops"
        assert obj.spec.acquire_time is not None and obj.spec.acquire_time > acquired_at
