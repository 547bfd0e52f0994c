"""A ServiceMonitor turned into the scrape configuration the Prometheus operator generates for it.

The operator (prometheus-operator, ``pkg/prometheus/promcfg.go``) makes one job per endpoint of a
ServiceMonitor: ``kubernetes_sd_configs`` with role ``endpointslice`` in the monitor's namespaces,
``keep`` rules for the Service's selector labels and the endpoint's port name, the standard
target labels (``namespace``, ``service``, ``pod``, ``container``, ``endpoint``, ``job`` from the
Service name), then the endpoint's own ``relabelings``, with ``honor_labels``, ``interval`` and
``path`` from the endpoint. :func:`scrape_configs` reproduces that subset (what this chart uses),
so a test's Prometheus discovers the release's targets through a real API server exactly as a
cluster's Prometheus would.

There is no pod network on the test machine and the API server refuses loopback addresses in
EndpointSlices, so a test gives its "pods" addresses from a pod CIDR and ``address_rewrite`` maps
``<pod ip>:<port>`` to ``127.0.0.1:<port>``, where the exporter playing that pod listens (each on
a port of its own): the one step that stands in for the pod network.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.harness.controlplane import tool
from tests.harness.prometheus import PrometheusServer

ScrapeConfig = dict[str, Any]


def _label_name(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def scrape_configs(
    monitor: dict[str, Any],
    *,
    api_server: str,
    ca_file: Path,
    cert_file: Path,
    key_file: Path,
    address_rewrite: tuple[str, str] | None = None,
    interval: str | None = None,
) -> list[ScrapeConfig]:
    """One scrape config per endpoint of ``monitor`` (a ServiceMonitor as the API returns it)."""
    meta, spec = monitor["metadata"], monitor["spec"]
    namespaces = spec.get("namespaceSelector", {}).get("matchNames") or [meta["namespace"]]
    match_labels: dict[str, str] = spec["selector"].get("matchLabels", {})
    configs: list[ScrapeConfig] = []
    for index, endpoint in enumerate(spec["endpoints"]):
        relabel: list[dict[str, Any]] = [
            {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
        ]
        for key, value in sorted(match_labels.items()):
            name = _label_name(key)
            relabel.append(
                {
                    "action": "keep",
                    "source_labels": [
                        f"__meta_kubernetes_service_label_{name}",
                        f"__meta_kubernetes_service_labelpresent_{name}",
                    ],
                    "regex": f"({re.escape(value)});true",
                }
            )
        relabel += [
            {
                "action": "keep",
                "source_labels": ["__meta_kubernetes_endpointslice_port_name"],
                "regex": re.escape(endpoint["port"]),
            },
            {
                "source_labels": [
                    "__meta_kubernetes_endpointslice_address_target_kind",
                    "__meta_kubernetes_endpointslice_address_target_name",
                ],
                "separator": ";",
                "regex": "Pod;(.*)",
                "replacement": "${1}",
                "target_label": "pod",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {
                "source_labels": ["__meta_kubernetes_pod_container_name"],
                "target_label": "container",
            },
            {
                "source_labels": ["__meta_kubernetes_service_name"],
                "target_label": "job",
                "replacement": "${1}",
            },
            {"target_label": "endpoint", "replacement": endpoint["port"]},
        ]
        for rule in endpoint.get("relabelings", []):
            relabel.append(_relabel(rule))
        if address_rewrite is not None:
            pattern, replacement = address_rewrite
            relabel.append(
                {
                    "source_labels": ["__address__"],
                    "regex": pattern,
                    "replacement": replacement,
                    "target_label": "__address__",
                }
            )
        job: ScrapeConfig = {
            "job_name": f"serviceMonitor/{meta['namespace']}/{meta['name']}/{index}",
            "honor_labels": bool(endpoint.get("honorLabels", False)),
            "scrape_interval": interval or endpoint.get("interval", "30s"),
        }
        timeout = interval or endpoint.get("scrapeTimeout")
        if timeout:  # as the operator: unset means Prometheus' global scrape timeout
            job["scrape_timeout"] = timeout
        configs.append(
            {
                **job,
                "metrics_path": endpoint.get("path", "/metrics"),
                "kubernetes_sd_configs": [
                    {
                        "role": "endpointslice",
                        "api_server": api_server,
                        "tls_config": {
                            "ca_file": str(ca_file),
                            "cert_file": str(cert_file),
                            "key_file": str(key_file),
                        },
                        "namespaces": {"names": namespaces},
                    }
                ],
                "relabel_configs": relabel,
            }
        )
    return configs


_KEYS = {
    "sourceLabels": "source_labels",
    "targetLabel": "target_label",
    "replacement": "replacement",
    "regex": "regex",
    "separator": "separator",
    "action": "action",
    "modulus": "modulus",
}


def _relabel(rule: dict[str, Any]) -> dict[str, Any]:
    unknown = set(rule) - set(_KEYS)
    if unknown:
        raise ValueError(f"relabeling fields this translation does not know: {sorted(unknown)}")
    out = {_KEYS[key]: value for key, value in rule.items()}
    if "action" in out:
        out["action"] = str(out["action"]).lower()
    return out


def kubernetes_sd_prometheus_binary() -> str:
    """A Prometheus with Kubernetes service discovery.

    Debian's prometheus package is built without ``kubernetes_sd_configs``; ``make tools`` builds
    ``prometheus-sd`` from the Go module proxy (``PROMETHEUS_SD_VERSION`` in tools/versions.env)."""
    return tool("prometheus-sd")


class KubernetesSDPrometheus(PrometheusServer):
    """:class:`PrometheusServer` running the ``prometheus-sd`` build."""

    def binary(self) -> str:
        return kubernetes_sd_prometheus_binary()
