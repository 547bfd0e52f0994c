"""Node bootstrap per network, as the chart renders it (real helm), and the genesis init container
run with exactly the arguments the chart gave it.

The rendered mainnet configuration is compared with the one cardano-node 11.0.1 publishes
(tests/chart/fixtures, from the node's repository at that tag); the rendered preprod hashes are
checked against preprod's real genesis files (services/forge-manager/tests/fixtures), through
the same bootstrap module the init container runs, fed by a loopback HTTP server.
"""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chart.test_chart import (
    BASE,
    merged,
    only,
    pod_spec,
    refusal,
    render,
    sidecar_of,
    validate_all,
)

pytestmark = pytest.mark.chart

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
PREPROD_GENESIS = (
    REPO_ROOT / "services" / "forge-manager" / "tests" / "fixtures" / "genesis-preprod"
)
RELAYS = [{"address": "relay1.example.com", "port": 3001}, {"address": "203.0.113.7", "port": 6000}]
GENESIS_KEYS = ("ByronGenesisFile", "ShelleyGenesisFile", "AlonzoGenesisFile", "ConwayGenesisFile",
                "CheckpointsFile")  # fmt: skip


def node_values(network: str, **node: Any) -> dict[str, Any]:
    return merged(BASE, {"node": {"network": network, "topology": {"relays": RELAYS}, **node}})


def config_map(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return only(docs, "ConfigMap", "-node-config")


def rendered(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    data = config_map(docs)["data"]
    return json.loads(data["config.json"]), json.loads(data["topology.json"])


def init(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (container,) = [c for c in pod_spec(docs)["initContainers"] if c["name"] == name]
    return container


def node_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (node,) = [c for c in pod_spec(docs)["containers"] if c["name"] == "cardano-node"]
    return node


# --------------------------------------------------------------------------- configuration


def test_mainnet_configuration_is_the_published_one(tmp_path: Path) -> None:
    """The published file of cardano-node 11.0.1, with two deliberate differences: Prometheus is
    bound to every address (the ServiceMonitor scrapes the pod IP) and the genesis files are in
    the directory the init container fills."""
    config, _ = rendered(render(node_values("mainnet"), tmp_path))
    published = json.loads((FIXTURES / "cardano-node-11.0.1-mainnet-config.json").read_text())
    backends = published["TraceOptions"][""]["backends"]
    backends[backends.index("PrometheusSimple suffix 127.0.0.1 12798")] = (
        "PrometheusSimple suffix 0.0.0.0 12798"
    )
    for key in GENESIS_KEYS:
        published[key] = "/opt/cardano/genesis/" + published[key].removeprefix("mainnet-")
    assert config == published


def test_mainnet_topology_relays_and_published_bootstrap_peers(tmp_path: Path) -> None:
    _, topology = rendered(render(node_values("mainnet"), tmp_path))
    published = json.loads((FIXTURES / "cardano-node-11.0.1-mainnet-topology.json").read_text())
    assert topology == {
        "bootstrapPeers": published["bootstrapPeers"],
        "localRoots": [
            {"accessPoints": RELAYS, "advertise": False, "trustable": True, "hotValency": 2}
        ],
        "publicRoots": [{"accessPoints": [], "advertise": False}],
        # A block producer uses no ledger peers and so needs no peer snapshot (cardano-node
        # ignores one and warns); it talks to its relays and, until synced, bootstrap peers.
        "useLedgerAfterSlot": -1,
    }


@pytest.mark.parametrize(
    ("network", "magic", "mode", "checkpoints"),
    [("preprod", "RequiresMagic", "GenesisMode", False),
     ("preview", "RequiresMagic", "GenesisMode", True),
     ("mainnet", "RequiresNoMagic", "PraosMode", True)],
)  # fmt: skip
def test_each_network(
    network: str, magic: str, mode: str, checkpoints: bool, tmp_path: Path
) -> None:
    docs = render(node_values(network), tmp_path)
    validate_all(docs, tmp_path)
    config, topology = rendered(docs)
    assert config["RequiresNetworkMagic"] == magic
    assert config["ConsensusMode"] == mode
    assert ("CheckpointsFile" in config) is checkpoints
    assert config["MinNodeVersion"] == "10.7.0"
    assert topology["bootstrapPeers"]
    assert config_map(docs)["metadata"]["labels"]["cardano.io/network"] == network
    command = init(docs, "genesis")["command"]
    assert command[command.index("--base-url") + 1] == (
        f"https://book.play.dev.cardano.org/environments/{network}"
    )


def test_overrides_and_own_bootstrap_peers(tmp_path: Path) -> None:
    values = node_values(
        "preprod",
        config={"overrides": {"LedgerDB": {"Backend": "V1LMDB"}, "TraceOptions": {
            "Mempool": {"severity": "Silence"}}}},
        topology={"relays": RELAYS, "bootstrapPeers": [], "hotValency": 1,
                  "useLedgerAfterSlot": 130000000},
    )  # fmt: skip
    config, topology = rendered(render(values, tmp_path))
    assert config["LedgerDB"] == {"Backend": "V1LMDB", "NumOfDiskSnapshots": 2,
                                  "QueryBatchSize": 100000, "SnapshotInterval": 4320}  # fmt: skip
    assert config["TraceOptions"]["Mempool"] == {"severity": "Silence"}
    assert config["TraceOptions"]["ChainDB"] == {"severity": "Info"}  # the rest kept
    assert topology["bootstrapPeers"] is None
    assert topology["localRoots"][0]["hotValency"] == 1
    assert topology["useLedgerAfterSlot"] == 130000000


def test_prometheus_follows_the_metrics_port(tmp_path: Path) -> None:
    config, _ = rendered(render(merged(node_values("preview"), {"node": {"metricsPort": 9100}}),
                                tmp_path))  # fmt: skip
    assert "PrometheusSimple suffix 0.0.0.0 9100" in config["TraceOptions"][""]["backends"]


def test_configuration_change_rolls_the_pods(tmp_path: Path) -> None:
    def annotation(values: dict[str, Any]) -> str:
        template = only(render(values, tmp_path), "StatefulSet")["spec"]["template"]
        return str(template["metadata"]["annotations"]["checksum/node-config"])

    first = annotation(node_values("preprod"))
    assert annotation(node_values("preprod")) == first
    assert annotation(merged(node_values("preprod"), {"node": {"topology": {
        "relays": RELAYS[:1]}}})) != first  # fmt: skip


def test_custom_network(tmp_path: Path) -> None:
    custom = {"Protocol": "Cardano", "ByronGenesisFile": "genesis/byron.json",
              "ByronGenesisHash": "ab" * 32, "ShelleyGenesisFile": "shelley.json",
              "ShelleyGenesisHash": "cd" * 32, "RequiresNetworkMagic": "RequiresMagic"}  # fmt: skip
    values = merged(
        BASE,
        {"node": {"network": "custom", "config": {"custom": custom},
                  "topology": {"relays": RELAYS},
                  "genesis": {"baseUrl": "https://genesis.example.com/mynet"}},
         "healthEndpoint": {"network": "mynet"}},
    )  # fmt: skip
    docs = render(values, tmp_path)
    config, topology = rendered(docs)
    assert config["ByronGenesisFile"] == "/opt/cardano/genesis/byron.json"
    assert config["ShelleyGenesisHash"] == "cd" * 32
    assert topology["bootstrapPeers"] is None
    command = init(docs, "genesis")["command"]
    assert command[command.index("--base-url") + 1] == "https://genesis.example.com/mynet"


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({"network": "custom"}, "node.network is custom: set node.config.custom"),
        ({"network": "custom", "config": {"custom": {"Protocol": "Cardano"}}},
         "node.genesis.baseUrl is required for a custom network"),
        ({"genesis": {"source": "configMap"}}, "set node.genesis.configMap"),
        ({"genesis": {"source": "volume"}}, "set node.genesis.volume"),
        ({"network": "custom", "config": {"custom": {"Protocol": "Cardano"}},
          "genesis": {"source": "none"}, "mithril": {"enabled": True}},
         "node.mithril.aggregatorEndpoint and genesisVerificationKey are required"),
    ],
    ids=["custom-without-config", "custom-without-base-url", "configmap-without-name",
         "volume-without-source", "mithril-custom-without-keys"],
)  # fmt: skip
def test_bootstrap_refusals(node: dict[str, Any], expected: str, tmp_path: Path) -> None:
    assert expected in refusal(merged(BASE, {"node": node}), tmp_path)


def test_schema_refuses_a_bad_network_and_relay(tmp_path: Path) -> None:
    assert "network" in refusal(merged(BASE, {"node": {"network": "testnet"}}), tmp_path)
    message = refusal(merged(BASE, {"node": {"topology": {"relays": [{"host": "r1"}]}}}), tmp_path)
    assert "additional properties 'host' not allowed" in message


# --------------------------------------------------------------------------- genesis files


def test_genesis_downloaded_by_default_into_an_empty_dir(tmp_path: Path) -> None:
    docs = render(node_values("preprod"), tmp_path)
    genesis = init(docs, "genesis")
    names = [c["name"] for c in pod_spec(docs)["initContainers"]]
    assert names.index("genesis") < names.index("forge-manager")
    assert genesis["image"] == sidecar_of(pod_spec(docs))["image"]
    assert genesis["command"][:3] == ["python", "-m", "forge_manager.bootstrap"]
    assert genesis["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["name"]: m for m in genesis["volumeMounts"]}
    assert mounts["genesis"]["readOnly"] is False and mounts["node-config"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["genesis"] == {"name": "genesis", "emptyDir": {"sizeLimit": "64Mi"}}
    node_mounts = {m["name"]: m for m in node_container(docs)["volumeMounts"]}
    assert node_mounts["genesis"] == {
        "name": "genesis", "mountPath": "/opt/cardano/genesis", "readOnly": True}  # fmt: skip


def test_air_gapped_sources_are_verified_only(tmp_path: Path) -> None:
    from_cm = merged(node_values("preprod"), {"node": {"genesis": {
        "source": "configMap", "configMap": "preprod-genesis"}}})  # fmt: skip
    docs = render(from_cm, tmp_path)
    validate_all(docs, tmp_path)
    assert "--verify-only" in init(docs, "genesis")["command"]
    assert "--base-url" not in init(docs, "genesis")["command"]
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["genesis"]["configMap"] == {"name": "preprod-genesis"}
    pvc = {"persistentVolumeClaim": {"claimName": "genesis"}}
    from_pvc = merged(node_values("mainnet"), {"node": {"genesis": {
        "source": "volume", "volume": pvc}}})  # fmt: skip
    docs = render(from_pvc, tmp_path)
    validate_all(docs, tmp_path)
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["genesis"]["persistentVolumeClaim"] == {"claimName": "genesis"}
    mounts = {m["name"]: m for m in init(docs, "genesis")["volumeMounts"]}
    assert mounts["genesis"]["readOnly"] is True


def test_own_config_map_without_genesis_handling(tmp_path: Path) -> None:
    values = merged(BASE, {"node": {"configMap": "my-node-config",
                                    "genesis": {"source": "none"}}})  # fmt: skip
    docs = render(values, tmp_path)
    assert not [d for d in docs if d["kind"] == "ConfigMap"]
    assert "genesis" not in [c["name"] for c in pod_spec(docs)["initContainers"]]
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["node-config"]["configMap"]["name"] == "my-node-config"
    assert "genesis" not in volumes


def test_checksums_and_ca_bundle(tmp_path: Path) -> None:
    values = merged(node_values("preprod"), {"node": {"genesis": {
        "checksums": {"conway-genesis.json": "ab" * 32},
        "caBundle": {"configMap": "corp-ca", "key": "bundle.pem"}}}})  # fmt: skip
    docs = render(values, tmp_path)
    validate_all(docs, tmp_path)
    command = init(docs, "genesis")["command"]
    assert command[command.index("--checksum") + 1] == "conway-genesis.json=" + "ab" * 32
    assert command[command.index("--ca-bundle") + 1] == "/var/run/cardano-forge/genesis-ca/ca.crt"
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["genesis-ca"]["configMap"] == {
        "name": "corp-ca", "items": [{"key": "bundle.pem", "path": "ca.crt"}]}  # fmt: skip


class Published:
    """A loopback server publishing preprod's genesis files, as the book does."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/environments/preprod"


@pytest.fixture
def published(tmp_path: Path) -> Iterator[tuple[Published, Path]]:
    root = tmp_path / "www" / "environments" / "preprod"
    root.mkdir(parents=True)
    for f in PREPROD_GENESIS.glob("*.json"):
        (root / f.name).write_bytes(f.read_bytes())
    server = Published(tmp_path / "www")
    yield server, root
    server.httpd.shutdown()
    server.httpd.server_close()


def run_init_container(docs: list[dict[str, Any]], base_url: str, root: Path) -> Any:
    """The rendered genesis init container's command, with the mounts laid out under ``root``."""
    config_dir, genesis_dir = root / "config", root / "genesis"
    config_dir.mkdir(parents=True)
    genesis_dir.mkdir(parents=True)
    for key, text in config_map(docs)["data"].items():
        (config_dir / key).write_text(text)
    command = list(init(docs, "genesis")["command"])
    command[command.index("--base-url") + 1] = base_url
    command = [str(config_dir / "config.json") if a == "/opt/cardano/config/config.json" else
               str(genesis_dir) if a == "/opt/cardano/genesis" else a for a in command]  # fmt: skip
    assert command[0] == "python"
    return subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True,
                          timeout=120, check=False), genesis_dir  # fmt: skip


def test_rendered_init_container_fetches_and_verifies_preprod(
    published: tuple[Published, Path], tmp_path: Path
) -> None:
    server, _ = published
    docs = render(node_values("preprod"), tmp_path)
    result, genesis_dir = run_init_container(docs, server.url, tmp_path / "pod")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in genesis_dir.iterdir()) == [
        "alonzo-genesis.json", "byron-genesis.json", "conway-genesis.json",
        "shelley-genesis.json"]  # fmt: skip


def test_rendered_init_container_refuses_a_corrupted_file(
    published: tuple[Published, Path], tmp_path: Path
) -> None:
    server, root = published
    (root / "conway-genesis.json").write_bytes(b'{"committee": {}}\n')
    docs = render(node_values("preprod"), tmp_path)
    result, genesis_dir = run_init_container(docs, server.url, tmp_path / "pod")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("bootstrap: conway-genesis.json from http://127.0.0.1:")
    assert "does not match ConwayGenesisHash" in line
    assert not (genesis_dir / "conway-genesis.json").exists()


# --------------------------------------------------------------------------- Mithril


def test_mithril_is_off_by_default_and_uses_the_networks_keys(tmp_path: Path) -> None:
    assert "mithril-restore" not in [
        c["name"] for c in pod_spec(render(BASE, tmp_path))["initContainers"]
    ]
    docs = render(
        merged(node_values("preprod"), {"node": {"mithril": {"enabled": True}}}), tmp_path
    )
    validate_all(docs, tmp_path)
    names = [c["name"] for c in pod_spec(docs)["initContainers"]]
    assert names.index("genesis") < names.index("mithril-restore") < names.index("forge-manager")
    restore = init(docs, "mithril-restore")
    env = {e["name"]: e["value"] for e in restore["env"]}
    network = json.loads(
        (REPO_ROOT / "charts/cardano-forge/files/networks/preprod.json").read_text()
    )
    assert env["AGGREGATOR_ENDPOINT"] == (
        "https://aggregator.release-preprod.api.mithril.network/aggregator"
    )
    assert env["GENESIS_VERIFICATION_KEY"] == network["mithril"]["genesisVerificationKey"]
    assert env["ANCILLARY_VERIFICATION_KEY"] == network["mithril"]["ancillaryVerificationKey"]
    assert restore["image"].startswith("ghcr.io/input-output-hk/mithril-client:")
    assert "cardano-db download --include-ancillary" in restore["command"][-1]
    assert {m["name"]: m["mountPath"] for m in restore["volumeMounts"]}["data"] == "/data"


def test_health_endpoint_network_follows_the_node(tmp_path: Path) -> None:
    values = merged(node_values("preview"), {"healthEndpoint": {
        "enabled": True, "prometheusUrl": "http://prometheus:9090"}})  # fmt: skip
    (container,) = only(render(values, tmp_path), "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert {e["name"]: e["value"] for e in container["env"]}["CARDANO_NETWORK"] == "preview"


def test_mithril_and_download_settings_reach_the_containers(tmp_path: Path) -> None:
    values = merged(node_values("mainnet"), {"node": {
        "genesis": {"timeoutSeconds": 15},
        "mithril": {"enabled": True, "snapshot": "a1b2c3",
                    "image": {"tag": "9999.0", "pullPolicy": "Always"},
                    "aggregatorEndpoint": "https://aggregator.example.com/aggregator",
                    "genesisVerificationKey": "5b31", "ancillaryVerificationKey": "5b32",
                    "resources": {"requests": {"memory": "2Gi"}}}}})  # fmt: skip
    docs = render(values, tmp_path)
    validate_all(docs, tmp_path)
    command = init(docs, "genesis")["command"]
    assert command[command.index("--timeout") + 1] == "15"
    restore = init(docs, "mithril-restore")
    env = {e["name"]: e["value"] for e in restore["env"]}
    assert env == {"AGGREGATOR_ENDPOINT": "https://aggregator.example.com/aggregator",
                   "GENESIS_VERIFICATION_KEY": "5b31", "ANCILLARY_VERIFICATION_KEY": "5b32",
                   "SNAPSHOT": "a1b2c3", "HOME": "/tmp"}  # fmt: skip
    assert restore["image"] == "ghcr.io/input-output-hk/mithril-client:9999.0"
    assert restore["imagePullPolicy"] == "Always"
    assert restore["resources"] == {"requests": {"memory": "2Gi"}}
