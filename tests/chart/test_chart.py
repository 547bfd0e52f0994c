"""The Helm chart, rendered by the real ``helm template`` across a matrix of values.

Every rendered object is validated against the Kubernetes schemas (kubernetes-validate, strict);
the CardanoForgeCluster against the CRD's own schema; the PrometheusRule's groups with promtool.
The properties the pool's safety rests on (native sidecar gating the node, non-producing start,
tmpfs credentials, shared process namespace, one UID, least-privilege RBAC) are asserted on the
rendered objects, and so are the values schema's and the templates' refusals.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from forge_manager.node_sync import load_node_sync_settings

from tests.harness.controlplane import tool

pytestmark = pytest.mark.chart

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "cardano-forge"
CRD_FILE = REPO_ROOT / "crds" / "cardanoforgeclusters.cardano.io.yaml"
RULES_FILE = REPO_ROOT / "alerts" / "cardano-forge.rules.yml"
KUBE_VERSION = "1.34.0"
NAMESPACE = "cardano"
RELEASE = "bp"
CFC_API = "cardano.io/v1/CardanoForgeCluster"
SEED_STARTUP_PROBE = {
    "httpGet": {"path": "/startup-status", "port": 8000},
    "initialDelaySeconds": 5,
    "periodSeconds": 3,
    "timeoutSeconds": 2,
    "failureThreshold": 60,
    "successThreshold": 1,
}
BASE: dict[str, Any] = {
    "pool": {"name": "POOL1"},
    "forgeManager": {"credentials": {"secretName": "pool1-keys"}},
}
CLUSTER_MANAGEMENT: dict[str, Any] = {
    "forgeManager": {
        "clusterManagement": {
            "enabled": True,
            "clusterName": "us-east-1-prod",
            "priority": 1,
            "healthCheck": {
                "enabled": True,
                "endpoint": "https://monitoring.example.com/api/v1/health/cluster/us-east-1",
                "interval": 30,
                "timeout": 10,
                "failureThreshold": 3,
            },
        }
    }
}


def helm() -> str:
    return tool("helm")


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        _merge_into(out, copy.deepcopy(layer))
    return out


def _merge_into(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge_into(dst[key], value)
        else:
            dst[key] = value


def helm_template(
    values: dict[str, Any], tmp_path: Path, *, api_versions: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    args = [
        helm(),
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        "-f",
        str(values_file),
    ]
    for api in api_versions:
        args += ["--api-versions", api]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def render(
    values: dict[str, Any], tmp_path: Path, *, api_versions: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    result = helm_template(values, tmp_path, api_versions=api_versions)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def refusal(values: dict[str, Any], tmp_path: Path) -> str:
    result = helm_template(values, tmp_path)
    assert result.returncode != 0, "helm template accepted values it must refuse"
    return result.stderr


def only(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{len(found)} {kind} objects named *{name_suffix}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_FILE.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def validate_all(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    """Every object against its schema: Kubernetes', the CRD's, or promtool for the rules."""
    for doc in docs:
        kind = doc["kind"]
        if kind == "CardanoForgeCluster":
            jsonschema.Draft4Validator(crd_schema()).validate(doc)
        elif kind == "PrometheusRule":
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            rules = tmp_path / "rendered.rules.yml"
            rules.write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}))
            promtool = shutil.which("promtool") or str(REPO_ROOT / ".tools" / "bin" / "promtool")
            check = subprocess.run(
                [promtool, "check", "rules", str(rules)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert check.returncode == 0, check.stdout + check.stderr
        elif kind == "ServiceMonitor":
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            assert doc["spec"]["endpoints"]
        else:
            kubernetes_validate.validate(doc, KUBE_VERSION.rsplit(".", 1)[0], strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/component"], doc["metadata"]["name"]


# --------------------------------------------------------------------------- the matrix

MATRIX: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "defaults": (BASE, ()),
    "startup-probe-off": (
        merged(BASE, {"healthChecks": {"forgeManager": {"startupProbe": {"enabled": False}}}}),
        (),
    ),
    "cluster-management-on": (merged(BASE, CLUSTER_MANAGEMENT), ()),
    "cluster-management-creates-resource": (
        merged(
            BASE,
            CLUSTER_MANAGEMENT,
            {"forgeManager": {"clusterManagement": {"createResource": True}}},
        ),
        (CFC_API,),
    ),
    "cluster-management-remote-api": (
        merged(
            BASE,
            CLUSTER_MANAGEMENT,
            {
                "forgeManager": {
                    "clusterManagement": {
                        "coordination": {
                            "kubeconfigSecret": "coordination-kubeconfig",
                            "namespace": "cardano-pool",
                        }
                    }
                }
            },
        ),
        (),
    ),
    "health-check-off": (
        merged(
            BASE,
            CLUSTER_MANAGEMENT,
            {"forgeManager": {"clusterManagement": {"healthCheck": {"enabled": False}}}},
        ),
        (),
    ),
    "health-endpoint-on": (
        merged(
            BASE,
            CLUSTER_MANAGEMENT,
            {
                "forgeManager": {"clusterManagement": {"healthCheck": {"endpoint": ""}}},
                "healthEndpoint": {
                    "enabled": True,
                    "prometheusUrl": "http://prometheus-operated.monitoring:9090",
                    "checks": "rules: []\n",
                },
            },
        ),
        (),
    ),
    "monitoring-on": (
        merged(BASE, {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}),
        (),
    ),
    "forge-guard-off": (merged(BASE, {"forgeGuard": {"enabled": False}}), ()),
    "node-sync-off": (merged(BASE, {"forgeManager": {"nodeSync": {"enabled": False}}}), ()),
    "node-sync-custom-network": (
        merged(
            BASE,
            {
                "forgeManager": {
                    "nodeSync": {
                        "network": "custom",
                        "custom": {"shelleyStartSlot": 0, "shelleyStartTime": "1700000000"},
                    }
                }
            },
        ),
        (),
    ),
    "everything-off": (
        merged(
            BASE,
            {
                "crds": {"enabled": False},
                "forgeGuard": {"enabled": False},
                "networkPolicy": {"enabled": False},
                "podDisruptionBudget": {"enabled": False},
                "serviceAccount": {"create": False, "name": "existing"},
            },
        ),
        (),
    ),
}


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_renders_valid_objects(case: str, tmp_path: Path) -> None:
    values, apis = MATRIX[case]
    docs = render(values, tmp_path, api_versions=apis)
    validate_all(docs, tmp_path)
    assert len({(d["kind"], d["metadata"]["name"]) for d in docs}) == len(docs), "duplicates"


def test_helm_lint(tmp_path: Path) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(merged(BASE, CLUSTER_MANAGEMENT)))
    result = subprocess.run(
        [
            helm(),
            "lint",
            "--strict",
            str(CHART),
            "--kube-version",
            KUBE_VERSION,
            "-f",
            str(values_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_default_objects(tmp_path: Path) -> None:
    docs = render(BASE, tmp_path)
    assert kinds(docs) == [
        "ConfigMap",  # the node configuration and topology (node.network)
        "CustomResourceDefinition",
        "NetworkPolicy",
        "Pod",  # the helm test hook
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "Service",
        "Service",  # the peer Service (node.service)
        "ServiceAccount",
        "StatefulSet",
    ]


# --------------------------------------------------------------------------- helm test


def release_test(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = only(docs, "Pod", "-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    return pod


def test_helm_test_hook_checks_every_pod_with_the_forge_manager_image(tmp_path: Path) -> None:
    docs = render(merged(BASE, {"replicas": 3}), tmp_path)
    pod = release_test(docs)
    sts = only(docs, "StatefulSet")
    (container,) = pod["spec"]["containers"]
    assert container["image"] == sidecar_of(pod_spec(docs))["image"]
    assert container["command"][:2] == ["python3", "-c"]
    assert container["command"][2] == (CHART / "files" / "release-test.py").read_text()
    env = {e["name"]: e["value"] for e in container["env"]}
    name = sts["metadata"]["name"]
    assert env["PODS"] == f"{name}-0,{name}-1,{name}-2"
    assert env["POD_DOMAIN"] == f"{sts['spec']['serviceName']}.{NAMESPACE}.svc"
    assert "POOL_LEASE_NAME" not in env  # no cluster management: one forger in the release
    assert pod["spec"]["serviceAccountName"] == pod_spec(docs)["serviceAccountName"]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # Removed after success (helm uninstall leaves hook pods behind), kept after a failure.
    policy = pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    assert policy == "before-hook-creation,hook-succeeded"


def test_helm_test_hook_reads_the_pool_lease_where_the_managers_coordinate(
    tmp_path: Path,
) -> None:
    docs = render(merged(BASE, CLUSTER_MANAGEMENT), tmp_path)
    env = {e["name"]: e["value"] for e in release_test(docs)["spec"]["containers"][0]["env"]}
    sidecar = sidecar_env(docs)
    assert env["POOL_LEASE_NAME"] == sidecar["POOL_LEASE_NAME"]
    assert env["COORDINATION_NAMESPACE"] == sidecar["COORDINATION_NAMESPACE"]
    assert env["REGION"] == sidecar["CLUSTER_NAME"] == "us-east-1-prod"
    values, _ = MATRIX["cluster-management-remote-api"]
    pod = release_test(render(values, tmp_path))
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["COORDINATION_KUBECONFIG"] == "/var/run/cardano-forge/coordination/kubeconfig"
    secret = pod_spec(render(values, tmp_path))["volumes"]
    assert pod["spec"]["volumes"][0]["secret"] == next(
        v["secret"] for v in secret if v["name"] == "coordination-kubeconfig"
    )
    assert container["volumeMounts"][0]["mountPath"] == "/var/run/cardano-forge/coordination"


# --------------------------------------------------------------------------- the pod


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = only(docs, "StatefulSet")["spec"]["template"]["spec"]
    return spec


def sidecar_of(spec: dict[str, Any]) -> dict[str, Any]:
    (sidecar,) = [c for c in spec["initContainers"] if c["name"] == "forge-manager"]
    return sidecar


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in container["volumeMounts"]}


def test_forge_manager_is_a_native_sidecar_gating_the_node(tmp_path: Path) -> None:
    spec = pod_spec(render(BASE, tmp_path))
    sidecar = sidecar_of(spec)
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"] == SEED_STARTUP_PROBE
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/health"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/health"
    (node,) = spec["containers"]
    assert node["name"] == "cardano-node"
    assert node["command"][-1] == "cardano-node"
    assert node["args"][0] == "run"
    assert "--start-as-non-producing-node" in node["args"]
    assert "startupProbe" not in node


def test_startup_probe_can_be_disabled_and_tuned(tmp_path: Path) -> None:
    off = merged(BASE, {"healthChecks": {"forgeManager": {"startupProbe": {"enabled": False}}}})
    sidecar = sidecar_of(pod_spec(render(off, tmp_path)))
    assert "startupProbe" not in sidecar
    tuned = merged(
        BASE,
        {
            "healthChecks": {
                "forgeManager": {
                    "startupProbe": {
                        "initialDelaySeconds": 10,
                        "periodSeconds": 5,
                        "failureThreshold": 36,
                    }
                }
            }
        },
    )
    sidecar = sidecar_of(pod_spec(render(tuned, tmp_path)))
    assert sidecar["startupProbe"] == {
        **SEED_STARTUP_PROBE,
        "initialDelaySeconds": 10,
        "periodSeconds": 5,
        "failureThreshold": 36,
    }


@pytest.mark.parametrize("guard", [True, False], ids=["guard-on", "guard-off"])
def test_credentials_on_tmpfs_shared_by_both_containers(guard: bool, tmp_path: Path) -> None:
    spec = pod_spec(render(merged(BASE, {"forgeGuard": {"enabled": guard}}), tmp_path))
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["credentials"]["emptyDir"]["medium"] == "Memory"
    assert volumes["credentials-source"]["secret"]["secretName"] == "pool1-keys"
    sidecar, node = sidecar_of(spec), spec["containers"][0]
    assert mounts(sidecar)["credentials"]["mountPath"] == "/opt/cardano/secrets"
    assert mounts(node)["credentials"]["mountPath"] == "/opt/cardano/secrets"
    # Without the guard the node only reads them; forge-guard, in the node's container, must be
    # able to remove them.
    assert mounts(node)["credentials"].get("readOnly", False) is not guard
    assert "credentials-source" not in mounts(node), "the node must not see the Secret"
    assert mounts(sidecar)["ipc"]["mountPath"] == mounts(node)["ipc"]["mountPath"] == "/ipc"
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["NODE_SOCKET"] == "/ipc/node.socket"
    assert "--socket-path" in node["args"]
    assert node["args"][node["args"].index("--socket-path") + 1] == "/ipc/node.socket"
    for flag, target in [
        ("--shelley-kes-key", "TARGET_KES_KEY"),
        ("--shelley-vrf-key", "TARGET_VRF_KEY"),
        ("--shelley-operational-certificate", "TARGET_OP_CERT"),
    ]:
        assert node["args"][node["args"].index(flag) + 1] == env[target]


def test_one_uid_shared_process_namespace_restricted(tmp_path: Path) -> None:
    spec = pod_spec(render(BASE, tmp_path))
    assert spec["shareProcessNamespace"] is True
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] >= 1
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["initContainers"] + spec["containers"]:
        sc = container["securityContext"]
        assert "runAsUser" not in sc and "runAsGroup" not in sc, "one UID for both, from the pod"
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


# --------------------------------------------------------------------------- forge-guard

PERMIT = "/run/forge/permit"


def guard_flags(node: dict[str, Any]) -> dict[str, str]:
    """forge-guard's ``--flag value`` pairs, before the ``--`` that starts the node's command."""
    command = node["command"]
    flags = command[1 : command.index("--")]
    assert len(flags) % 2 == 0, flags
    return dict(zip(flags[::2], flags[1::2], strict=True))


def test_forge_guard_is_on_by_default_and_wraps_the_node(tmp_path: Path) -> None:
    docs = render(BASE, tmp_path)
    spec = pod_spec(docs)
    node = spec["containers"][0]
    # The node's command: forge-guard, its flags, then cardano-node with unchanged arguments.
    assert node["command"][0] == "/forge-bin/forge-guard"
    assert node["command"][-2:] == ["--", "cardano-node"]
    env = sidecar_env(docs)
    flags = guard_flags(node)
    assert flags == {
        "--permit-file": PERMIT,
        "--credentials": ",".join(
            [env["TARGET_KES_KEY"], env["TARGET_VRF_KEY"], env["TARGET_OP_CERT"]]
        ),
        # The guard signals only a node that answered here; the manager watches the same socket.
        "--socket": env["NODE_SOCKET"],
    }
    assert node["args"][node["args"].index("--socket-path") + 1] == env["NODE_SOCKET"]
    for flag in ("--shelley-kes-key", "--shelley-vrf-key", "--shelley-operational-certificate"):
        assert node["args"][node["args"].index(flag) + 1] in flags["--credentials"].split(",")
    assert node["args"][0] == "run"
    assert "--start-as-non-producing-node" in node["args"]
    # The manager writes the permit where the guard reads it: one memory-backed emptyDir.
    assert env["FORGE_PERMIT_FILE"] == PERMIT
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["run"]["emptyDir"]["medium"] == "Memory"
    sidecar = sidecar_of(spec)
    for container in (sidecar, node):
        run = mounts(container)["run"]
        assert run["mountPath"] == "/run/forge" == str(Path(PERMIT).parent)
        assert not run.get("readOnly", False), "the manager writes it, the guard its own record"


def test_forge_guard_is_installed_from_the_forge_manager_image(tmp_path: Path) -> None:
    spec = pod_spec(render(BASE, tmp_path))
    genesis, install, sidecar = spec["initContainers"]  # genesis: node.genesis (bootstrap)
    assert genesis["name"] == "genesis"
    # A regular init container, before the sidecar: done before the node can start.
    assert install["name"] == "install-forge-guard"
    assert "restartPolicy" not in install
    assert sidecar["name"] == "forge-manager"
    assert install["image"] == sidecar["image"] == "ghcr.io/cardano-forge/forge-manager:0.1.0"
    assert install["command"] == ["cp", "/usr/local/bin/forge-guard", "/forge-bin/forge-guard"]
    assert mounts(install)["forge-bin"]["mountPath"] == "/forge-bin"
    assert not mounts(install)["forge-bin"].get("readOnly", False)
    node = spec["containers"][0]
    assert mounts(node)["forge-bin"] == {
        "name": "forge-bin",
        "mountPath": "/forge-bin",
        "readOnly": True,
    }
    assert "forge-bin" not in mounts(sidecar)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["forge-bin"]
    tagged = merged(BASE, {"forgeManager": {"image": {"tag": "1.2.3"}}})
    _, install, sidecar = pod_spec(render(tagged, tmp_path))["initContainers"]
    assert install["image"] == sidecar["image"] == "ghcr.io/cardano-forge/forge-manager:1.2.3"


def dockerfile(service: str) -> str:
    return (REPO_ROOT / "services" / service / "Dockerfile").read_text()


@pytest.mark.parametrize(
    ("service", "values_key"),
    [("forge-manager", "forgeManager"), ("health-endpoint", "healthEndpoint")],
)
def test_images_are_the_dockerfiles(service: str, values_key: str, tmp_path: Path) -> None:
    """The chart's default images are what the Dockerfiles build: name, user, entrypoint."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    text = dockerfile(service)
    image = f"{values[values_key]['image']['repository']}:{chart['appVersion']}"
    assert f"-t {image} ." in text, f"the build command in the Dockerfile must tag {image}"
    user = values["podSecurityContext"]
    assert re.search(rf"^USER {user['runAsUser']}:{user['runAsGroup']}$", text, re.M)
    assert re.search(r"^ENTRYPOINT \[.+\]$", text, re.M)
    # The chart relies on the entrypoint: it sets no command of its own for these containers.
    everything = merged(
        BASE,
        CLUSTER_MANAGEMENT,
        {"healthEndpoint": {"enabled": True, "prometheusUrl": "http://prometheus:9090"}},
    )
    docs = render(everything, tmp_path)
    containers = [
        c
        for d in docs
        if d["kind"] in {"StatefulSet", "Deployment"}
        for c in d["spec"]["template"]["spec"].get("initContainers", [])
        + d["spec"]["template"]["spec"]["containers"]
        if c["image"] == image
    ]
    assert containers
    assert [c["name"] for c in containers if "command" not in c] == [
        {"forge-manager": "forge-manager", "health-endpoint": "health-endpoint"}[service]
    ]


def test_forge_manager_image_ships_forge_guard_where_the_chart_copies_it(tmp_path: Path) -> None:
    (install,) = [
        c for c in pod_spec(render(BASE, tmp_path))["initContainers"]
        if c["name"] == "install-forge-guard"
    ]  # fmt: skip
    source = install["command"][1]
    assert re.search(
        rf"^COPY --from=\S+ \S*/forge-guard {re.escape(source)}$", dockerfile("forge-manager"), re.M
    ), f"the forge-manager image must install forge-guard at {source}"
    # Static, so that it runs in the node's image whatever its C library.
    assert "CGO_ENABLED=0" in dockerfile("forge-manager")


def test_forge_guard_off_leaves_the_node_command_alone(tmp_path: Path) -> None:
    docs = render(merged(BASE, {"forgeGuard": {"enabled": False}}), tmp_path)
    spec = pod_spec(docs)
    node = spec["containers"][0]
    assert node["command"] == ["cardano-node"]
    assert [c["name"] for c in spec["initContainers"]] == ["genesis", "forge-manager"]
    assert "FORGE_PERMIT_FILE" not in sidecar_env(docs)
    assert not {"run", "forge-bin"} & {v["name"] for v in spec["volumes"]}
    assert not {"run", "forge-bin"} & set(mounts(node))
    assert "run" not in mounts(sidecar_of(spec))


def forge_guard_binary() -> str:
    candidate = REPO_ROOT / ".tools" / "bin" / "forge-guard"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("forge-guard")
    if found is None:
        pytest.fail("forge-guard not found in .tools/bin or on PATH: run 'make tools'")
    return found


def test_rendered_guard_command_revokes_an_expired_permit(tmp_path: Path) -> None:
    """The rendered forge-guard flags, run for real with the volumes moved to local directories.

    The node is the cardano-node stand-in, given the rendered node's socket, key paths and
    non-producing flag. A permit whose deadline passes while the node runs must make the guard
    remove exactly the three credential files the node reads and signal the node once its socket
    answered, leaving the manager's permit as it was: proof that the chart's flags say what the
    guard needs (a wrong path or separator would leave the credentials in place, a wrong socket
    would make the guard stop the node instead of signalling it).
    """
    node = pod_spec(render(BASE, tmp_path))["containers"][0]
    local = {m["mountPath"]: tmp_path / m["name"] for m in node["volumeMounts"]}
    for directory in local.values():
        directory.mkdir(exist_ok=True)

    def move(value: str) -> str:
        for mount_path, directory in local.items():
            if value.startswith(mount_path + "/"):
                return str(directory / value.removeprefix(mount_path + "/"))
        return value

    def node_arg(flag: str) -> str:
        return move(node["args"][node["args"].index(flag) + 1])

    flags = guard_flags(node)
    credentials = [Path(move(c)) for c in flags["--credentials"].split(",")]
    for path in credentials:
        path.write_text('{"type": "t", "cborHex": "5820"}\n')
    unrelated = credentials[0].with_name("keep.me")
    unrelated.write_text("not a credential\n")
    permit = Path(move(flags["--permit-file"]))
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    deadline = time.clock_gettime_ns(time.CLOCK_BOOTTIME) + 3_000_000_000  # after the node is up
    permit.write_text(f"boottime {deadline} {boot}\n")
    args = [forge_guard_binary()]
    for flag, value in flags.items():
        args += [flag, ",".join(move(v) for v in value.split(","))]
    events = tmp_path / "node-events.jsonl"
    standin = [
        sys.executable, "-m", "tests.harness.node_standin",
        "--name", f"cn{uuid.uuid4().hex[:6]}",
        "--event-log", str(events),
        "--startup-delay", "0.2",
        *[a for f in ("--socket-path", "--shelley-kes-key", "--shelley-vrf-key",
                      "--shelley-operational-certificate") for a in (f, node_arg(f))],
        *[a for a in node["args"] if a == "--start-as-non-producing-node"],
    ]  # fmt: skip
    log = tmp_path / "guard.log"
    with log.open("wb") as out:
        guard = subprocess.Popen([*args, "--", *standin], stderr=out, cwd=REPO_ROOT)
    try:
        give_up = time.monotonic() + 30
        while "sent SIGHUP" not in log.read_text() and time.monotonic() < give_up:
            time.sleep(0.05)
        assert "sent SIGHUP" in log.read_text(), log.read_text()
    finally:
        guard.terminate()  # forwarded: the stand-in exits, then the guard
        code = guard.wait(30)
    assert code == 0, log.read_text()
    assert not [p for p in credentials if p.exists()], log.read_text()
    assert unrelated.exists()
    assert permit.read_text() == f"boottime {deadline} {boot}\n"  # never written by the guard
    assert permit.with_name("permit.revoked").read_text().startswith("revoked ")
    kinds = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert "socket_up" in kinds and "sighup_ignored" not in kinds, kinds


REQUIRED_ENV = {
    "POD_NAME",
    "NAMESPACE",
    "LEASE_NAME",
    "LEASE_DURATION",
    "LEASE_RENEW_DEADLINE",
    "LEASE_RETRY_PERIOD",
    "METRICS_PORT",
    "SOURCE_KES_KEY",
    "SOURCE_VRF_KEY",
    "SOURCE_OP_CERT",
    "TARGET_KES_KEY",
    "TARGET_VRF_KEY",
    "TARGET_OP_CERT",
    "NODE_SOCKET",
    "CARDANO_NODE_PROCESS_NAME",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "ENABLE_CLUSTER_MANAGEMENT",
}
CLUSTER_ENV = {
    "CLUSTER_NAME",
    "CLUSTER_PRIORITY",
    "HEALTH_CHECK_ENDPOINT",
    "HEALTH_CHECK_INTERVAL",
    "HEALTH_CHECK_TIMEOUT",
    "HEALTH_CHECK_FAILURE_THRESHOLD",
    "CLUSTER_CRD_GROUP",
    "CLUSTER_CRD_VERSION",
    "CLUSTER_CRD_PLURAL",
    "CLUSTER_CRD_NAME",
    "COORDINATION_NAMESPACE",
    "POOL_LEASE_NAME",
}


def sidecar_env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    sidecar = sidecar_of(pod_spec(docs))
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in sidecar["env"]}


def test_environment_without_cluster_management(tmp_path: Path) -> None:
    env = sidecar_env(render(BASE, tmp_path))
    assert set(env) >= REQUIRED_ENV
    assert env["ENABLE_CLUSTER_MANAGEMENT"] == "false"
    assert not (set(env) & (CLUSTER_ENV - {"CLUSTER_NAME"}))
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["SOURCE_KES_KEY"] == "/var/run/cardano-forge/source/kes.skey"


def test_environment_with_cluster_management(tmp_path: Path) -> None:
    env = sidecar_env(render(merged(BASE, CLUSTER_MANAGEMENT), tmp_path))
    assert set(env) >= REQUIRED_ENV | CLUSTER_ENV
    assert env["ENABLE_CLUSTER_MANAGEMENT"] == "true"
    assert env["CLUSTER_NAME"] == env["CLUSTER_CRD_NAME"] == "us-east-1-prod"
    assert (env["CLUSTER_CRD_GROUP"], env["CLUSTER_CRD_VERSION"]) == ("cardano.io", "v1")
    assert env["CLUSTER_CRD_PLURAL"] == "cardanoforgeclusters"
    assert (env["HEALTH_CHECK_INTERVAL"], env["HEALTH_CHECK_TIMEOUT"]) == ("30", "10")
    assert "COORDINATION_KUBECONFIG" not in env


def test_remote_coordination_kubeconfig_is_mounted(tmp_path: Path) -> None:
    values, _ = MATRIX["cluster-management-remote-api"]
    docs = render(values, tmp_path)
    env = sidecar_env(docs)
    assert env["COORDINATION_KUBECONFIG"] == "/var/run/cardano-forge/coordination/kubeconfig"
    assert env["COORDINATION_NAMESPACE"] == "cardano-pool"
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["coordination-kubeconfig"]["secret"]["secretName"] == "coordination-kubeconfig"
    # The coordination API is another server: no local Role for it.
    assert [r["metadata"]["name"] for r in docs if r["kind"] == "Role"] == ["bp-cardano-forge"]


def test_extra_env_and_scheduling_values_reach_the_pod(tmp_path: Path) -> None:
    values = merged(
        BASE,
        {
            "forgeManager": {"extraEnv": [{"name": "KUBE_REQUEST_TIMEOUT", "value": "1"}]},
            "nodeSelector": {"cardano.io/role": "block-producer"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "podAnnotations": {"example.com/team": "spo"},
        },
    )
    docs = render(values, tmp_path)
    assert sidecar_env(docs)["KUBE_REQUEST_TIMEOUT"] == "1"
    spec = pod_spec(docs)
    assert spec["nodeSelector"] == {"cardano.io/role": "block-producer"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    template = only(docs, "StatefulSet")["spec"]["template"]
    assert template["metadata"]["annotations"]["example.com/team"] == "spo"


# --------------------------------------------------------------------------- selectors


def test_selectors_match_the_pods(tmp_path: Path) -> None:
    values = merged(BASE, {"serviceMonitor": {"enabled": True}})
    docs = render(values, tmp_path)
    sts = only(docs, "StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    container_ports = {
        p["name"]
        for c in pod_spec(docs)["initContainers"] + pod_spec(docs)["containers"]
        for p in c.get("ports", [])
    }

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in selector.items())

    assert selects(sts["spec"]["selector"]["matchLabels"], pod_labels)
    assert set(sts["spec"]["selector"]["matchLabels"]) == {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
    }
    headless = only(docs, "Service", "-headless")
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    for svc in (headless, only(docs, "Service", "-metrics")):
        assert selects(svc["spec"]["selector"], pod_labels)
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= container_ports
    assert selects(only(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    policy = only(docs, "NetworkPolicy")
    assert selects(policy["spec"]["podSelector"]["matchLabels"], pod_labels)
    policy_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert policy_ports <= container_ports
    assert policy_ports >= {"node", "fm-metrics", "node-metrics"}
    monitor = only(docs, "ServiceMonitor")
    assert selects(
        monitor["spec"]["selector"]["matchLabels"],
        only(docs, "Service", "-metrics")["metadata"]["labels"],
    )
    assert not selects(monitor["spec"]["selector"]["matchLabels"], headless["metadata"]["labels"])


# --------------------------------------------------------------------------- RBAC


def rules_by_role(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {d["metadata"]["name"]: d["rules"] for d in docs if d["kind"] == "Role"}


def test_rbac_without_cluster_management(tmp_path: Path) -> None:
    docs = render(BASE, tmp_path)
    roles = rules_by_role(docs)
    assert roles == {
        "bp-cardano-forge": [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": ["cardano-node-leader"],
                "verbs": ["get", "list", "watch", "update"],
            },
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        ]
    }
    quiet = rules_by_role(
        render(merged(BASE, {"forgeManager": {"events": {"enabled": False}}}), tmp_path)
    )
    assert not [r for rules in quiet.values() for r in rules if "events" in r["resources"]]
    assert not [d for d in docs if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    binding = only(docs, "RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "bp-cardano-forge", "namespace": NAMESPACE}
    ]


def test_rbac_with_cluster_management(tmp_path: Path) -> None:
    docs = render(merged(BASE, CLUSTER_MANAGEMENT), tmp_path)
    roles = rules_by_role(docs)
    coordination = roles["bp-cardano-forge-coordination"]
    assert {
        "apiGroups": ["cardano.io"],
        "resources": ["cardanoforgeclusters"],
        "verbs": ["get", "list", "watch", "create"],
    } in coordination
    assert {
        "apiGroups": ["cardano.io"],
        "resources": ["cardanoforgeclusters"],
        "resourceNames": ["us-east-1-prod"],
        "verbs": ["update", "patch"],
    } in coordination
    assert {
        "apiGroups": ["cardano.io"],
        "resources": ["cardanoforgeclusters/status"],
        "resourceNames": ["us-east-1-prod"],
        "verbs": ["get", "update", "patch"],
    } in coordination
    assert {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["create", "list", "watch"],
    } in coordination
    named_leases = [
        r for r in coordination if r.get("resourceNames") and "leases" in r["resources"]
    ]
    assert named_leases == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["cardano-forge-pool", "cardano-forge-pool-us-east-1-prod"],
            "verbs": ["get", "update"],
        }
    ]
    assert {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]} in coordination


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_rbac_never_grants_secrets_delete_or_wildcards(case: str, tmp_path: Path) -> None:
    values, apis = MATRIX[case]
    docs = render(values, tmp_path, api_versions=apis)
    for name, rules in rules_by_role(docs).items():
        for rule in rules:
            assert "secrets" not in rule["resources"], name
            assert not {"delete", "deletecollection", "*", "escalate", "bind", "impersonate"} & set(
                rule["verbs"]
            ), (name, rule)
            assert "*" not in rule["resources"] and "*" not in rule["apiGroups"], (name, rule)
            if set(rule["verbs"]) & {"update", "patch"}:
                assert rule.get("resourceNames"), f"{name}: unrestricted write {rule}"


# --------------------------------------------------------------------------- CRD and resource


def test_chart_crd_file_is_identical_to_crds_dir() -> None:
    copy_ = CHART / "files" / "crds" / CRD_FILE.name
    assert copy_.read_bytes() == CRD_FILE.read_bytes(), f"run: cp {CRD_FILE} {copy_}"


def test_chart_rules_file_is_identical_to_alerts_dir() -> None:
    copy_ = CHART / "files" / RULES_FILE.name
    assert copy_.read_bytes() == RULES_FILE.read_bytes(), f"run: cp {RULES_FILE} {copy_}"


def without_helm_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"].pop("annotations", None)
    obj["metadata"].pop("labels", None)
    return obj


def test_rendered_crd_is_the_crds_dir_one_kept_on_uninstall(tmp_path: Path) -> None:
    crd = only(render(BASE, tmp_path), "CustomResourceDefinition")
    source = yaml.safe_load(CRD_FILE.read_text())
    assert without_helm_metadata(crd) == without_helm_metadata(source)
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    not_kept = only(
        render(merged(BASE, {"crds": {"keep": False}}), tmp_path), "CustomResourceDefinition"
    )
    assert "annotations" not in not_kept["metadata"]
    assert "CustomResourceDefinition" not in kinds(
        render(merged(BASE, {"crds": {"enabled": False}}), tmp_path)
    )


def test_region_resource_from_values(tmp_path: Path) -> None:
    values, apis = MATRIX["cluster-management-creates-resource"]
    cfc = only(render(values, tmp_path, api_versions=apis), "CardanoForgeCluster")
    assert cfc["metadata"]["name"] == "us-east-1-prod"
    assert cfc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert cfc["spec"] == {
        "region": "us-east-1-prod",
        "priority": 1,
        "forgeState": "Priority-based",
        "healthCheck": {
            "enabled": True,
            "endpoint": "https://monitoring.example.com/api/v1/health/cluster/us-east-1",
            "interval": "30s",
            "timeout": "10s",
            "failureThreshold": 3,
        },
    }
    assert "CardanoForgeCluster" not in kinds(render(merged(BASE, CLUSTER_MANAGEMENT), tmp_path))


# --------------------------------------------------------------------------- monitoring


def alert_job() -> str:
    rules = yaml.safe_load(RULES_FILE.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "CardanoForgeManagerDown":
                match = re.search(r'job="([^"]+)"', rule["expr"])
                assert match
                return match.group(1)
    raise AssertionError("CardanoForgeManagerDown not found")


def test_monitoring_off_by_default(tmp_path: Path) -> None:
    assert not {"ServiceMonitor", "PrometheusRule"} & set(kinds(render(BASE, tmp_path)))


def test_service_monitor_sets_the_labels_the_alerts_assume(tmp_path: Path) -> None:
    docs = render(merged(BASE, {"serviceMonitor": {"enabled": True}}), tmp_path)
    endpoints = {e["port"]: e for e in only(docs, "ServiceMonitor")["spec"]["endpoints"]}
    manager = endpoints["fm-metrics"]
    assert manager["honorLabels"] is True
    assert {"targetLabel": "job", "replacement": alert_job()} in manager["relabelings"]
    for endpoint in endpoints.values():
        assert {"targetLabel": "pool", "replacement": "POOL1"} in endpoint["relabelings"]


def test_prometheus_rule_embeds_the_rules_file(tmp_path: Path) -> None:
    values = merged(BASE, {"prometheusRule": {"enabled": True}})
    rule = only(render(values, tmp_path), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES_FILE.read_text())["groups"]


def test_prometheus_rule_without_pool_wide_group_and_other_runbooks(tmp_path: Path) -> None:
    values = merged(
        BASE,
        {
            "prometheusRule": {
                "enabled": True,
                "poolWideRules": False,
                "runbookBaseURL": "https://wiki.example.com/runbooks/",
            }
        },
    )
    groups = only(render(values, tmp_path), "PrometheusRule")["spec"]["groups"]
    source = yaml.safe_load(RULES_FILE.read_text())["groups"]
    assert [g["name"] for g in groups] == [
        g["name"] for g in source if g["name"] != "cardano-forge-pool-wide"
    ]
    urls = [r["annotations"]["runbook_url"] for g in groups for r in g["rules"]]
    names = [r["alert"] for g in groups for r in g["rules"]]
    assert urls == [f"https://wiki.example.com/runbooks/{n}.md" for n in names]


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replica": 3}, "additional properties 'replica' not allowed"),
        (
            {"forgeManager": {"clusterManagment": {"enabled": True}}},
            "additional properties 'clusterManagment' not allowed",
        ),
        (
            {"healthChecks": {"forgeManager": {"startupProbe": {"periodSecond": 3}}}},
            "additional properties 'periodSecond' not allowed",
        ),
        ({"replicas": "two"}, "got string, want integer"),
        ({"forgeManager": {"clusterManagement": {"priority": 150}}}, "maximum"),
        ({"forgeManager": {"clusterManagement": {"forgeState": "Maybe"}}}, "forgeState"),
        ({"forgeManager": {"logFormat": "xml"}}, "logFormat"),
        ({"podSecurityContext": {"runAsUser": 0}}, "runAsUser"),
        ({"forgeGuard": {"enable": False}}, "additional properties 'enable' not allowed"),
        ({"forgeGuard": {"enabled": "no"}}, "got string, want boolean"),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, dict) else None,
)
def test_schema_rejects(values: dict[str, Any], expected: str, tmp_path: Path) -> None:
    message = refusal(merged(BASE, values), tmp_path)
    assert "values don't meet the specifications of the schema" in message
    assert expected in message, message


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"forgeManager": {"credentials": {"secretName": ""}}},
            "forgeManager.credentials.secretName is required",
        ),
        (
            merged(
                CLUSTER_MANAGEMENT,
                {"forgeManager": {"clusterManagement": {"healthCheck": {"timeout": 30}}}},
            ),
            "healthCheck.timeout (30) must be less than interval (30)",
        ),
        (
            {"forgeManager": {"clusterManagement": {"enabled": True}}},
            "forgeManager.clusterManagement.clusterName is required",
        ),
        (
            merged(
                CLUSTER_MANAGEMENT,
                {"forgeManager": {"clusterManagement": {"healthCheck": {"endpoint": ""}}}},
            ),
            "healthCheck.endpoint is required when healthCheck.enabled is true",
        ),
        (
            merged(
                CLUSTER_MANAGEMENT,
                {"forgeManager": {"clusterManagement": {"createResource": True}}},
            ),
            "needs the CardanoForgeCluster CRD installed before this release",
        ),
        (
            {"forgeManager": {"lease": {"durationSeconds": 10, "renewDeadlineSeconds": 10}}},
            "durationSeconds (10) must exceed renewDeadlineSeconds (10)",
        ),
        (
            {"healthChecks": {"forgeManager": {"startupProbe": {"httpGet": {"port": 9000}}}}},
            "healthChecks.forgeManager.startupProbe.httpGet.port (9000) must be forgeManager.port",
        ),
    ],
    ids=[
        "no-secret",
        "timeout-not-below-interval",
        "no-cluster-name",
        "health-check-without-endpoint",
        "resource-without-crd",
        "lease-timing",
        "probe-port",
    ],
)
def test_templates_refuse_broken_combinations(
    values: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    message = refusal(merged(BASE, values), tmp_path)
    assert expected in message, message


EXAMPLES = sorted((CHART / "examples").glob("values-*.yaml"))


def test_three_region_examples() -> None:
    regions = [yaml.safe_load(p.read_text()) for p in EXAMPLES]
    assert len(regions) == 3
    managed = [r["forgeManager"]["clusterManagement"] for r in regions]
    assert len({m["clusterName"] for m in managed}) == 3
    assert len({m["priority"] for m in managed}) == 3
    assert len({m["coordination"]["poolLeaseName"] for m in managed}) == 1
    assert len({r["pool"]["name"] for r in regions}) == 1


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_region_example_renders_valid_objects(example: Path, tmp_path: Path) -> None:
    docs = render(yaml.safe_load(example.read_text()), tmp_path)
    validate_all(docs, tmp_path)
    env = sidecar_env(docs)
    assert env["CLUSTER_NAME"] == example.stem.removeprefix("values-")
    assert env["COORDINATION_KUBECONFIG"] == "/var/run/cardano-forge/coordination/kubeconfig"


def test_health_endpoint_is_wired_to_the_forge_manager(tmp_path: Path) -> None:
    values, _ = MATRIX["health-endpoint-on"]
    docs = render(values, tmp_path)
    service = only(docs, "Service", "-health")
    deployment = only(docs, "Deployment")
    pod = deployment["spec"]["template"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    port = service["spec"]["ports"][0]["port"]
    assert sidecar_env(docs)["HEALTH_CHECK_ENDPOINT"] == (
        f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{port}"
        "/api/v1/health/cluster/us-east-1-prod"
    )
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PROMETHEUS_URL"] == "http://prometheus-operated.monitoring:9090"
    assert env["HEALTH_CONFIG_FILE"] == "/etc/health-endpoint/checks.yaml"
    assert only(docs, "ConfigMap", "-health")["data"]["checks.yaml"] == "rules: []\n"
    # The block producers' selectors must not pick up the health endpoint's pods.
    health_labels = pod["metadata"]["labels"]
    for obj in docs:
        selector = None
        if obj["kind"] in {"StatefulSet", "PodDisruptionBudget"}:
            selector = obj["spec"]["selector"]["matchLabels"]
        elif obj["kind"] == "NetworkPolicy":
            selector = obj["spec"]["podSelector"]["matchLabels"]
        elif obj["kind"] == "Service" and obj is not service:
            selector = obj["spec"]["selector"]
        if selector is not None:
            assert not selector.items() <= health_labels.items(), obj["metadata"]["name"]


@pytest.mark.parametrize("tls", [False, True])
def test_health_endpoint_liveness_waits_for_its_start(tls: bool, tmp_path: Path) -> None:
    values, _ = MATRIX["health-endpoint-on"]
    if tls:  # the startup probe must speak HTTPS too, or it fails until the pod is killed
        values = merged(values, {"healthEndpoint": {"tls": {"existingSecret": "health-tls"}}})
    (container,) = only(render(values, tmp_path), "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    startup = container["startupProbe"]
    assert startup["httpGet"] == container["livenessProbe"]["httpGet"]
    assert startup["httpGet"]["scheme"] == ("HTTPS" if tls else "HTTP")
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_health_endpoint_needs_prometheus(tmp_path: Path) -> None:
    message = refusal(merged(BASE, {"healthEndpoint": {"enabled": True}}), tmp_path)
    assert "healthEndpoint.prometheusUrl is required" in message


# --------------------------------------------------------------------------- node sync check

SYNC_ENV = ("NODE_METRICS_URL", "NODE_METRICS_TIMEOUT", "CARDANO_NETWORK",
            "NODE_SYNC_MAX_LAG_SLOTS", "NODE_SYNC_GRACE_SECONDS")  # fmt: skip


def test_node_sync_check_is_on_and_reads_the_nodes_own_endpoint(tmp_path: Path) -> None:
    docs = render(BASE, tmp_path)
    env = sidecar_env(docs)
    assert env["NODE_SYNC_CHECK"] == "true"
    assert env["NODE_METRICS_URL"] == "http://127.0.0.1:12798/metrics"
    assert (env["CARDANO_NETWORK"], env["NODE_SYNC_MAX_LAG_SLOTS"]) == ("mainnet", "300")
    assert (env["NODE_SYNC_GRACE_SECONDS"], env["NODE_METRICS_TIMEOUT"]) == ("60", "1")
    assert not {k for k in env if k.startswith("CARDANO_SHELLEY_") or k == "NODE_TIP_METRIC"}
    # The port the URL names is the node container's metrics port.
    (node,) = pod_spec(docs)["containers"]
    ports = {p["name"]: p["containerPort"] for p in node["ports"]}
    assert ports["node-metrics"] == 12798
    # The forge manager accepts what the chart renders.
    settings = load_node_sync_settings({k: str(v) for k, v in env.items()}, interval=2.0)
    assert settings.enabled and settings.network.name == "mainnet"
    assert (settings.max_lag_slots, settings.grace) == (300, 60.0)


def test_node_sync_values_reach_the_forge_manager(tmp_path: Path) -> None:
    values = merged(
        BASE,
        {
            "node": {"metricsPort": 9100},
            "forgeManager": {
                "nodeSync": {
                    "network": "custom",
                    "custom": {"shelleyStartSlot": 86400,
                               "shelleyStartTime": "2022-06-21T00:00:00Z"},
                    "maxLagSlots": 120,
                    "graceSeconds": 30,
                    "metricsTimeoutSeconds": 0.5,
                    "tipMetric": "cardano_node_metrics_slotNum",
                }
            },
        },
    )  # fmt: skip
    env = sidecar_env(render(values, tmp_path))
    assert env["NODE_METRICS_URL"] == "http://127.0.0.1:9100/metrics"
    assert env["CARDANO_SHELLEY_START_SLOT"] == "86400"
    assert env["CARDANO_SHELLEY_START_TIME"] == "2022-06-21T00:00:00Z"
    settings = load_node_sync_settings({k: str(v) for k, v in env.items()}, interval=2.0)
    assert settings.network.wallclock_slot(1_655_769_600 + 7) == 86_407
    assert settings.tip_metrics == ("cardano_node_metrics_slotNum",)
    assert (settings.max_lag_slots, settings.grace, settings.timeout) == (120, 30.0, 0.5)
    url = {"forgeManager": {"nodeSync": {"metricsUrl": "http://127.0.0.1:1234/m"}}}
    env = sidecar_env(render(merged(BASE, url), tmp_path))
    assert env["NODE_METRICS_URL"] == "http://127.0.0.1:1234/m"


def test_node_sync_can_be_switched_off(tmp_path: Path) -> None:
    values, _ = MATRIX["node-sync-off"]
    env = sidecar_env(render(values, tmp_path))
    assert env["NODE_SYNC_CHECK"] == "false"
    assert not set(SYNC_ENV) & set(env)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"nodeSync": {"network": "testnet"}}, "/forgeManager/nodeSync/network"),
        ({"nodeSync": {"maxLagSlots": 0}}, "minimum"),
        ({"nodeSync": {"graceSecond": 5}}, "additional properties 'graceSecond' not allowed"),
        ({"nodeSync": {"metricsUrl": "localhost:12798"}}, "metricsUrl"),
        ({"nodeSync": {"tipMetric": "slot-num"}}, "tipMetric"),
    ],
    ids=["network", "max-lag", "typo", "url", "metric-name"],
)
def test_node_sync_schema_rejects(values: dict[str, Any], expected: str, tmp_path: Path) -> None:
    message = refusal(merged(BASE, {"forgeManager": values}), tmp_path)
    assert "values don't meet the specifications of the schema" in message
    assert expected in message, message


def test_custom_network_needs_its_start_time(tmp_path: Path) -> None:
    values = merged(BASE, {"forgeManager": {"nodeSync": {"network": "custom"}}})
    assert "forgeManager.nodeSync.custom.shelleyStartTime is required" in refusal(values, tmp_path)
