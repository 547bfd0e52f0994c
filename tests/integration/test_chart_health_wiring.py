"""The chart's own scraping meets the health endpoint's selection, by default, in a real Prometheus.

``helm install`` of a region (ServiceMonitor and health endpoint on, every other health value at
its default) into the real control plane; its pods are created from the StatefulSet's own pod
template and its metrics Service gets one EndpointSlice per pod, as the EndpointSlice controller
would make. A real Prometheus discovers the targets through the API server
(``kubernetes_sd_configs``, role ``endpointslice``) with the relabelling the Prometheus operator
generates from the installed ServiceMonitor (``tests/harness/servicemonitor.py``); the "pods" are
loopback exporters playing cardano-node and the forge manager. node_exporter is scraped as
kube-prometheus-stack scrapes it: job ``node-exporter``, no cluster label (one Prometheus per
region). The health endpoint runs with the environment the chart rendered.

Proved here: every series the chart scrapes carries ``cluster`` and ``pool``; the health endpoint
answers ``healthy`` for this healthy region with the chart's defaults (and would not without
the node_exporter selector); the CPU rule reads a node_exporter that started seconds ago right
(the exporter runs at 35 %), where the former ``1 - rate(idle[5m])`` reads it as nearly 100 %.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from health_endpoint import create_app
from health_endpoint.health import HealthService
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from tests.harness.controlplane import ControlPlane
from tests.harness.fake_exporters import Exporter, FakeCardanoNode, FakeNodeExporter
from tests.harness.helm import run_helm
from tests.harness.prometheus import static_job
from tests.harness.servicemonitor import KubernetesSDPrometheus, scrape_configs

pytestmark = [pytest.mark.integration, pytest.mark.chart, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "cardano-forge"
RELEASE = "bp"
FULLNAME = "bp-cardano-forge"
POOL = "POOL1"
POD_CIDR = "10.244.7."
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "plural": "servicemonitors",
            "singular": "servicemonitor",
            "kind": "ServiceMonitor",
            "listKind": "ServiceMonitorList",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


class FakeForgeManager(Exporter):
    """The forge manager's metrics: it labels its own series with ``pod`` and ``cluster``."""

    def __init__(self, pod: str, cluster: str, forging: bool) -> None:
        super().__init__()
        self.set_gauge("cardano_forging_enabled", float(forging), {"pod": pod, "cluster": cluster})


def helm(control_plane: ControlPlane, tmp_path: Path, *args: str) -> None:
    result = run_helm(control_plane.kubeconfig, tmp_path, *args)
    assert result.returncode == 0, result.stdout + result.stderr


def ensure_service_monitor_crd(control_plane: ControlPlane) -> None:
    with control_plane.api_client() as api:
        try:
            client.ApiextensionsV1Api(api).read_custom_resource_definition(
                "servicemonitors.monitoring.coreos.com"
            )
            return
        except ApiException as exc:
            if exc.status != 404:
                raise
    control_plane.apply_crd(copy.deepcopy(SERVICE_MONITOR_CRD))


def endpoint_slice(namespace: str, pod: str, ip: str, fm_port: int, node_port: int) -> Any:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{FULLNAME}-metrics-{pod[-1]}",
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": f"{FULLNAME}-metrics",
                "endpointslice.kubernetes.io/managed-by": "cardano-forge-tests",
            },
        },
        "addressType": "IPv4",
        "ports": [
            {"name": "fm-metrics", "port": fm_port, "protocol": "TCP"},
            {"name": "node-metrics", "port": node_port, "protocol": "TCP"},
        ],
        "endpoints": [
            {
                "addresses": [ip],
                "conditions": {"ready": True},
                "targetRef": {"kind": "Pod", "name": pod, "namespace": namespace},
            }
        ],
    }


def health_app(deployment: Any, prometheus_url: str) -> Flask:
    """The health endpoint with the environment the chart rendered (Prometheus: the test's)."""
    container = deployment.spec.template.spec.containers[0]
    env = {e.name: e.value for e in container.env}
    env.update({"PROMETHEUS_URL": prometheus_url, "CACHE_TTL_SECONDS": "0"})
    return create_app({"ENV": env, "REGISTRY": CollectorRegistry()})


def ask(app: Flask, cluster: str) -> tuple[int, dict[str, Any]]:
    response = app.test_client().get(f"/api/v1/health/cluster/{cluster}")
    body = response.get_json()
    assert isinstance(body, dict)
    return response.status_code, body


def wait_for_answer(
    app: Flask, cluster: str, done: Callable[[dict[str, Any]], bool], timeout: float = 60.0
) -> tuple[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    code, body = ask(app, cluster)
    while not done(body) and time.monotonic() < deadline:
        time.sleep(0.5)
        code, body = ask(app, cluster)
    return code, body


@pytest.fixture
def exporters() -> Iterator[dict[str, Exporter]]:
    made: dict[str, Exporter] = {}
    try:
        yield made
    finally:
        for exporter in made.values():
            exporter.stop()


def test_chart_scraping_meets_the_health_endpoint_by_default(
    control_plane: ControlPlane,
    kube_namespace: str,
    tmp_path: Path,
    exporters: dict[str, Exporter],
) -> None:
    namespace = kube_namespace  # also the region's name: clusterName defaults to the namespace
    ensure_service_monitor_crd(control_plane)
    values = {
        "pool": {"name": POOL},
        "crds": {"enabled": False},
        "serviceMonitor": {"enabled": True, "interval": "1s"},
        "healthEndpoint": {"enabled": True, "prometheusUrl": "http://prometheus.invalid:9090"},
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    helm(control_plane, tmp_path, "install", RELEASE, str(CHART), "-n", namespace,
         "-f", str(values_file), "--wait=false")  # fmt: skip

    # Two pods from the StatefulSet's own template, each played by two loopback exporters.
    slices: list[dict[str, Any]] = []
    with control_plane.api_client() as api:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        sts = apps.read_namespaced_stateful_set(FULLNAME, namespace)
        template = api.sanitize_for_serialization(sts.spec.template)
        for ordinal in range(2):
            pod = f"{FULLNAME}-{ordinal}"
            body = {"apiVersion": "v1", "kind": "Pod", **copy.deepcopy(template)}
            body["metadata"]["name"] = pod
            # As the StatefulSet controller does: the claim from volumeClaimTemplates.
            body["spec"]["volumes"].append(
                {"name": "data", "persistentVolumeClaim": {"claimName": f"data-{pod}"}}
            )
            core.create_namespaced_pod(namespace, body)
            exporters[f"node-{ordinal}"] = FakeCardanoNode().start()
            exporters[f"fm-{ordinal}"] = FakeForgeManager(pod, namespace, ordinal == 0).start()
            slices.append(
                endpoint_slice(
                    namespace,
                    pod,
                    f"{POD_CIDR}{10 + ordinal}",
                    int(exporters[f"fm-{ordinal}"].target.rsplit(":", 1)[1]),
                    int(exporters[f"node-{ordinal}"].target.rsplit(":", 1)[1]),
                )
            )
        discovery = client.DiscoveryV1Api(api)
        for body in slices:
            discovery.create_namespaced_endpoint_slice(namespace, body)
        monitor = client.CustomObjectsApi(api).get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", namespace, "servicemonitors", FULLNAME
        )
        deployment = apps.read_namespaced_deployment(f"{FULLNAME}-health", namespace)

    machine = FakeNodeExporter()
    machine.cpu_usage = 0.35
    exporters["node-exporter"] = machine.start()
    configs = scrape_configs(
        monitor,
        api_server=control_plane.url,
        ca_file=control_plane.pki / "ca.crt",
        cert_file=control_plane.pki / "admin.crt",
        key_file=control_plane.pki / "admin.key",
        address_rewrite=(POD_CIDR.replace(".", r"\.") + r"\d+:(\d+)", "127.0.0.1:${1}"),
    )
    # kube-prometheus-stack's node_exporter job: no cluster label in a per-region Prometheus.
    configs.append(static_job("node-exporter", [machine.target]))

    with KubernetesSDPrometheus(
        tmp_path / "prometheus", configs, scrape_interval="1s"
    ) as prometheus:
        selector = f'cluster="{namespace}",pool="{POOL}"'
        prometheus.wait_for(
            f"count(up{{{selector}}} == 1)", lambda v: v == [4.0], what="the release's 4 targets"
        )
        jobs = {
            (s["metric"]["job"], s["metric"]["pod"], s["metric"]["endpoint"])
            for s in prometheus.query(f"up{{{selector}}}")
        }
        assert jobs == {
            ("cardano-node", f"{FULLNAME}-0", "node-metrics"),
            ("cardano-node", f"{FULLNAME}-1", "node-metrics"),
            ("cardano-forge-manager", f"{FULLNAME}-0", "fm-metrics"),
            ("cardano-forge-manager", f"{FULLNAME}-1", "fm-metrics"),
        }
        # The series themselves, not only `up`, carry both labels.
        assert prometheus.values(f"count(cardano_node_metrics_slotNum_int{{{selector}}})") == [2]
        assert prometheus.values(f"sum(cardano_forging_enabled{{{selector}}})") == [1]

        app = health_app(deployment, prometheus.url)
        try:
            code, body = wait_for_answer(app, namespace, lambda b: b["status"] == "healthy")
            assert (code, body["status"]) == (200, "healthy"), body
            assert body["checks"] == {
                "cardano_node": "healthy",
                "networking": "healthy",
                "storage": "healthy",
                "system": "healthy",
            }
            # A node_exporter a few seconds old, at 35 %, read with the default 5m window.
            assert 25 <= body["metrics"]["cpu_usage"] <= 45, body["metrics"]
            old_rule = (
                '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])))'
            )
            assert prometheus.values(old_rule)[0] > 80, "the former CPU rule no longer misreads"
        finally:
            svc = app.extensions["health_endpoint"]
            assert isinstance(svc, HealthService)
            svc.close()

        # Selecting node_exporter by the cluster label (the former behaviour) finds nothing in a
        # per-region Prometheus: storage and system would have no data.
        env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}
        assert env["NODE_EXPORTER_SELECTOR"] == 'job="node-exporter"'
        assert (
            prometheus.values(f'count(node_memory_MemTotal_bytes{{cluster="{namespace}"}})') == []
        )
