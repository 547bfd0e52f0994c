"""The chart's container environment, moved onto local directories for the demo."""

from __future__ import annotations

import pytest

from demo.localpod import ChartEnvError, resolve_env

CONTAINER = {
    "name": "forge-manager",
    "env": [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "METRICS_PORT", "value": "8000"},
        {"name": "SOURCE_KES_KEY", "value": "/var/run/cardano-forge/source/kes.skey"},
        {"name": "TARGET_KES_KEY", "value": "/opt/cardano/secrets/kes.skey"},
        {"name": "NODE_SOCKET", "value": "/ipc/node.socket"},
        {"name": "FORGE_PERMIT_FILE", "value": "/run/forge/permit"},
        {"name": "LOG_FORMAT", "value": "json"},
        {"name": "CARDANO_NODE_PROCESS_NAME", "value": "cardano-node"},
        {"name": "NODE_METRICS_URL", "value": "http://127.0.0.1:12798/metrics"},
        {"name": "OTHER_PATH", "value": "/etc/hostname"},
    ],
    "volumeMounts": [
        {"name": "credentials-source", "mountPath": "/var/run/cardano-forge/source"},
        {"name": "credentials", "mountPath": "/opt/cardano/secrets"},
        {"name": "ipc", "mountPath": "/ipc"},
        {"name": "run", "mountPath": "/run/forge"},
    ],
}
DIRS = {
    "credentials-source": "/w/secret",
    "credentials": "/w/pod/secrets",
    "ipc": "/w/pod/ipc",
    "run": "/w/pod/run",
}


def test_resolves_field_refs_and_moves_mounted_paths() -> None:
    env = resolve_env(CONTAINER, DIRS, pod_name="east-0", namespace="cardano-east")
    assert env == {
        "POD_NAME": "east-0",
        "NAMESPACE": "cardano-east",
        "SOURCE_KES_KEY": "/w/secret/kes.skey",
        "TARGET_KES_KEY": "/w/pod/secrets/kes.skey",
        "NODE_SOCKET": "/w/pod/ipc/node.socket",
        "FORGE_PERMIT_FILE": "/w/pod/run/permit",
        "LOG_FORMAT": "json",
        "OTHER_PATH": "/etc/hostname",
    }


def test_a_path_on_a_volume_without_a_local_directory_is_an_error() -> None:
    dirs = {k: v for k, v in DIRS.items() if k != "ipc"}
    with pytest.raises(ChartEnvError, match=r"NODE_SOCKET=/ipc/node\.socket: no local directory"):
        resolve_env(CONTAINER, dirs, pod_name="p", namespace="n")


def test_secret_sourced_env_cannot_run_locally() -> None:
    container = {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
    with pytest.raises(ChartEnvError, match="only value and fieldRef"):
        resolve_env(container, {}, pod_name="p", namespace="n")


def test_the_pod_uid_field_ref_is_the_uid_given() -> None:
    container = {
        "env": [{"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}]
    }
    env = resolve_env(container, {}, pod_name="p", namespace="n", pod_uid="5a1d")
    assert env == {"POD_UID": "5a1d"}
