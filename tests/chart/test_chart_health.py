"""Health wiring and health endpoint security as the chart renders them (real helm).

The ServiceMonitor puts the region's `cluster` label (and `pool`) on both endpoints; the health
endpoint selects node_exporter series by the topology; the bearer token, the endpoint's TLS
certificate and the forge managers' CA bundle and token come from existing Secrets/ConfigMaps.
The same wiring is exercised on the control plane and a real Prometheus in
tests/integration/test_chart_health_wiring.py and test_chart_health_security.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chart.test_chart import (
    BASE,
    CLUSTER_MANAGEMENT,
    merged,
    only,
    pod_spec,
    render,
    sidecar_of,
    validate_all,
)

pytestmark = pytest.mark.chart

HEALTH_ON: dict[str, Any] = merged(
    BASE,
    CLUSTER_MANAGEMENT,
    {
        "forgeManager": {"clusterManagement": {"healthCheck": {"endpoint": ""}}},
        "healthEndpoint": {
            "enabled": True,
            "prometheusUrl": "http://prometheus-operated.monitoring:9090",
        },
    },
)


def relabelings(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    monitor = only(docs, "ServiceMonitor")
    return {e["port"]: e["relabelings"] for e in monitor["spec"]["endpoints"]}


def health_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    (container,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def manager_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in sidecar_of(pod_spec(docs))["env"]}


# --------------------------------------------------------------------------- labels


def test_service_monitor_labels_both_endpoints_with_region_and_pool(tmp_path: Path) -> None:
    docs = render(merged(HEALTH_ON, {"serviceMonitor": {"enabled": True}}), tmp_path)
    for port, rules in relabelings(docs).items():
        assert {"targetLabel": "cluster", "replacement": "us-east-1-prod"} in rules, port
        assert {"targetLabel": "pool", "replacement": "POOL1"} in rules, port
    # ... which is the cluster the forge managers ask the health endpoint about.
    assert manager_env(docs)["HEALTH_CHECK_ENDPOINT"].endswith("/cluster/us-east-1-prod")
    assert manager_env(docs)["CLUSTER_NAME"] == "us-east-1-prod"


def test_service_monitor_region_defaults_to_the_namespace(tmp_path: Path) -> None:
    docs = render(merged(BASE, {"serviceMonitor": {"enabled": True}}), tmp_path)
    for rules in relabelings(docs).values():
        assert {"targetLabel": "cluster", "replacement": "cardano"} in rules


def test_service_monitor_uses_the_health_endpoints_cluster_label(tmp_path: Path) -> None:
    values = merged(BASE, {"serviceMonitor": {"enabled": True},
                           "healthEndpoint": {"clusterLabel": "region"}})  # fmt: skip
    for rules in relabelings(render(values, tmp_path)).values():
        assert {"targetLabel": "region", "replacement": "cardano"} in rules


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        ({}, 'job="node-exporter"'),
        ({"topology": "global"}, 'job="node-exporter",$selector'),
        ({"topology": "global", "nodeExporterSelector": ""}, "$selector"),
        ({"topology": "global", "clusterLabel": ""}, 'job="node-exporter"'),
        ({"nodeExporterSelector": 'job=~"node-exporter|node"'}, 'job=~"node-exporter|node"'),
    ],
    ids=["region", "global", "global-any-job", "global-no-label", "own-matchers"],
)
def test_node_exporter_selection_follows_the_topology(
    health: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    docs = render(merged(HEALTH_ON, {"healthEndpoint": health}), tmp_path)
    assert health_env(docs)["NODE_EXPORTER_SELECTOR"] == expected


# --------------------------------------------------------------------------- security


def test_no_security_by_default(tmp_path: Path) -> None:
    docs = render(HEALTH_ON, tmp_path)
    env = health_env(docs)
    assert not {"AUTH_TOKEN_FILE", "TLS_CERT_FILE", "TLS_KEY_FILE"} & set(env)
    assert manager_env(docs)["HEALTH_CHECK_ENDPOINT"].startswith("http://")
    assert not {"HEALTH_CHECK_CA_BUNDLE", "HEALTH_CHECK_TOKEN_FILE"} & set(manager_env(docs))


def test_token_and_tls_from_existing_secrets(tmp_path: Path) -> None:
    values = merged(
        HEALTH_ON,
        {"healthEndpoint": {"auth": {"existingSecret": "health-token", "tokenKey": "bearer"},
                            "tls": {"existingSecret": "health-tls"}}},
    )  # fmt: skip
    docs = render(values, tmp_path)
    validate_all(docs, tmp_path)
    deployment = only(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = deployment["containers"]
    env = health_env(docs)
    assert env["AUTH_TOKEN_FILE"] == "/var/run/health-endpoint/auth/bearer"
    assert env["TLS_CERT_FILE"] == "/var/run/health-endpoint/tls/tls.crt"
    assert env["TLS_KEY_FILE"] == "/var/run/health-endpoint/tls/tls.key"
    volumes = {v["name"]: v for v in deployment["volumes"]}
    assert volumes["auth-token"]["secret"]["secretName"] == "health-token"
    assert volumes["tls"]["secret"]["secretName"] == "health-tls"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["auth-token"] == "/var/run/health-endpoint/auth"
    assert mounts["tls"] == "/var/run/health-endpoint/tls"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    # The forge managers: HTTPS to the Service, the certificate's CA, the same token.
    manager = manager_env(docs)
    assert manager["HEALTH_CHECK_ENDPOINT"].startswith(
        "https://bp-cardano-forge-health.cardano.svc:"
    )
    assert manager["HEALTH_CHECK_CA_BUNDLE"] == "/var/run/cardano-forge/health-ca/ca.crt"
    assert manager["HEALTH_CHECK_TOKEN_FILE"] == "/var/run/cardano-forge/health-token/token"
    pod_volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert pod_volumes["health-ca"]["secret"] == {
        "secretName": "health-tls",
        "defaultMode": 0o440,
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    assert pod_volumes["health-token"]["secret"]["secretName"] == "health-token"
    assert pod_volumes["health-token"]["secret"]["items"] == [{"key": "bearer", "path": "token"}]
    sidecar_mounts = {m["name"]: m for m in sidecar_of(pod_spec(docs))["volumeMounts"]}
    assert sidecar_mounts["health-ca"]["readOnly"] is True
    assert sidecar_mounts["health-token"]["mountPath"] == "/var/run/cardano-forge/health-token"


def test_forge_manager_ca_and_token_of_an_external_endpoint(tmp_path: Path) -> None:
    values = merged(
        BASE,
        CLUSTER_MANAGEMENT,
        {"forgeManager": {"clusterManagement": {"healthCheck": {
            "caBundle": {"configMap": "monitoring-ca", "key": "bundle.pem"},
            "tokenSecret": "monitoring-token", "tokenKey": "t"}}}},
    )  # fmt: skip
    docs = render(values, tmp_path)
    validate_all(docs, tmp_path)
    manager = manager_env(docs)
    assert manager["HEALTH_CHECK_ENDPOINT"].startswith("https://monitoring.example.com/")
    assert manager["HEALTH_CHECK_CA_BUNDLE"] == "/var/run/cardano-forge/health-ca/ca.crt"
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["health-ca"]["configMap"] == {
        "name": "monitoring-ca",
        "items": [{"key": "bundle.pem", "path": "ca.crt"}],
    }
    assert volumes["health-token"]["secret"]["items"] == [{"key": "t", "path": "token"}]
    secret_ca = merged(
        values,
        {"forgeManager": {"clusterManagement": {"healthCheck": {
            "caBundle": {"configMap": "", "secret": "monitoring-ca-secret"}}}}},
    )  # fmt: skip
    volumes = {v["name"]: v for v in pod_spec(render(secret_ca, tmp_path))["volumes"]}
    assert volumes["health-ca"]["secret"]["secretName"] == "monitoring-ca-secret"


def test_no_health_files_without_health_checks(tmp_path: Path) -> None:
    values = merged(
        HEALTH_ON,
        {"healthEndpoint": {"auth": {"existingSecret": "health-token"}},
         "forgeManager": {"clusterManagement": {"healthCheck": {"enabled": False}}}},
    )  # fmt: skip
    docs = render(values, tmp_path)
    assert "health-token" not in {v["name"] for v in pod_spec(docs)["volumes"]}
    assert "HEALTH_CHECK_TOKEN_FILE" not in manager_env(docs)
