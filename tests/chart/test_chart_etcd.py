"""The chart's values for coordination on an etcd quorum across regions
(``forgeManager.clusterManagement.coordination.etcd``): the environment and the client
certificate's mount they render, what the forge manager makes of that environment, and the
refusals. Unset, nothing of it renders (the single-cluster topology is unchanged)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forge_manager.cluster.settings import load_cluster_settings

from tests.chart.test_chart import (
    BASE,
    CLUSTER_MANAGEMENT,
    merged,
    mounts,
    pod_spec,
    refusal,
    render,
    sidecar_of,
    validate_all,
)

ENDPOINTS = [
    "https://etcd-east.example.org:2379",
    "https://etcd-west.example.org:2379",
    "https://etcd-witness.example.org:2379",
]


def etcd(**values: Any) -> dict[str, Any]:
    return merged(
        BASE,
        CLUSTER_MANAGEMENT,
        {"forgeManager": {"clusterManagement": {"coordination": {"etcd": values}}}},
    )


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_endpoints_and_client_certificate_reach_the_forge_manager(tmp_path: Path) -> None:
    docs = render(etcd(endpoints=ENDPOINTS, tlsSecret="etcd-client-east"), tmp_path)
    validate_all(docs, tmp_path)
    spec = pod_spec(docs)
    sidecar = sidecar_of(spec)
    env = env_of(sidecar)
    assert env["COORDINATION_ETCD_ENDPOINTS"] == ",".join(ENDPOINTS)
    assert env["COORDINATION_ETCD_PREFIX"] == "/cardano-forge"
    assert env["COORDINATION_ETCD_CERT_FILE"] == "/var/run/cardano-forge/etcd/tls.crt"
    assert env["COORDINATION_ETCD_KEY_FILE"] == "/var/run/cardano-forge/etcd/tls.key"
    assert env["COORDINATION_ETCD_CA_FILE"] == "/var/run/cardano-forge/etcd/ca.crt"
    assert "COORDINATION_KUBECONFIG" not in env
    mount = mounts(sidecar)["coordination-etcd-tls"]
    assert mount == {
        "name": "coordination-etcd-tls",
        "mountPath": "/var/run/cardano-forge/etcd",
        "readOnly": True,
    }
    (volume,) = [v for v in spec["volumes"] if v["name"] == "coordination-etcd-tls"]
    assert volume["secret"]["secretName"] == "etcd-client-east"
    assert {i["key"] for i in volume["secret"]["items"]} == {"ca.crt", "tls.crt", "tls.key"}
    node = spec["containers"][0]
    assert "coordination-etcd-tls" not in mounts(node)  # the key stays with the forge manager
    settings = load_cluster_settings({**env, "NAMESPACE": "cardano-east"})
    assert settings.etcd is not None
    assert settings.etcd.endpoints == tuple(ENDPOINTS)
    assert str(settings.etcd.cert_file) == "/var/run/cardano-forge/etcd/tls.crt"


def test_plain_endpoints_and_own_prefix(tmp_path: Path) -> None:
    plain = ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]
    env = env_of(sidecar_of(pod_spec(render(etcd(endpoints=plain, prefix="/pools/abc"), tmp_path))))
    assert env["COORDINATION_ETCD_ENDPOINTS"] == ",".join(plain)
    assert env["COORDINATION_ETCD_PREFIX"] == "/pools/abc"
    assert "COORDINATION_ETCD_CERT_FILE" not in env


def test_unset_renders_nothing_of_it(tmp_path: Path) -> None:
    spec = pod_spec(render(merged(BASE, CLUSTER_MANAGEMENT), tmp_path))
    sidecar = sidecar_of(spec)
    assert not [k for k in env_of(sidecar) if k.startswith("COORDINATION_ETCD")]
    assert "coordination-etcd-tls" not in mounts(sidecar)


def test_refusals_name_what_to_change(tmp_path: Path) -> None:
    both = merged(
        etcd(endpoints=ENDPOINTS),
        {"forgeManager": {"clusterManagement": {"coordination": {"kubeconfigSecret": "k"}}}},
    )
    assert "both set" in refusal(both, tmp_path)
    assert "etcd.endpoints is empty" in refusal(etcd(tlsSecret="etcd-client"), tmp_path)
    plain = etcd(endpoints=["http://etcd-east:2379"], tlsSecret="etcd-client")
    assert "must be https://" in refusal(plain, tmp_path)
    assert "does not match pattern" in refusal(etcd(endpoints=["etcd-east"]), tmp_path)
    assert "does not match pattern" in refusal(etcd(endpoints=ENDPOINTS, prefix="x/"), tmp_path)
