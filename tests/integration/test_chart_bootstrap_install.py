"""A fresh ``helm install`` with only the network and the relays, on the real control plane, and
the genesis init container it rendered, run as the kubelet would run it.

The API server accepts every object (its own validation); the ConfigMap and the StatefulSet are
read back from it, the init container's command runs with its mounts laid out locally and the
published base URL replaced by a loopback server holding preprod's real genesis files: every file
is fetched and verified against the hashes of the rendered configuration. The node's own command
line names that configuration, that topology and that directory.
"""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from kubernetes import client

from tests.harness.controlplane import ControlPlane
from tests.harness.helm import install_chart

pytestmark = [pytest.mark.integration, pytest.mark.chart, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
PREPROD_GENESIS = (
    REPO_ROOT / "services" / "forge-manager" / "tests" / "fixtures" / "genesis-preprod"
)
FULLNAME = "bp-cardano-forge"


def test_network_and_relays_are_enough(
    control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    namespace = kube_namespace
    values = {
        "crds": {"enabled": False},  # cluster-wide: other tests share this API server
        "node": {
            "network": "preprod",
            "topology": {"relays": [{"address": "relay1.example.com", "port": 3001},
                                    {"address": "relay2.example.com", "port": 3001}]},
        },
    }  # fmt: skip
    install_chart(control_plane.kubeconfig, tmp_path, "bp", namespace, values)

    with control_plane.api_client() as api:
        config_map = client.CoreV1Api(api).read_namespaced_config_map(
            f"{FULLNAME}-node-config", namespace
        )
        pod = client.AppsV1Api(api).read_namespaced_stateful_set(FULLNAME, namespace).spec.template
    config = json.loads(config_map.data["config.json"])
    topology = json.loads(config_map.data["topology.json"])
    assert config["ShelleyGenesisFile"] == "/opt/cardano/genesis/shelley-genesis.json"
    assert [p["address"] for p in topology["localRoots"][0]["accessPoints"]] == [
        "relay1.example.com",
        "relay2.example.com",
    ]
    (node,) = pod.spec.containers
    args = node.args
    assert args[args.index("--config") + 1] == "/opt/cardano/config/config.json"
    assert args[args.index("--topology") + 1] == "/opt/cardano/config/topology.json"
    assert "--start-as-non-producing-node" in args
    genesis = pod.spec.init_containers[0]
    assert genesis.name == "genesis"
    mounts = {m.mount_path: m.name for m in genesis.volume_mounts}
    assert mounts == {"/opt/cardano/config": "node-config", "/opt/cardano/genesis": "genesis"}
    node_mounts = {m.mount_path: m.name for m in node.volume_mounts}
    assert node_mounts["/opt/cardano/genesis"] == "genesis"

    # The kubelet's part: the ConfigMap and an empty genesis directory, then the command.
    config_dir, genesis_dir, www = tmp_path / "config", tmp_path / "genesis", tmp_path / "www"
    for d in (config_dir, genesis_dir, www / "environments" / "preprod"):
        d.mkdir(parents=True)
    for key, text in config_map.data.items():
        (config_dir / key).write_text(text)
    for f in PREPROD_GENESIS.glob("*.json"):
        (www / "environments" / "preprod" / f.name).write_bytes(f.read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        command = list(genesis.command)
        base = command.index("--base-url") + 1
        assert command[base] == "https://book.play.dev.cardano.org/environments/preprod"
        command[base] = f"http://127.0.0.1:{httpd.server_address[1]}/environments/preprod"
        local = {"/opt/cardano/config/config.json": str(config_dir / "config.json"),
                 "/opt/cardano/genesis": str(genesis_dir)}  # fmt: skip
        command = [local.get(a, a) for a in command]
        assert command[:3] == ["python", "-m", "forge_manager.bootstrap"]
        run = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True,
                             timeout=120, check=False)  # fmt: skip
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in genesis_dir.iterdir()) == [
        "alonzo-genesis.json", "byron-genesis.json", "conway-genesis.json",
        "shelley-genesis.json"]  # fmt: skip
