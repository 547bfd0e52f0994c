"""``helm install`` of two regions into the real local control plane, and the RBAC checked for real.

The API server validates every object (its own OpenAPI, the CRD's schema and CEL rules); there is
no controller manager, so nothing runs. Then, acting as the chart's ServiceAccount through a
requested token, the calls the forge manager makes succeed and everything else is forbidden.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.harness.controlplane import ControlPlane
from tests.harness.helm import run_helm

pytestmark = [pytest.mark.integration, pytest.mark.chart, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "cardano-forge"
CRD_NAME = "cardanoforgeclusters.cardano.io"
GROUP, VERSION, PLURAL = "cardano.io", "v1", "cardanoforgeclusters"


@pytest.fixture
def helm(
    control_plane: ControlPlane, tmp_path: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_helm(control_plane.kubeconfig, tmp_path, *args)

    return run


@pytest.fixture
def namespaces(control_plane: ControlPlane, kube_namespace: str) -> Iterator[dict[str, str]]:
    """East's namespace, west's, and the shared coordination namespace."""
    extra = [f"t-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with control_plane.api_client() as api:
        core = client.CoreV1Api(api)
        for name in extra:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield {"east": kube_namespace, "west": extra[0], "coordination": extra[1]}
    with control_plane.api_client() as api:
        for name in extra:
            client.CoreV1Api(api).delete_namespace(name)


def region_values(
    region: str, priority: int, coordination: str, *, crds: bool, create: bool
) -> dict[str, Any]:
    return {
        "pool": {"name": "POOL1"},
        "crds": {"enabled": crds},
        "forgeManager": {
            "credentials": {"secretName": "pool1-keys"},
            "clusterManagement": {
                "enabled": True,
                "clusterName": region,
                "priority": priority,
                "createResource": create,
                "healthCheck": {
                    "enabled": True,
                    "endpoint": f"https://monitoring.example.com/health/{region}",
                    "interval": 30,
                    "timeout": 10,
                    "failureThreshold": 3,
                },
                "coordination": {"namespace": coordination},
            },
        },
    }


def _crd_owner(api: Any) -> str | None:
    """The Helm release owning the CRD; "" when it exists without one, None when absent."""
    try:
        crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(CRD_NAME)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return str((crd.metadata.annotations or {}).get("meta.helm.sh/release-name", ""))


def _forbidden(call: Callable[[], object]) -> str:
    with pytest.raises(ApiException) as excinfo:
        call()
    assert excinfo.value.status == 403, excinfo.value.body
    return str(json.loads(excinfo.value.body)["message"])


def test_two_regions_install_and_rbac_holds(
    control_plane: ControlPlane,
    helm: Callable[..., subprocess.CompletedProcess[str]],
    namespaces: dict[str, str],
    tmp_path: Path,
) -> None:
    east_ns, west_ns, coord_ns = namespaces["east"], namespaces["west"], namespaces["coordination"]
    with control_plane.api_client() as api:
        owner = _crd_owner(api)

    # East installs the CRD with the release (adopting one another test created, if any).
    east_values = tmp_path / "east.yaml"
    east_values.write_text(
        yaml.safe_dump(
            region_values("us-east-1-prod", 1, coord_ns, crds=owner in (None, ""), create=False)
        )
    )
    adopt = ["--take-ownership"] if owner == "" else []
    result = helm("install", "east", str(CHART), "-n", east_ns, "-f", str(east_values), *adopt)
    assert result.returncode == 0, result.stderr

    # West creates its region's resource (the CRD is there now).
    west_values = tmp_path / "west.yaml"
    west_values.write_text(
        yaml.safe_dump(region_values("us-west-2-prod", 2, coord_ns, crds=False, create=True))
    )
    result = helm("install", "west", str(CHART), "-n", west_ns, "-f", str(west_values))
    assert result.returncode == 0, result.stderr

    with control_plane.api_client() as api:
        sts = client.AppsV1Api(api).read_namespaced_stateful_set("east-cardano-forge", east_ns)
        genesis, install, sidecar = sts.spec.template.spec.init_containers
        assert genesis.name == "genesis"  # node.genesis: fetched and verified first
        # forge-guard's installer runs to completion first; the sidecar keeps running.
        assert (install.name, install.restart_policy) == ("install-forge-guard", None)
        assert (sidecar.name, sidecar.restart_policy) == ("forge-manager", "Always")
        assert sts.spec.template.spec.containers[0].command[0] == "/forge-bin/forge-guard"
        objects = client.CustomObjectsApi(api)
        west_cfc = objects.get_namespaced_custom_object(
            GROUP, VERSION, coord_ns, PLURAL, "us-west-2-prod"
        )
        assert west_cfc["spec"]["priority"] == 2
        assert west_cfc["spec"]["healthCheck"]["timeout"] == "10s"

        token = (
            client.CoreV1Api(api)
            .create_namespaced_service_account_token(
                "east-cardano-forge",
                east_ns,
                client.AuthenticationV1TokenRequest(
                    spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
                ),
            )
            .status.token
        )
        client.CoreV1Api(api).create_namespaced_secret(
            east_ns,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="pool1-keys"), string_data={"kes.skey": "x"}
            ),
        )

    kubeconfig = control_plane.token_kubeconfig(tmp_path / "east-sa.kubeconfig", token, east_ns)
    with control_plane.api_client(kubeconfig) as sa:
        leases = client.CoordinationV1Api(sa)
        objects = client.CustomObjectsApi(sa)
        core = client.CoreV1Api(sa)

        def lease(name: str) -> client.V1Lease:
            return client.V1Lease(
                metadata=client.V1ObjectMeta(name=name),
                spec=client.V1LeaseSpec(holder_identity="east-cardano-forge-0"),
            )

        # Allowed: its local Lease.
        local = leases.create_namespaced_lease(east_ns, lease("cardano-node-leader"))
        local = leases.read_namespaced_lease("cardano-node-leader", east_ns)
        local.spec.lease_duration_seconds = 15
        leases.replace_namespaced_lease("cardano-node-leader", east_ns, local)
        # Allowed: the pool-wide Lease and its heartbeat in the coordination namespace.
        for name in ("cardano-forge-pool", "cardano-forge-pool-us-east-1-prod"):
            leases.create_namespaced_lease(coord_ns, lease(name))
            held = leases.read_namespaced_lease(name, coord_ns)
            leases.replace_namespaced_lease(name, coord_ns, held)
        leases.list_namespaced_lease(coord_ns)
        # Allowed: read every region, create and write its own (and its status).
        listed = objects.list_namespaced_custom_object(GROUP, VERSION, coord_ns, PLURAL)
        assert [i["metadata"]["name"] for i in listed["items"]] == ["us-west-2-prod"]
        objects.create_namespaced_custom_object(
            GROUP,
            VERSION,
            coord_ns,
            PLURAL,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "CardanoForgeCluster",
                "metadata": {"name": "us-east-1-prod"},
                "spec": {"region": "us-east-1-prod", "priority": 1},
            },
        )
        objects.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            coord_ns,
            PLURAL,
            "us-east-1-prod",
            {"status": {"effectiveState": "Priority-based", "effectivePriority": 1}},
        )
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, coord_ns, PLURAL, "us-east-1-prod", {"spec": {"priority": 1}}
        )

        # Forbidden: Secrets, deletes, other regions' resources, other Leases, other namespaces.
        message = _forbidden(lambda: core.read_namespaced_secret("pool1-keys", east_ns))
        assert f"system:serviceaccount:{east_ns}:east-cardano-forge" in message
        _forbidden(lambda: core.list_namespaced_secret(east_ns))
        _forbidden(lambda: leases.delete_namespaced_lease("cardano-node-leader", east_ns))
        _forbidden(lambda: leases.read_namespaced_lease("another-lease", east_ns))
        _forbidden(lambda: leases.list_namespaced_lease(east_ns))
        _forbidden(lambda: leases.create_namespaced_lease(west_ns, lease("cardano-node-leader")))
        _forbidden(
            lambda: objects.delete_namespaced_custom_object(
                GROUP, VERSION, coord_ns, PLURAL, "us-east-1-prod"
            )
        )
        _forbidden(
            lambda: objects.patch_namespaced_custom_object(
                GROUP, VERSION, coord_ns, PLURAL, "us-west-2-prod", {"spec": {"priority": 50}}
            )
        )
        _forbidden(
            lambda: objects.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                coord_ns,
                PLURAL,
                "us-west-2-prod",
                {"status": {"forgingEnabled": False}},
            )
        )
        _forbidden(lambda: objects.list_namespaced_custom_object(GROUP, VERSION, west_ns, PLURAL))

    # Uninstall keeps the CRD and the region resources (helm.sh/resource-policy: keep).
    for release, ns in (("west", west_ns), ("east", east_ns)):
        result = helm("uninstall", release, "-n", ns)
        assert result.returncode == 0, result.stderr
    with control_plane.api_client() as api:
        assert _crd_owner(api) is not None
        client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, coord_ns, PLURAL, "us-west-2-prod"
        )
        with pytest.raises(ApiException) as excinfo:
            client.AppsV1Api(api).read_namespaced_stateful_set("east-cardano-forge", east_ns)
        assert excinfo.value.status == 404
