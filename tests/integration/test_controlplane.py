"""The test bed is the real thing: optimistic concurrency, schema validation, RBAC, tokens."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.integration


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_version_reports_the_pinned_release(control_plane: ControlPlane) -> None:
    versions = Path(__file__).resolve().parents[2] / "tools" / "versions.env"
    pinned = next(
        line.split("=", 1)[1].strip()
        for line in versions.read_text().splitlines()
        if line.startswith("KUBERNETES_VERSION=")
    )
    with control_plane.api_client() as api:
        info = client.VersionApi(api).get_code()
    assert info.git_version == pinned
    assert int(info.minor) >= 34


def test_lease_update_with_stale_resource_version_conflicts(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    with control_plane.api_client() as api:
        leases = client.CoordinationV1Api(api)
        created = leases.create_namespaced_lease(
            kube_namespace,
            client.V1Lease(
                metadata=client.V1ObjectMeta(name="cardano-node-leader"),
                spec=client.V1LeaseSpec(
                    holder_identity="pod-0", lease_duration_seconds=15, renew_time=_now()
                ),
            ),
        )
        stale_rv = created.metadata.resource_version
        created.spec.renew_time = _now()
        renewed = leases.replace_namespaced_lease("cardano-node-leader", kube_namespace, created)
        assert renewed.metadata.resource_version != stale_rv

        takeover = client.V1Lease(
            metadata=client.V1ObjectMeta(name="cardano-node-leader", resource_version=stale_rv),
            spec=client.V1LeaseSpec(holder_identity="pod-1", lease_duration_seconds=15),
        )
        with pytest.raises(ApiException) as excinfo:
            leases.replace_namespaced_lease("cardano-node-leader", kube_namespace, takeover)
        assert excinfo.value.status == 409
        current = leases.read_namespaced_lease("cardano-node-leader", kube_namespace)
        assert current.spec.holder_identity == "pod-0"


WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.harness.cardano-forge.test"},
    "spec": {
        "group": "harness.cardano-forge.test",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10},
                                    "mode": {"type": "string", "enum": ["on", "off"]},
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_structural_schema_rejects_invalid_custom_resource(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    control_plane.apply_crd(WIDGET_CRD)
    with control_plane.api_client() as api:
        custom = client.CustomObjectsApi(api)
        group, version, plural = "harness.cardano-forge.test", "v1", "widgets"

        def widget(name: str, spec: dict[str, Any]) -> dict[str, Any]:
            return {
                "apiVersion": f"{group}/{version}",
                "kind": "Widget",
                "metadata": {"name": name},
                "spec": spec,
            }

        ok = custom.create_namespaced_custom_object(
            group, version, kube_namespace, plural, widget("good", {"size": 3, "mode": "on"})
        )
        assert ok["spec"]["size"] == 3

        with pytest.raises(ApiException) as excinfo:
            custom.create_namespaced_custom_object(
                group, version, kube_namespace, plural, widget("bad", {"size": 42, "mode": "up"})
            )
        assert excinfo.value.status == 422
        causes = {
            c["field"]: c["message"] for c in json.loads(excinfo.value.body)["details"]["causes"]
        }
        assert "should be less than or equal to 10" in causes["spec.size"]
        assert causes["spec.mode"].startswith('Unsupported value: "up"')


def test_unprivileged_service_account_is_forbidden_to_read_secrets(
    control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    with control_plane.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_secret(
            kube_namespace,
            client.V1Secret(metadata=client.V1ObjectMeta(name="pool-keys"), string_data={"a": "b"}),
        )
        core.create_namespaced_service_account(
            kube_namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
        )
        # A Role that allows reading Leases only, to show the token really is RBAC-checked.
        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            kube_namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="lease-reader"),
                rules=[
                    client.V1PolicyRule(
                        api_groups=["coordination.k8s.io"], resources=["leases"], verbs=["list"]
                    )
                ],
            ),
        )
        rbac.create_namespaced_role_binding(
            kube_namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="lease-reader"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="lease-reader"
                ),
                subjects=[
                    client.RbacV1Subject(
                        kind="ServiceAccount", name="nobody", namespace=kube_namespace
                    )
                ],
            ),
        )
        token = core.create_namespaced_service_account_token(
            "nobody",
            kube_namespace,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
            ),
        ).status.token
    assert token

    kubeconfig = control_plane.token_kubeconfig(tmp_path / "sa.kubeconfig", token, kube_namespace)
    with control_plane.api_client(kubeconfig) as sa_api:
        leases = client.CoordinationV1Api(sa_api).list_namespaced_lease(kube_namespace)
        assert leases.items == []
        with pytest.raises(ApiException) as excinfo:
            client.CoreV1Api(sa_api).read_namespaced_secret("pool-keys", kube_namespace)
        assert excinfo.value.status == 403
        assert f"system:serviceaccount:{kube_namespace}:nobody" in str(excinfo.value.body)
        with pytest.raises(ApiException) as excinfo:
            client.CoordinationV1Api(sa_api).list_namespaced_lease("default")
        assert excinfo.value.status == 403
