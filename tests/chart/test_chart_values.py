"""What well-kept charts offer, rendered by the real helm: peer Service, anti-affinity, extension
points, update and retention policies, an existing claim, the node's readiness probe, the
non-producing flag the configured node version knows, subchart use (`global`).

Every case is also validated against the Kubernetes schemas (strict), as in test_chart.py.
"""

from __future__ import annotations

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

SELECTOR = {"app.kubernetes.io/name": "cardano-forge", "app.kubernetes.io/instance": "bp"}


def node_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (node,) = [c for c in pod_spec(docs)["containers"] if c["name"] == "cardano-node"]
    return node


def test_the_seed_secret_name_is_the_default(tmp_path: Path) -> None:
    docs = render({"pool": {"name": "POOL1"}}, tmp_path)
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["credentials-source"]["secret"]["secretName"] == "cardano-secrets"


def test_global_is_accepted_and_unknown_keys_are_not(tmp_path: Path) -> None:
    validate_all(
        render(merged(BASE, {"global": {"imageRegistry": "x", "any": 1}}), tmp_path), tmp_path
    )
    message = refusal(merged(BASE, {"globals": {}}), tmp_path)
    assert "additional properties 'globals' not allowed" in message


# --------------------------------------------------------------------------- non-producing flag


@pytest.mark.parametrize(
    ("node", "flag"),
    [
        ({}, "--start-as-non-producing-node"),  # the default image
        ({"image": {"tag": "10.5.1"}}, "--start-as-non-producing-node"),
        ({"image": {"tag": "10.5.0"}}, "--non-producing-node"),
        ({"image": {"tag": "9.2.1"}}, "--non-producing-node"),
        ({"image": {"tag": "8.7.2"}}, "--non-producing-node"),
        ({"image": {"tag": "10.6.0-pre"}}, "--start-as-non-producing-node"),
        ({"image": {"tag": "my-build"}, "version": "10.4.1"}, "--non-producing-node"),
        ({"image": {"tag": "my-build"}, "version": "11.0.1"}, "--start-as-non-producing-node"),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
def test_non_producing_flag_follows_the_node_version(
    node: dict[str, Any], flag: str, tmp_path: Path
) -> None:
    args = node_container(render(merged(BASE, {"node": node}), tmp_path))["args"]
    assert flag in args
    other = {"--start-as-non-producing-node", "--non-producing-node"} - {flag}
    assert not other & set(args)


def test_default_node_image_is_a_current_release(tmp_path: Path) -> None:
    image = node_container(render(BASE, tmp_path))["image"]
    repository, tag = image.rsplit(":", 1)
    assert repository == "ghcr.io/intersectmbo/cardano-node"
    major, minor, _ = (int(x) for x in tag.split("."))
    assert (major, minor) >= (11, 0), "the default must follow the current node release"


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({"image": {"tag": "latest"}}, 'node.image.tag "latest" is not a cardano-node version'),
        ({"image": {"tag": "8.7.1"}}, "cardano-node 8.7.1 cannot start non-producing"),
    ],
    ids=["tag-not-a-version", "too-old"],
)
def test_non_producing_flag_refusals(node: dict[str, Any], expected: str, tmp_path: Path) -> None:
    assert expected in refusal(merged(BASE, {"node": node}), tmp_path)


# --------------------------------------------------------------------------- peer Service


def peer_service(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return only(docs, "Service", "-node")


def test_peer_service_defaults_to_cluster_ip_on_the_peer_port(tmp_path: Path) -> None:
    service = peer_service(render(BASE, tmp_path))
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == SELECTOR
    assert service["spec"]["ports"] == [
        {"name": "node", "port": 3001, "targetPort": "node", "protocol": "TCP"}
    ]


def test_peer_service_node_port_and_load_balancer(tmp_path: Path) -> None:
    node_port = merged(
        BASE,
        {
            "node": {
                "service": {"type": "NodePort", "nodePort": 30001, "externalTrafficPolicy": "Local"}
            }
        },
    )
    docs = render(node_port, tmp_path)
    validate_all(docs, tmp_path)
    spec = peer_service(docs)["spec"]
    assert spec["type"] == "NodePort" and spec["externalTrafficPolicy"] == "Local"
    assert spec["ports"][0]["nodePort"] == 30001
    lb = merged(
        BASE,
        {
            "node": {
                "service": {
                    "type": "LoadBalancer",
                    "port": 6000,
                    "loadBalancerSourceRanges": ["203.0.113.10/32", "198.51.100.7/32"],
                    "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"},
                }
            }
        },
    )
    docs = render(lb, tmp_path)
    validate_all(docs, tmp_path)
    service = peer_service(docs)
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["loadBalancerSourceRanges"] == ["203.0.113.10/32", "198.51.100.7/32"]
    assert service["spec"]["ports"][0]["port"] == 6000
    assert service["spec"]["ports"][0]["targetPort"] == "node"
    assert service["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-type"]


def test_peer_service_can_be_left_out(tmp_path: Path) -> None:
    docs = render(merged(BASE, {"node": {"service": {"enabled": False}}}), tmp_path)
    assert not [
        d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-node")
    ]


def test_peer_service_type_is_checked(tmp_path: Path) -> None:
    message = refusal(merged(BASE, {"node": {"service": {"type": "External"}}}), tmp_path)
    assert "type" in message and "ClusterIP" in message


# --------------------------------------------------------------------------- scheduling


def hostname_term(weight: int | None = None) -> dict[str, Any]:
    term = {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": SELECTOR}}
    return term if weight is None else {"weight": weight, "podAffinityTerm": term}


def test_default_anti_affinity_prefers_different_machines(tmp_path: Path) -> None:
    affinity = pod_spec(render(BASE, tmp_path))["affinity"]
    assert affinity == {
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [hostname_term(100)]}
    }


def test_hard_anti_affinity_and_zones(tmp_path: Path) -> None:
    values = merged(BASE, {"podAntiAffinity": {"type": "hard", "zone": True}})
    docs = render(values, tmp_path)
    validate_all(docs, tmp_path)
    anti = pod_spec(docs)["affinity"]["podAntiAffinity"]
    assert anti["requiredDuringSchedulingIgnoredDuringExecution"] == [hostname_term()]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"] == [
        {
            "weight": 50,
            "podAffinityTerm": {
                "topologyKey": "topology.kubernetes.io/zone",
                "labelSelector": {"matchLabels": SELECTOR},
            },
        }
    ]


def test_soft_anti_affinity_with_zones(tmp_path: Path) -> None:
    values = merged(BASE, {"podAntiAffinity": {"zone": True}})
    preferred = pod_spec(render(values, tmp_path))["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert [t["podAffinityTerm"]["topologyKey"] for t in preferred] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]


def test_no_anti_affinity_or_an_own_affinity(tmp_path: Path) -> None:
    none = pod_spec(render(merged(BASE, {"podAntiAffinity": {"type": "none"}}), tmp_path))
    assert "affinity" not in none
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "cardano.io/pool", "operator": "Exists"}]}]}}}  # fmt: skip
    spec = pod_spec(render(merged(BASE, {"affinity": own}), tmp_path))
    assert spec["affinity"] == own


def test_topology_spread_priority_update_and_retention(tmp_path: Path) -> None:
    values = merged(
        BASE,
        {
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                 "whenUnsatisfiable": "ScheduleAnyway"},
                {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                 "whenUnsatisfiable": "DoNotSchedule",
                 "labelSelector": {"matchLabels": {"tier": "bp"}}},
            ],
            "priorityClassName": "cardano-critical",
            "updateStrategy": {"type": "OnDelete"},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete",
                                                     "whenScaled": "Retain"},
        },
    )  # fmt: skip
    docs = render(values, tmp_path)
    validate_all(docs, tmp_path)
    sts = only(docs, "StatefulSet")
    spec = pod_spec(docs)
    zone, host = spec["topologySpreadConstraints"]
    assert zone["labelSelector"] == {"matchLabels": SELECTOR}  # filled in
    assert host["labelSelector"] == {"matchLabels": {"tier": "bp"}}  # kept
    assert spec["priorityClassName"] == "cardano-critical"
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Delete",
        "whenScaled": "Retain",
    }


def test_defaults_retain_claims_and_roll(tmp_path: Path) -> None:
    sts = only(render(BASE, tmp_path), "StatefulSet")
    assert sts["spec"]["updateStrategy"] == {"type": "RollingUpdate"}
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert "priorityClassName" not in pod_spec(render(BASE, tmp_path))


# --------------------------------------------------------------------------- storage


def test_existing_claim_replaces_the_claim_template(tmp_path: Path) -> None:
    values = merged(BASE, {"replicas": 1, "node": {"persistence": {"existingClaim": "chain-db"}}})
    docs = render(values, tmp_path)
    validate_all(docs, tmp_path)
    sts = only(docs, "StatefulSet")
    assert "volumeClaimTemplates" not in sts["spec"]
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert volumes["data"] == {"name": "data", "persistentVolumeClaim": {"claimName": "chain-db"}}
    assert {m["name"] for m in node_container(docs)["volumeMounts"]} >= {"data"}


def test_existing_claim_needs_one_replica(tmp_path: Path) -> None:
    values = merged(BASE, {"node": {"persistence": {"existingClaim": "chain-db"}}})
    message = refusal(values, tmp_path)
    assert "node.persistence.existingClaim mounts one claim into every pod" in message
    assert "data-bp-cardano-forge-<ordinal>" in message


# --------------------------------------------------------------------------- the node container


def test_node_readiness_probe(tmp_path: Path) -> None:
    node = node_container(render(BASE, tmp_path))
    probe = node["readinessProbe"]
    assert probe["tcpSocket"] == {"port": "node"}
    assert "enabled" not in probe
    custom = merged(
        BASE,
        {"node": {"readinessProbe": {"enabled": True, "tcpSocket": None,
                                     "exec": {"command": ["cardano-cli", "query", "tip"]},
                                     "periodSeconds": 30}}},
    )  # fmt: skip
    docs = render(custom, tmp_path)
    validate_all(docs, tmp_path)
    probe = node_container(docs)["readinessProbe"]
    assert probe["exec"]["command"][0] == "cardano-cli" and "tcpSocket" not in probe
    off = merged(BASE, {"node": {"readinessProbe": {"enabled": False}}})
    assert "readinessProbe" not in node_container(render(off, tmp_path))


def test_extension_points_reach_the_pod(tmp_path: Path) -> None:
    values = merged(
        BASE,
        {
            "extraEnv": [{"name": "GHCRTS", "value": "-N2"}],
            "extraVolumes": [{"name": "ipc-export", "emptyDir": {}}],
            "extraVolumeMounts": [{"name": "ipc-export", "mountPath": "/export"}],
            "extraContainers": [
                {"name": "log-shipper", "image": "example.com/shipper:1",
                 "volumeMounts": [{"name": "ipc-export", "mountPath": "/export"}]}
            ],
            "extraInitContainers": [{"name": "restore", "image": "example.com/restore:1"}],
        },
    )  # fmt: skip
    docs = render(values, tmp_path)
    validate_all(docs, tmp_path)
    spec = pod_spec(docs)
    node = node_container(docs)
    assert {"name": "GHCRTS", "value": "-N2"} in node["env"]
    assert {"name": "ipc-export", "mountPath": "/export"} in node["volumeMounts"]
    assert {"name": "ipc-export", "emptyDir": {}} in spec["volumes"]
    assert [c["name"] for c in spec["containers"]] == ["cardano-node", "log-shipper"]
    init = [c["name"] for c in spec["initContainers"]]
    # The operator's init containers run before the forge manager starts (and the node after it).
    assert init.index("restore") < init.index("forge-manager")
    assert sidecar_of(spec)["restartPolicy"] == "Always"


def test_everything_at_once_is_valid(tmp_path: Path) -> None:
    values = merged(
        BASE,
        {
            "global": {"storageClass": "fast"},
            "node": {"service": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"}},
            "podAntiAffinity": {"type": "hard", "zone": True},
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                 "whenUnsatisfiable": "ScheduleAnyway"}
            ],
            "priorityClassName": "cardano-critical",
            "extraEnv": [{"name": "A", "value": "1"}],
            "extraVolumes": [{"name": "v", "emptyDir": {}}],
            "extraVolumeMounts": [{"name": "v", "mountPath": "/v"}],
            "extraContainers": [{"name": "c", "image": "example.com/c:1"}],
            "extraInitContainers": [{"name": "i", "image": "example.com/i:1"}],
        },
    )  # fmt: skip
    validate_all(render(values, tmp_path), tmp_path)
