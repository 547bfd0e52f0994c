"""Health endpoint security wired by values, on the control plane, end to end.

A region is installed with ``helm install`` with the bearer token and the TLS certificate of the
health endpoint in existing Secrets. The Deployment and the StatefulSet are read back from the
API server and their Secret volumes are laid out on disk from the Secrets (as the kubelet would
mount them); the health endpoint then runs as shipped (``python -m health_endpoint``: gunicorn,
TLS from ``TLS_CERT_FILE``/``TLS_KEY_FILE``) with the environment the chart rendered, and the
forge manager's own probe (``forge_manager.cluster.health_check.probe``) calls it with the CA
bundle and token file the chart gave the forge managers: HTTP 200. Without the token: 401; with
the system CAs instead of the bundle: a TLS error; a rotated token file is read on the next call.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from forge_manager.cluster.health_check import probe
from kubernetes import client

from tests.harness.controlplane import ControlPlane, free_port
from tests.harness.fake_exporters import FakeCardanoNode, FakeNodeExporter
from tests.harness.helm import install_chart
from tests.harness.prometheus import PrometheusServer, static_job

pytestmark = [pytest.mark.integration, pytest.mark.chart, pytest.mark.slow]

FULLNAME = "bp-cardano-forge"
REGION = "east"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificate(directory: Path, namespace: str) -> None:
    """A CA and the health endpoint's certificate for its Service name (and 127.0.0.1)."""
    directory.mkdir(parents=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=health-test-ca", cwd=directory)  # fmt: skip
    (directory / "ext").write_text(
        f"subjectAltName=DNS:{FULLNAME}-health.{namespace}.svc,IP:127.0.0.1\n"
        "extendedKeyUsage=serverAuth\n"
    )
    openssl("req", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=health",
            cwd=directory)  # fmt: skip
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "tls.crt", "-days", "2", "-extfile", "ext",
            cwd=directory)  # fmt: skip


def helm_install(control_plane: ControlPlane, tmp_path: Path, namespace: str) -> None:
    values = {
        "pool": {"name": "POOL1"},
        "crds": {"enabled": False},
        "forgeManager": {
            "clusterManagement": {
                "enabled": True,
                "clusterName": REGION,
                "healthCheck": {"enabled": True, "interval": 5, "timeout": 2},
            }
        },
        "healthEndpoint": {
            "enabled": True,
            "prometheusUrl": "http://prometheus.invalid:9090",
            "auth": {"existingSecret": "health-token"},
            "tls": {"existingSecret": "health-tls"},
        },
    }
    install_chart(control_plane.kubeconfig, tmp_path, "bp", namespace, values)


def lay_out_volumes(
    core: Any, namespace: str, pod_spec: Any, container: Any, root: Path, names: set[str]
) -> dict[str, Path]:
    """Write the Secret/ConfigMap volumes ``names`` the container mounts; mountPath -> local dir."""
    volumes = {v.name: v for v in pod_spec.volumes}
    where: dict[str, Path] = {}
    for mount in container.volume_mounts or []:
        if mount.name not in names:
            continue
        volume = volumes[mount.name]
        if volume.secret is not None:
            data = core.read_namespaced_secret(volume.secret.secret_name, namespace).data
            decode = True
            items = volume.secret.items
        elif volume.config_map is not None:
            data = core.read_namespaced_config_map(volume.config_map.name, namespace).data
            decode = False
            items = volume.config_map.items
        else:
            continue
        local = root / mount.name
        local.mkdir(parents=True)
        for item in items or [client.V1KeyToPath(key=k, path=k) for k in data]:
            raw = data[item.key]
            (local / item.path).write_bytes(base64.b64decode(raw) if decode else raw.encode())
        where[mount.mount_path] = local
    return where


def remap(env: dict[str, str], where: dict[str, Path]) -> dict[str, str]:
    out = {}
    for name, value in env.items():
        for mount_path, local in where.items():
            if value.startswith(mount_path + "/"):
                value = str(local) + value[len(mount_path) :]
        out[name] = value
    return out


@pytest.fixture
def healthy_prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    with FakeCardanoNode() as node, FakeNodeExporter() as machine:
        configs = [
            static_job("cardano-node", [node.target], {"cluster": REGION}),
            static_job("node-exporter", [machine.target]),
        ]
        with PrometheusServer(tmp_path / "prometheus", configs) as server:
            server.wait_for("count(up == 1)", lambda v: v == [2.0], what="targets up")
            server.wait_for(
                "count(count_over_time(node_cpu_seconds_total[1m]) >= 3)",
                lambda v: bool(v),
                what="three CPU samples",
            )
            yield server


def test_token_and_tls_from_values_end_to_end(
    control_plane: ControlPlane,
    kube_namespace: str,
    tmp_path: Path,
    healthy_prometheus: PrometheusServer,
) -> None:
    namespace = kube_namespace
    certs = tmp_path / "certs"
    make_certificate(certs, namespace)
    with control_plane.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name="health-tls"), type="kubernetes.io/tls",
            string_data={n: (certs / n).read_text()
                         for n in ("tls.crt", "tls.key", "ca.crt")}))  # fmt: skip
        core.create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name="health-token"),
            string_data={"token": "s3cret-token"}))  # fmt: skip
        helm_install(control_plane, tmp_path, namespace)
        apps = client.AppsV1Api(api)
        health_pod = apps.read_namespaced_deployment(f"{FULLNAME}-health", namespace).spec.template
        (health_container,) = health_pod.spec.containers
        health_files = lay_out_volumes(core, namespace, health_pod.spec, health_container,
                                       tmp_path / "health-pod", {"auth-token", "tls"})  # fmt: skip
        bp_pod = apps.read_namespaced_stateful_set(FULLNAME, namespace).spec.template
        (manager,) = [c for c in bp_pod.spec.init_containers if c.name == "forge-manager"]
        manager_files = lay_out_volumes(
            core,
            namespace,
            bp_pod.spec,
            manager,
            tmp_path / "bp-pod",
            {"health-ca", "health-token"},
        )

    port = free_port()
    health_env = remap({e.name: e.value for e in health_container.env}, health_files)
    health_env.update({"PROMETHEUS_URL": healthy_prometheus.url, "BIND": f"127.0.0.1:{port}",
                       "CACHE_TTL_SECONDS": "0", "WEB_CONCURRENCY": "1"})  # fmt: skip
    manager_env = remap({e.name: e.value or "" for e in manager.env}, manager_files)
    endpoint = urllib.parse.urlsplit(manager_env["HEALTH_CHECK_ENDPOINT"])
    assert endpoint.scheme == "https"
    assert endpoint.hostname == f"{FULLNAME}-health.{namespace}.svc"
    # The Service's name does not resolve here: the same path on the loopback address.
    url = endpoint._replace(netloc=f"127.0.0.1:{port}").geturl()
    ca_bundle = Path(manager_env["HEALTH_CHECK_CA_BUNDLE"])
    token_file = Path(manager_env["HEALTH_CHECK_TOKEN_FILE"])
    assert ca_bundle.read_text() == (certs / "ca.crt").read_text()
    assert token_file.read_text() == "s3cret-token"

    log = tmp_path / "gunicorn.log"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "health_endpoint"], env={**env, **health_env},
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, log.read_text()
            try:
                requests.get(f"https://127.0.0.1:{port}/healthz", timeout=2,
                             verify=str(ca_bundle))  # fmt: skip
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        with requests.Session() as session:
            ok = probe(session, url, 5, ca_bundle=ca_bundle, token_file=token_file)
            assert (ok.success, ok.status_code) == (True, 200), ok
            no_token = probe(session, url, 5, ca_bundle=ca_bundle)
            assert (no_token.success, no_token.status_code) == (False, 401), no_token
            no_ca = probe(session, url, 5, token_file=token_file)
            assert not no_ca.success and no_ca.message.startswith("TLS error"), no_ca
            # Rotation: the kubelet replaces the file; the next call sends the new token.
            token_file.write_text("rotated-token")
            assert (
                probe(session, url, 5, ca_bundle=ca_bundle, token_file=token_file).status_code
                == 401
            )
            (Path(health_env["AUTH_TOKEN_FILE"])).write_text("rotated-token")
            deadline = time.monotonic() + 10
            while (
                probe(session, url, 5, ca_bundle=ca_bundle, token_file=token_file).status_code
                != 200
            ):
                assert time.monotonic() < deadline, "the rotated token was not picked up"
                time.sleep(0.2)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
