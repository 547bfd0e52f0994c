"""The CLI against a release installed with the real helm, and its refusals that need no live
forge managers: check (values and release), RBAC as the release's ServiceAccount, no permission,
an unreachable API, a remote coordination API, and the CLI's side of the pod switchover contract.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.cli.cli_run import Run, cardano_forge, one_line_error
from tests.harness.controlplane import REPO_ROOT, ControlPlane, free_port, tool
from tests.harness.helm import run_helm
from tests.harness.regions import HealthServer, install_crd

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

CHART = REPO_ROOT / "charts" / "cardano-forge"


@pytest.fixture(scope="module")
def crd(control_plane: ControlPlane) -> None:
    install_crd(control_plane)


def helm(cp: ControlPlane, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_helm(cp.kubeconfig, tmp, *args)


def release_values(region: str, namespace: str, endpoint: str) -> dict[str, Any]:
    return {
        "pool": {"name": "POOL1"},
        "crds": {"enabled": False},
        "forgeManager": {
            "credentials": {"secretName": "pool-keys"},
            "clusterManagement": {
                "enabled": True,
                "clusterName": region,
                "priority": 1,
                "healthCheck": {
                    "enabled": True,
                    "endpoint": endpoint,
                    "interval": 30,
                    "timeout": 10,
                    "failureThreshold": 3,
                },
                "coordination": {"namespace": namespace},
            },
        },
    }


@pytest.fixture
def release(
    control_plane: ControlPlane, crd: None, kube_namespace: str, tmp_path: Path
) -> Iterator[tuple[str, HealthServer]]:
    health = HealthServer()
    values = tmp_path / "east.yaml"
    values.write_text(yaml.safe_dump(release_values("east", kube_namespace, health.url)))
    done = helm(
        control_plane,
        tmp_path,
        "install",
        "east",
        str(CHART),
        "-n",
        kube_namespace,
        "-f",
        str(values),
    )
    assert done.returncode == 0, done.stderr
    try:
        yield kube_namespace, health
    finally:
        health.stop()


def cf(cp: ControlPlane, namespace: str, *args: str) -> Run:
    return cardano_forge(*args, kubeconfig=cp.kubeconfig, namespace=namespace)


def test_check_of_a_running_release_as_its_service_account(
    control_plane: ControlPlane, release: tuple[str, HealthServer]
) -> None:
    ns, health = release
    run = cf(control_plane, ns, "check", "--release", "east")
    assert run.code == 0, run
    rows = [ln.split(None, 2) for ln in run.out.splitlines()[1:]]
    assert all(status in ("ok", "skip") for status, _, _ in rows), run.out
    text = run.out
    who = f"system:serviceaccount:{ns}:east-cardano-forge"
    assert f"{who} can get leases.coordination.k8s.io cardano-node-leader in {ns}" in text
    assert f"{who} can update cardanoforgeclusters/status.cardano.io east in {ns}" in text
    assert "cardanoforgeclusters.cardano.io installed" in text
    assert "the coordination API (this cluster's) answered in" in text
    assert f"{health.url} answered 200" in text
    assert "retry period 2 + renew deadline 10 + request timeout 1" in text
    assert "pod east-cardano-forge-0 does not exist" in text  # no kubelet: no pods to ask

    health.status = 503
    run = cf(control_plane, ns, "check", "-o", "json")
    assert run.code == 1
    doc = run.json()
    assert doc["ok"] is False
    assert [f["message"] for f in doc["findings"] if f["status"] == "FAIL"] == [
        f"{health.url}: answered HTTP 503"
    ]
    health.status = 200

    # RBAC taken away: each missing permission is named.
    with control_plane.api_client() as api:
        client.RbacAuthorizationV1Api(api).delete_namespaced_role_binding(
            "east-cardano-forge-coordination", ns
        )
    run = cf(control_plane, ns, "check", "--release", "east")
    assert run.code == 1
    failing = [ln for ln in run.out.splitlines() if ln.startswith("FAIL")]
    assert f"{who} cannot update cardanoforgeclusters/status.cardano.io east in {ns}" in "\n".join(
        failing
    ), run.out
    assert f"{who} can get leases.coordination.k8s.io cardano-node-leader in {ns}" in run.out

    error = one_line_error(cf(control_plane, ns, "check", "--release", "west"))
    assert f"no StatefulSet of release west in namespace {ns}" in error


def test_status_of_a_release_without_pods(
    control_plane: ControlPlane, release: tuple[str, HealthServer]
) -> None:
    ns, _ = release
    run = cf(control_plane, ns, "status", "-o", "json")
    assert run.code == 0, run
    (pool,) = run.json()["pools"]
    assert pool["pool"] == "cardano-forge-pool" and pool["lease"] is None and pool["regions"] == []
    assert [(p["pod"], p["exists"], p["forging"], p["metricsError"]) for p in pool["pods"]] == [
        ("east-cardano-forge-0", False, None, "no Pod object"),
        ("east-cardano-forge-1", False, None, "no Pod object"),
    ]
    table = cf(control_plane, ns, "status")
    assert "no Lease cardano-forge-pool (nobody has led yet, or it was deleted)" in table.out
    error = one_line_error(
        cf(control_plane, ns, "pause", "east", "--for", "1h", "--reason", "x", "--yes")
    )
    assert "unknown region 'east': no CardanoForgeCluster found" in error


def test_check_of_values_files_with_helm(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        yaml.safe_dump(
            release_values("east", "pool", "http://h.example/health") | {"crds": {"enabled": True}}
        )
    )
    env_helm = tool("helm")
    run = cardano_forge("check", "-f", str(good), "--chart", str(CHART), "--helm", env_helm)
    assert run.code == 0, run
    assert f"helm template {CHART} rendered" in run.out
    assert "region east, priority 1, pool Lease cardano-forge-pool" in run.out

    slow = tmp_path / "slow.yaml"
    slow.write_text(
        yaml.safe_dump(
            {"forgeManager": {"credentials": {"secretName": "k"}, "lease": {"durationSeconds": 14}}}
        )
    )
    run = cardano_forge("check", "-f", str(slow), "--chart", str(CHART), "--helm", env_helm)
    assert run.code == 1
    assert "FAIL" in run.out and "raise LEASE_DURATION to at least 14.5" in run.out

    refused = tmp_path / "refused.yaml"
    refused.write_text(yaml.safe_dump({"forgeManager": {"credentials": {"secretName": ""}}}))
    run = cardano_forge("check", "-f", str(refused), "--chart", str(CHART), "--helm", env_helm)
    assert run.code == 1 and "forgeManager.credentials.secretName is required" in run.out, run

    error = one_line_error(cardano_forge("check", "-f", str(tmp_path / "nope.yaml")))
    assert "cannot read values file" in error


def sa_kubeconfig(
    cp: ControlPlane, namespace: str, name: str, path: Path, rules: list[dict[str, Any]]
) -> Path:
    with cp.api_client() as api:
        core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
        core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        if rules:
            rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
            rbac.create_namespaced_role_binding(
                namespace,
                {
                    "metadata": {"name": name},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": name,
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
                },
            )
        token = core.create_namespaced_service_account_token(
            name, namespace, {"spec": {"audiences": [], "expirationSeconds": 3600}}
        ).status.token
    return cp.token_kubeconfig(path, token, namespace)


def test_no_permission_and_unreachable_api(
    control_plane: ControlPlane, crd: None, kube_namespace: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    nobody = sa_kubeconfig(control_plane, ns, "nobody", tmp_path / "nobody", [])
    error = one_line_error(cardano_forge("status", kubeconfig=nobody))
    assert error.startswith(f"error: no permission to list pods in namespace {ns}: "), error

    with control_plane.api_client() as api:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "cardano.io",
            "v1",
            ns,
            "cardanoforgeclusters",
            {
                "apiVersion": "cardano.io/v1",
                "kind": "CardanoForgeCluster",
                "metadata": {"name": "east"},
                "spec": {"region": "east", "priority": 1},
            },
        )
    reader = sa_kubeconfig(
        control_plane,
        ns,
        "reader",
        tmp_path / "reader",
        [
            {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list"]},
            {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get", "list"]},
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "verbs": ["get", "list"],
            },
            {
                "apiGroups": ["cardano.io"],
                "resources": ["cardanoforgeclusters"],
                "verbs": ["get", "list"],
            },
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["selfsubjectreviews"],
                "verbs": ["create"],
            },
        ],
    )
    run = cardano_forge("status", kubeconfig=reader)
    assert run.code == 0 and "east" in run.out, run
    error = one_line_error(
        cardano_forge("pause", "east", "--for", "1h", "--reason", "x", "--yes", kubeconfig=reader)
    )
    assert error.startswith(
        f"error: no permission to update CardanoForgeCluster east in namespace {ns}: "
    ), error

    closed = control_plane.write_kubeconfig(
        tmp_path / "closed",
        user={"token": "x"},
        user_name="x",
        server=f"https://127.0.0.1:{free_port()}",
    )
    for argv in (
        ["status"],
        ["history"],
        ["switchover", "--to-region", "east", "--yes"],
        ["pause", "east", "--for", "1h", "--reason", "x", "--yes"],
        ["resume", "east", "--yes"],
        ["check"],
    ):
        error = one_line_error(cardano_forge(*argv, kubeconfig=closed, namespace=ns))
        assert "is unreachable (connection refused)" in error, (argv, error)


def test_a_remote_coordination_api_needs_its_kubeconfig(
    control_plane: ControlPlane, crd: None, kube_namespace: str, tmp_path: Path
) -> None:
    """Pods whose forge managers meet in another API server (COORDINATION_KUBECONFIG): the CLI
    says which flag it needs, and reads the regions there with it."""
    ns = kube_namespace
    with control_plane.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_service_account(ns, {"metadata": {"name": "default"}})
        core.create_namespaced_pod(
            ns,
            {
                "metadata": {
                    "name": "far-0",
                    "labels": {
                        "app.kubernetes.io/component": "block-producer",
                        "app.kubernetes.io/instance": "far",
                    },
                },
                "spec": {
                    "initContainers": [
                        {
                            "name": "forge-manager",
                            "image": "x",
                            "restartPolicy": "Always",
                            "env": [
                                {"name": "ENABLE_CLUSTER_MANAGEMENT", "value": "true"},
                                {"name": "CLUSTER_NAME", "value": "far"},
                                {
                                    "name": "COORDINATION_KUBECONFIG",
                                    "value": "/var/run/cardano-forge/coordination/kubeconfig",
                                },
                            ],
                        }
                    ],
                    "containers": [{"name": "cardano-node", "image": "x"}],
                },
            },
        )
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "cardano.io",
            "v1",
            ns,
            "cardanoforgeclusters",
            {
                "apiVersion": "cardano.io/v1",
                "kind": "CardanoForgeCluster",
                "metadata": {"name": "far"},
                "spec": {"region": "far", "priority": 3},
            },
        )
    run = cardano_forge("status", kubeconfig=control_plane.kubeconfig, namespace=ns)
    assert run.code != 0 or "pass --coordination-kubeconfig" in run.out, run
    assert "pass --coordination-kubeconfig" in run.out + run.err
    run = cardano_forge(
        "status",
        "-o",
        "json",
        "--coordination-kubeconfig",
        str(control_plane.kubeconfig),
        kubeconfig=control_plane.kubeconfig,
        namespace=ns,
    )
    assert run.code == 0, run
    assert [r["region"] for r in run.json()["pools"][0]["regions"]] == ["far"]


# ---- pod switchover: the CLI's side of the contract ----------------------------------------------
def test_pod_switchover_contract_cli_side(control_plane: ControlPlane, kube_namespace: str) -> None:
    """The test plays the forge manager on a Lease that advertises the capability, to check the
    CLI's half of the contract in isolation: the request it writes, how it reads a refusal,
    success, and how it withdraws a request nobody answers (the real managers' half:
    test_cli_pod_switchover.py)."""
    ns = kube_namespace
    lease_name = "far-leader"
    with control_plane.api_client() as api:
        core, coord = client.CoreV1Api(api), client.CoordinationV1Api(api)
        core.create_namespaced_service_account(ns, {"metadata": {"name": "default"}})
        for name in ("far-0", "far-1"):
            core.create_namespaced_pod(
                ns,
                {
                    "metadata": {
                        "name": name,
                        "labels": {
                            "app.kubernetes.io/component": "block-producer",
                            "app.kubernetes.io/instance": "far",
                        },
                    },
                    "spec": {
                        "initContainers": [
                            {
                                "name": "forge-manager",
                                "image": "x",
                                "restartPolicy": "Always",
                                "env": [{"name": "LEASE_NAME", "value": lease_name}],
                            }
                        ],
                        "containers": [{"name": "cardano-node", "image": "x"}],
                    },
                },
            )
            pod = api.sanitize_for_serialization(core.read_namespaced_pod(name, ns))
            pod["status"] = {"phase": "Running", "podIP": "10.255.0.1"}
            core.replace_namespaced_pod_status(name, ns, pod)
        coord.create_namespaced_lease(
            ns,
            {
                "metadata": {
                    "name": lease_name,
                    "annotations": {"cardano.io/forge-manager-capabilities": "pod-switchover/v1"},
                },
                "spec": {"holderIdentity": "far-0", "leaseDurationSeconds": 15},
            },
        )

    def lease() -> Any:
        with control_plane.api_client() as api:
            return client.CoordinationV1Api(api).read_namespaced_lease(lease_name, ns)

    def request_seen() -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            raw = (lease().metadata.annotations or {}).get("cardano.io/switchover-request")
            if raw:
                return dict(yaml.safe_load(raw))
            time.sleep(0.1)
        raise AssertionError("no switchover request written")

    def manager(answer: Any) -> threading.Thread:
        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        return thread

    def patch(body: dict[str, Any]) -> None:
        with control_plane.api_client() as api:
            client.CoordinationV1Api(api).patch_namespaced_lease(
                lease_name, ns, body, _content_type="application/merge-patch+json"
            )

    # 1. The manager refuses: the CLI prints its reason.
    def refuse() -> None:
        req = request_seen()
        assert req["to"] == "far-1" and req["id"] and req["requestedBy"]
        assert datetime.fromisoformat(req["expiresAt"].replace("Z", "+00:00")) <= datetime.now(
            UTC
        ) + timedelta(seconds=301)
        result = {"id": req["id"], "outcome": "refused", "reason": "far-1 is not synced"}
        patch(
            {
                "metadata": {
                    "annotations": {
                        "cardano.io/switchover-result": json.dumps(result),
                        "cardano.io/switchover-request": None,
                    }
                }
            }
        )

    thread = manager(refuse)
    error = one_line_error(
        cardano_forge(
            "switchover",
            "--to-pod",
            "far-1",
            "--yes",
            "--timeout",
            "60s",
            kubeconfig=control_plane.kubeconfig,
            namespace=ns,
        )
    )
    thread.join(30)
    assert (
        error
        == "error: the forge manager refused the switchover to far-1: refused: far-1 is not synced"
    )

    # 2. The manager hands over: the CLI reports the move.
    def hand_over() -> None:
        request_seen()
        patch(
            {
                "metadata": {"annotations": {"cardano.io/switchover-request": None}},
                "spec": {"holderIdentity": "far-1"},
            }
        )

    thread = manager(hand_over)
    run = cardano_forge(
        "switchover",
        "--to-pod",
        "far-1",
        "--yes",
        "--timeout",
        "60s",
        kubeconfig=control_plane.kubeconfig,
        namespace=ns,
    )
    thread.join(30)
    assert run.code == 0 and "forging moved from far-0 to far-1" in run.out, run

    # 3. Nobody answers: the CLI gives up after --timeout and withdraws its request.
    run = cardano_forge(
        "switchover",
        "--to-pod",
        "far-0",
        "--yes",
        "--timeout",
        "2s",
        kubeconfig=control_plane.kubeconfig,
        namespace=ns,
    )
    assert run.code == 3, run
    assert (
        "far-0 did not become the leader within 2.0s (holder: far-1); the request was withdrawn"
        in run.err
    )
    assert "cardano.io/switchover-request" not in (lease().metadata.annotations or {})
