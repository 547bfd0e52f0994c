"""The CardanoForgeCluster CRD: structural schema offline, then the real API server's verdicts.

Offline, the examples are validated with jsonschema against the CRD's openAPI schema, strict about
unknown fields (as ``kubectl``'s default field validation is). The CEL rules
(``x-kubernetes-validations``) can only be judged by an API server: the integration tests install
the CRD into the local kube-apiserver and check what it accepts, what it rejects and with which
message, defaulting, the status subresource and the printer columns.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.harness.controlplane import ControlPlane

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = REPO_ROOT / "crds" / "cardanoforgeclusters.cardano.io.yaml"
EXAMPLES = sorted((REPO_ROOT / "crds" / "examples").glob("*.yaml"))

GROUP, VERSION, PLURAL, KIND = "cardano.io", "v1", "cardanoforgeclusters", "CardanoForgeCluster"
FORGE_STATES = ["Enabled", "Disabled", "Priority-based"]

# Keywords a structural schema may not use (apiextensions "Specifying a structural schema").
FORBIDDEN_KEYWORDS = {
    "$ref",
    "definitions",
    "dependencies",
    "additionalItems",
    "patternProperties",
    "id",
    "$schema",
}


def load_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    return crd


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def strict(schema: dict[str, Any], path: str = "") -> dict[str, Any]:
    """A copy that rejects unknown fields, except under metadata (the API server's own schema)."""
    schema = copy.deepcopy(schema)
    for node_path, node in walk(schema, path):
        if node.get("type") == "object" and "properties" in node and node_path != ".metadata":
            node.setdefault("additionalProperties", False)
    return schema


FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if "T" not in value or not (value.endswith("Z") or value[-6] in "+-"):
        raise ValueError(f"{value!r} is not RFC 3339")
    dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


@FORMATS.checks("uri", raises=ValueError)
def _uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parsed = urllib.parse.urlparse(value)
    if not parsed.scheme or not parsed.netloc:
        raise ValueError(f"{value!r} is not an absolute URI")
    return True


def validator() -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(strict(schema_of(load_crd())), format_checker=FORMATS)


def errors_for(obj: dict[str, Any]) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(obj)
    ]


def minimal(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": "r1"},
        "spec": {"region": "us-east-1-prod", "priority": 1, **spec},
    }


# --------------------------------------------------------------------------- offline


def test_names_scope_and_version() -> None:
    crd = load_crd()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    spec = crd["spec"]
    assert spec["group"] == GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == KIND
    assert spec["names"]["plural"] == PLURAL
    assert spec["names"]["shortNames"] == ["cfc"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
    assert version["subresources"] == {"status": {}}


def test_schema_is_structural() -> None:
    for path, node in walk(schema_of(load_crd())):
        assert not FORBIDDEN_KEYWORDS & node.keys(), (
            f"{path or '.'}: {FORBIDDEN_KEYWORDS & node.keys()}"
        )
        if path in {".apiVersion", ".kind"}:
            assert node == {"type": "string"}
            continue
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, (
            f"{path or '.'} has no type"
        )
        if node["type"] == "array":
            assert "items" in node, f"{path}: array without items"
        if "properties" in node:
            assert node["type"] == "object", path
            assert "additionalProperties" not in node, (
                f"{path}: properties and additionalProperties"
            )
        for required in node.get("required", []):
            assert required in node.get("properties", {}), f"{path}: required {required!r} unknown"
        if path == ".metadata":
            assert node == {"type": "object"}, "metadata may only restrict name and generateName"


def test_defaults_are_valid_values() -> None:
    for path, node in walk(schema_of(load_crd())):
        if "default" in node:
            sub = {k: v for k, v in node.items() if k != "x-kubernetes-validations"}
            jsonschema.Draft4Validator(sub, format_checker=FORMATS).validate(node["default"])
            assert path.startswith(".spec"), f"{path}: defaults belong in spec"


def test_spec_and_status_fields() -> None:
    schema = schema_of(load_crd())
    spec = schema["properties"]["spec"]["properties"]
    assert set(spec) == {"region", "priority", "forgeState", "healthCheck", "override"}
    assert spec["forgeState"]["enum"] == FORGE_STATES
    assert spec["forgeState"]["default"] == "Priority-based"
    assert spec["priority"]["type"] == "integer"
    assert (spec["priority"]["minimum"], spec["priority"]["maximum"]) == (1, 99)
    health = spec["healthCheck"]["properties"]
    assert set(health) == {"enabled", "endpoint", "interval", "timeout", "failureThreshold"}
    assert (health["interval"]["default"], health["timeout"]["default"]) == ("30s", "10s")
    assert health["failureThreshold"]["minimum"] == 1
    assert set(spec["override"]["properties"]) >= {"forgeState", "priority", "reason", "expiresAt"}
    assert spec["override"]["properties"]["expiresAt"]["format"] == "date-time"
    status = schema["properties"]["status"]["properties"]
    assert set(status) == {
        "effectiveState",
        "effectivePriority",
        "activeLeader",
        "forgingEnabled",
        "healthStatus",
        "conditions",
        "observedGeneration",
    }
    assert set(status["healthStatus"]["properties"]) == {
        "healthy",
        "consecutiveFailures",
        "lastProbeTime",
        "lastSuccessTime",
        "message",
    }
    condition = status["conditions"]["items"]
    assert set(condition["required"]) == {
        "type",
        "status",
        "lastTransitionTime",
        "reason",
        "message",
    }
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_printer_columns_point_into_the_schema() -> None:
    crd = load_crd()
    (version,) = crd["spec"]["versions"]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert list(columns)[:5] == ["State", "Priority", "Healthy", "Leader", "Forging"]
    assert columns["Age"] == ".metadata.creationTimestamp"
    schema = schema_of(crd)
    for name, json_path in columns.items():
        if json_path.startswith(".metadata"):
            continue
        node = schema
        for part in json_path.strip(".").split("."):
            assert part in node.get("properties", {}), f"column {name}: {json_path} not in schema"
            node = node["properties"][part]


def test_three_example_regions() -> None:
    regions = [yaml.safe_load(p.read_text()) for p in EXAMPLES]
    assert len(regions) == 3
    assert len({r["spec"]["region"] for r in regions}) == 3
    assert len({r["spec"]["priority"] for r in regions}) == 3


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_against_the_schema(example: Path) -> None:
    obj = yaml.safe_load(example.read_text())
    assert obj["apiVersion"] == f"{GROUP}/{VERSION}" and obj["kind"] == KIND
    assert errors_for(obj) == []


# Mistakes the openAPI part of the schema rejects on its own (CEL rules are judged below,
# by the API server).
OFFLINE_INVALID = {
    "forge-state-maybe": (minimal(forgeState="Maybe"), "spec.forgeState"),
    "priority-high": (minimal(priority="high"), "spec.priority"),
    "priority-zero": (minimal(priority=0), "spec.priority"),
    "priority-150": (minimal(priority=150), "spec.priority"),
    "interval-words": (
        minimal(healthCheck={"interval": "30 seconds"}),
        "spec.healthCheck.interval",
    ),
    "timeout-number": (minimal(healthCheck={"timeout": 10}), "spec.healthCheck.timeout"),
    "threshold-zero": (
        minimal(healthCheck={"failureThreshold": 0}),
        "spec.healthCheck.failureThreshold",
    ),
    "endpoint-relative": (
        minimal(healthCheck={"endpoint": "/health"}),
        "spec.healthCheck.endpoint",
    ),
    "typo": (minimal(healthcheck={"enabled": True}), "spec"),
    "override-no-expiry": (
        minimal(override={"forgeState": "Disabled", "reason": "maintenance"}),
        "spec.override",
    ),
    "override-expiry-words": (
        minimal(override={"forgeState": "Disabled", "reason": "x", "expiresAt": "tomorrow"}),
        "spec.override.expiresAt",
    ),
    "region-missing": (
        {**minimal(), "spec": {"priority": 1}},
        "spec",
    ),
    "region-not-a-name": (minimal(region="US East"), "spec.region"),
}


@pytest.mark.parametrize("case", sorted(OFFLINE_INVALID))
def test_schema_rejects_offline(case: str) -> None:
    obj, where = OFFLINE_INVALID[case]
    errors = errors_for(obj)
    assert errors, f"{case} was accepted"
    assert any(e.startswith(where + ":") for e in errors), errors


def test_minimal_object_is_valid_offline() -> None:
    assert errors_for(minimal()) == []


# --------------------------------------------------------------------------- real API server


@pytest.fixture(scope="module")
def installed_crd(control_plane: ControlPlane) -> Iterator[None]:
    """The CRD from crds/, created (or replaced) in the real API server and Established."""

    control_plane.apply_crd(load_crd())
    yield


def _create(control_plane: ControlPlane, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:

    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    with control_plane.api_client() as api:
        created: dict[str, Any] = client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, obj
        )
    return created


def _rejection(control_plane: ControlPlane, namespace: str, obj: dict[str, Any]) -> str:
    """The API server's message for an object it must refuse."""

    with pytest.raises(ApiException) as excinfo:
        _create(control_plane, namespace, obj)
    assert excinfo.value.status == 422, excinfo.value.body
    message: str = json.loads(excinfo.value.body)["message"]
    return message


@pytest.mark.integration
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_apiserver_accepts_example(
    control_plane: ControlPlane, installed_crd: None, kube_namespace: str, example: Path
) -> None:
    obj = yaml.safe_load(example.read_text())
    created = _create(control_plane, kube_namespace, obj)
    assert created["spec"] == obj["spec"]


@pytest.mark.integration
def test_apiserver_applies_defaults(
    control_plane: ControlPlane, installed_crd: None, kube_namespace: str
) -> None:
    created = _create(control_plane, kube_namespace, minimal())
    assert created["spec"] == {
        "region": "us-east-1-prod",
        "priority": 1,
        "forgeState": "Priority-based",
        "healthCheck": {
            "enabled": False,
            "interval": "30s",
            "timeout": "10s",
            "failureThreshold": 3,
        },
    }


HEALTH = {"enabled": True, "endpoint": "https://health.example.com/health"}

# Invalid objects and (part of) the message the API server must answer with.
APISERVER_INVALID = {
    "forge-state-maybe": (
        minimal(forgeState="Maybe"),
        'spec.forgeState: Unsupported value: "Maybe": supported values: "Enabled", "Disabled", '
        '"Priority-based"',
    ),
    "priority-high": (
        minimal(priority="high"),
        'spec.priority: Invalid value: "string": spec.priority in body must be of type integer',
    ),
    "priority-150": (
        minimal(priority=150),
        "spec.priority: Invalid value: 150: spec.priority in body should be less than or equal "
        "to 99",
    ),
    "timeout-equals-interval": (
        minimal(healthCheck={**HEALTH, "interval": "30s", "timeout": "30s"}),
        "healthCheck.timeout must be greater than 0 and less than healthCheck.interval",
    ),
    "timeout-above-interval": (
        minimal(healthCheck={**HEALTH, "interval": "10s", "timeout": "1m"}),
        "healthCheck.timeout must be greater than 0 and less than healthCheck.interval",
    ),
    "timeout-zero": (
        minimal(healthCheck={**HEALTH, "timeout": "0s"}),
        "healthCheck.timeout must be greater than 0 and less than healthCheck.interval",
    ),
    "interval-too-short": (
        minimal(healthCheck={**HEALTH, "interval": "500ms", "timeout": "100ms"}),
        "healthCheck.interval must be at least 1s",
    ),
    "interval-words": (
        minimal(healthCheck={**HEALTH, "interval": "30 seconds"}),
        "spec.healthCheck.interval in body should match",
    ),
    "enabled-without-endpoint": (
        minimal(healthCheck={"enabled": True}),
        "healthCheck.endpoint is required when healthCheck.enabled is true",
    ),
    "endpoint-ftp": (
        minimal(healthCheck={"enabled": True, "endpoint": "ftp://health.example.com/x"}),
        "endpoint must be an absolute http:// or https:// URL",
    ),
    "override-without-change": (
        minimal(override={"reason": "maintenance", "expiresAt": "2030-01-01T00:00:00Z"}),
        "override must set forgeState, priority, or both",
    ),
    "override-without-expiry": (
        minimal(override={"forgeState": "Disabled", "reason": "maintenance"}),
        "spec.override.expiresAt: Required value",
    ),
    "override-expiry-words": (
        minimal(override={"forgeState": "Disabled", "reason": "x", "expiresAt": "tomorrow"}),
        'spec.override.expiresAt: Invalid value: "tomorrow": spec.override.expiresAt in body must '
        "be of type date-time",
    ),
    "region-missing": ({**minimal(), "spec": {"priority": 1}}, "spec.region: Required value"),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", sorted(APISERVER_INVALID))
def test_apiserver_rejects_with_a_clear_message(
    control_plane: ControlPlane, installed_crd: None, kube_namespace: str, case: str
) -> None:
    obj, expected = APISERVER_INVALID[case]
    message = _rejection(control_plane, kube_namespace, obj)
    assert expected in message, message


@pytest.mark.integration
def test_apiserver_refuses_a_region_change(
    control_plane: ControlPlane, installed_crd: None, kube_namespace: str
) -> None:

    _create(control_plane, kube_namespace, minimal())
    with control_plane.api_client() as api:
        objects = client.CustomObjectsApi(api)
        with pytest.raises(ApiException) as excinfo:
            objects.patch_namespaced_custom_object(
                GROUP, VERSION, kube_namespace, PLURAL, "r1", {"spec": {"region": "us-west-2-prod"}}
            )
        assert excinfo.value.status == 422
        assert "region cannot be changed" in json.loads(excinfo.value.body)["message"]
        # Other fields stay editable.
        patched = objects.patch_namespaced_custom_object(
            GROUP, VERSION, kube_namespace, PLURAL, "r1", {"spec": {"forgeState": "Disabled"}}
        )
    assert patched["spec"]["forgeState"] == "Disabled"


def _status() -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "effectiveState": "Priority-based",
        "effectivePriority": 101,
        "activeLeader": "cardano-bp-0",
        "forgingEnabled": False,
        "healthStatus": {
            "healthy": False,
            "consecutiveFailures": 3,
            "lastProbeTime": now,
            "lastSuccessTime": now,
            "message": "HTTP 503 from https://health.example.com/health",
        },
        "conditions": [
            {
                "type": "Healthy",
                "status": "False",
                "reason": "HealthCheckFailing",
                "message": "3 consecutive failures",
                "lastTransitionTime": now,
                "observedGeneration": 1,
            }
        ],
        "observedGeneration": 1,
    }


@pytest.mark.integration
def test_status_is_a_subresource(
    control_plane: ControlPlane, installed_crd: None, kube_namespace: str
) -> None:

    created = _create(control_plane, kube_namespace, minimal())
    with control_plane.api_client() as api:
        objects = client.CustomObjectsApi(api)
        # Through the main resource, status is ignored.
        created["status"] = _status()
        replaced = objects.replace_namespaced_custom_object(
            GROUP, VERSION, kube_namespace, PLURAL, "r1", created
        )
        assert "status" not in replaced
        # Through /status it is stored, and validated.
        updated = objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, kube_namespace, PLURAL, "r1", {"status": _status()}
        )
        assert updated["status"]["healthStatus"]["consecutiveFailures"] == 3
        assert updated["metadata"]["generation"] == replaced["metadata"]["generation"]
        with pytest.raises(ApiException) as excinfo:
            objects.patch_namespaced_custom_object_status(
                GROUP, VERSION, kube_namespace, PLURAL, "r1", {"status": {"effectiveState": "On"}}
            )
        assert excinfo.value.status == 422
        assert (
            'status.effectiveState: Unsupported value: "On"'
            in json.loads(excinfo.value.body)["message"]
        )


@pytest.mark.integration
def test_printer_columns_as_kubectl_shows_them(
    control_plane: ControlPlane, installed_crd: None, kube_namespace: str
) -> None:

    _create(control_plane, kube_namespace, minimal())
    with control_plane.api_client() as api:
        client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            GROUP, VERSION, kube_namespace, PLURAL, "r1", {"status": _status()}
        )
        method, url, headers, _, _ = api.param_serialize(
            "GET",
            f"/apis/{GROUP}/{VERSION}/namespaces/{kube_namespace}/{PLURAL}",
            header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        )
        response = api.call_api(method, url, header_params=headers)
        response.read()
        table = json.loads(response.data)
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == [
        "Name",
        "State",
        "Priority",
        "Healthy",
        "Leader",
        "Forging",
        "Region",
        "Desired",
        "Age",
    ]
    (row,) = table["rows"]
    cells = dict(zip(names, row["cells"], strict=True))
    assert (cells["Name"], cells["State"], cells["Priority"]) == ("r1", "Priority-based", 101)
    assert (cells["Healthy"], cells["Leader"], cells["Forging"]) == (False, "cardano-bp-0", False)
    assert (cells["Region"], cells["Desired"]) == ("us-east-1-prod", "Priority-based")
