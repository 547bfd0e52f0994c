"""Pod objects for the local "pods" of the test bed, so tools see them as in a real cluster.

The control plane has no kubelet: a :class:`~tests.harness.forge_pod.ForgePod` is two local
processes, and no Pod object exists for it. :func:`register` creates one per local pod, labelled
as the chart labels its block producers, whose ``forge-manager`` container carries the
environment the manager process really runs with, and whose status says ``Running`` with the
pod IP of this host. The API server's pod proxy (``/api/v1/namespaces/<ns>/pods/<pod>:<port>/
proxy/...``) then reaches the forge manager's HTTP server, as it would reach a real pod.

The pod proxy refuses loopback and link-local addresses, so the managers must listen on an
address of this host that is neither: :func:`host_address` finds one (None when the host has
only loopback; tests that need the proxy skip then).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Callable, Iterable
from typing import Any

from kubernetes import client

from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import ForgePod

SIOCGIFADDR = 0x8915
# The forge manager's settings the CLI (and an operator) reads from a pod's spec.
MANAGER_ENV = (
    "LEASE_NAME",
    "METRICS_PORT",
    "CLUSTER_NAME",
    "CLUSTER_CRD_NAME",
    "ENABLE_CLUSTER_MANAGEMENT",
    "COORDINATION_NAMESPACE",
    "COORDINATION_KUBECONFIG",
    "POOL_LEASE_NAME",
    "LEASE_DURATION",
    "LEASE_RENEW_DEADLINE",
    "LEASE_RETRY_PERIOD",
    "KUBE_REQUEST_TIMEOUT",
    "HEALTH_CHECK_ENDPOINT",
)


def host_address() -> str | None:
    """An IPv4 address of this host that the API server's pod proxy accepts (not loopback, not
    link-local), or None."""
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                packed = fcntl.ioctl(
                    s.fileno(), SIOCGIFADDR, struct.pack("256s", name[:15].encode())
                )
            except OSError:
                continue
        address = ipaddress.ip_address(socket.inet_ntoa(packed[20:24]))
        if not (address.is_loopback or address.is_link_local or address.is_unspecified):
            return str(address)
    return None


def ensure_service_account(cp: ControlPlane, namespace: str, name: str = "default") -> None:
    """Pods need their ServiceAccount to exist (no controller manager creates ``default``)."""
    with cp.api_client() as api, contextlib.suppress(client.ApiException):
        client.CoreV1Api(api).create_namespaced_service_account(
            namespace, {"metadata": {"name": name}}
        )


def pod_body(
    pod: ForgePod, *, release: str, node_metrics_port: int | None = None
) -> dict[str, Any]:
    env = pod.env()
    manager_env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    manager_env += [{"name": k, "value": env[k]} for k in MANAGER_ENV if k in env]
    node_ports = [{"name": "node", "containerPort": 3001}]
    if node_metrics_port:
        node_ports.append({"name": "node-metrics", "containerPort": node_metrics_port})
    return {
        "metadata": {
            "name": pod.name,
            "labels": {
                "app.kubernetes.io/name": "cardano-forge",
                "app.kubernetes.io/instance": release,
                "app.kubernetes.io/component": "block-producer",
            },
        },
        "spec": {
            "serviceAccountName": "default",
            "initContainers": [
                {
                    "name": "forge-manager",
                    "image": "forge-manager:test",
                    "restartPolicy": "Always",
                    "env": manager_env,
                    "ports": [{"name": "fm-metrics", "containerPort": pod.port}],
                }
            ],
            "containers": [
                {"name": "cardano-node", "image": "cardano-node:test", "ports": node_ports}
            ],
        },
    }


def register(
    cp: ControlPlane,
    namespace: str,
    pods: Iterable[ForgePod],
    *,
    address: str,
    release_of: Callable[[ForgePod], str] | None = None,
) -> None:
    """Create (or replace) a Running Pod object per local pod, at ``address``."""
    ensure_service_account(cp, namespace)
    with cp.api_client() as api:
        core = client.CoreV1Api(api)
        for pod in pods:
            release = release_of(pod) if release_of else pod.name.rsplit("-", 1)[0]
            with contextlib.suppress(client.ApiException):
                core.delete_namespaced_pod(pod.name, namespace, grace_period_seconds=0)
            core.create_namespaced_pod(namespace, pod_body(pod, release=release))
            obj = core.read_namespaced_pod(pod.name, namespace)
            body = api.sanitize_for_serialization(obj)
            body["status"] = {
                "phase": "Running",
                "podIP": address,
                "podIPs": [{"ip": address}],
                "conditions": [{"type": "Ready", "status": "True"}],
            }
            core.replace_namespaced_pod_status(pod.name, namespace, body)
