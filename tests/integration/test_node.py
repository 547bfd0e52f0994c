"""The single-node test cluster works as a Kubernetes node must for the chart's pods.

Pods run as containers (containerd + runc) with IPs on the bridge; a ClusterIP Service reaches
a pod from another pod (kube-proxy); cluster DNS resolves Service names and
``kubernetes.default`` and pods reach the API through it; a native sidecar with a shared process
namespace, the same UID and no capabilities can SIGHUP the main container; a memory emptyDir is
a tmpfs of its sizeLimit; a StatefulSet with a volumeClaimTemplate gets volumes and becomes
Ready; and stopping the node puts the host back as it was.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, utils

from tests.harness import hoststate
from tests.harness.controlplane import tool
from tests.harness.image_archive import ImageFile, ImageSpec, write_docker_archive
from tests.harness.node import DNS_IP, POD_CIDR, Node, NodeError, ownership

pytestmark = [pytest.mark.node, pytest.mark.slow]

POD_TIMEOUT_S = 120.0


def wait_for(what: str, check: Callable[[], Any], timeout: float = POD_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def apply(node: Node, namespace: str, *objects: dict[str, Any]) -> None:
    with node.control_plane.api_client() as api:
        for obj in objects:
            utils.create_from_dict(api, obj, namespace=namespace)


def pod_status(node: Node, namespace: str, name: str) -> Any:
    with node.control_plane.api_client() as api:
        return client.CoreV1Api(api).read_namespaced_pod(name, namespace).status


def wait_pod_ready(node: Node, namespace: str, name: str) -> Any:
    def ready() -> Any:
        status = pod_status(node, namespace, name)
        conditions = {c.type: c.status for c in (status.conditions or [])}
        return status if conditions.get("Ready") == "True" else None

    return wait_for(f"pod {namespace}/{name} Ready", ready)


def probe_pod(node: Node, name: str, args: list[str], **extra: Any) -> dict[str, Any]:
    """A pod of the nodeprobe image running ``/nodeprobe ARGS``, locked down like the chart's."""
    container = {
        "name": "main",
        "image": node.probe_image,
        "imagePullPolicy": "Never",
        "args": args,
        "securityContext": {
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 2, **extra},
    }


def exec_probe(node: Node, namespace: str, pod: str, *args: str, container: str = "main") -> str:
    return node.kubectl(
        "exec", "-n", namespace, pod, "-c", container, "--", "/nodeprobe", *args
    ).stdout


def test_pod_runs_with_an_ip_and_its_log_is_readable_on_the_host(
    kube_node: Node, node_namespace: str
) -> None:
    apply(kube_node, node_namespace, probe_pod(kube_node, "web", ["serve", "8080", "hello"]))
    status = wait_pod_ready(kube_node, node_namespace, "web")

    assert ipaddress.ip_address(status.pod_ip) in ipaddress.ip_network(POD_CIDR)
    logs = wait_for(
        "the container log", lambda: kube_node.container_logs(node_namespace, "web", "main")
    )
    wait_for("the serving line", lambda: "serving on :8080" in logs[-1].read_text())
    assert exec_probe(kube_node, node_namespace, "web", "id").startswith("uid=1000 gid=1000")


def test_cluster_ip_service_reaches_a_pod_from_another_pod(
    kube_node: Node, node_namespace: str
) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    apply(
        kube_node,
        node_namespace,
        probe_pod(kube_node, "web", ["serve", "8080", "hello"]),
        probe_pod(kube_node, "client", ["sleep"]),
        service,
    )
    wait_pod_ready(kube_node, node_namespace, "web")
    wait_pod_ready(kube_node, node_namespace, "client")
    with kube_node.control_plane.api_client() as api:
        cluster_ip = (
            client.CoreV1Api(api).read_namespaced_service("web", node_namespace).spec.cluster_ip
        )

    def answer(url: str) -> str:
        # kube-proxy programs the Service a moment after its endpoints appear: retry briefly.
        def get() -> str:
            result = kube_node.kubectl(
                "exec", "-n", node_namespace, "client", "--", "/nodeprobe", "get", url, check=False
            )
            return result.stdout if result.returncode == 0 else ""

        return str(wait_for(f"GET {url} from the client pod", get, timeout=30))

    assert answer(f"http://{cluster_ip}/").startswith("hello web")
    assert answer(f"http://web.{node_namespace}.svc.cluster.local/").startswith("hello web")
    assert answer("http://web/").startswith("hello web")


def test_cluster_dns_resolves_services_and_pods_reach_the_api(
    kube_node: Node, node_namespace: str
) -> None:
    apply(kube_node, node_namespace, probe_pod(kube_node, "client", ["sleep"]))
    wait_pod_ready(kube_node, node_namespace, "client")

    resolv = exec_probe(kube_node, node_namespace, "client", "cat", "/etc/resolv.conf")
    assert f"nameserver {DNS_IP}" in resolv
    out = exec_probe(
        kube_node,
        node_namespace,
        "client",
        "resolve",
        "kubernetes.default",
        "kube-dns.kube-system.svc.cluster.local",
    )
    assert "kubernetes.default 10.96.0.1" in out
    assert f"kube-dns.kube-system.svc.cluster.local {DNS_IP}" in out
    # The mounted ServiceAccount token and CA reach https://kubernetes.default.svc.
    version = exec_probe(kube_node, node_namespace, "client", "apiversion")
    assert '"gitVersion"' in version


def test_native_sidecar_sighups_the_main_container_without_capabilities(
    kube_node: Node, node_namespace: str
) -> None:
    """The chart's shape: a native sidecar (restartPolicy Always, startup probe) and the main
    container share the process namespace, run as the same UID with every capability dropped
    and a read-only root, and share a memory emptyDir."""
    pod = probe_pod(kube_node, "forge", ["/mem/hups"], shareProcessNamespace=True)
    main = pod["spec"]["containers"][0]
    main["command"] = ["/hupwait"]
    mount = [{"name": "mem", "mountPath": "/mem"}]
    main["volumeMounts"] = mount
    sidecar = {
        **{k: v for k, v in main.items() if k not in ("command", "args")},
        "name": "sidecar",
        "args": ["sleep"],
        "restartPolicy": "Always",
        "startupProbe": {
            "exec": {"command": ["/nodeprobe", "write", "/mem/sidecar-started", "1"]},
            "periodSeconds": 1,
        },
    }
    pod["spec"]["initContainers"] = [sidecar]
    pod["spec"]["volumes"] = [
        {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}
    ]
    pod["spec"]["securityContext"] = {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True}
    apply(kube_node, node_namespace, pod)
    wait_pod_ready(kube_node, node_namespace, "forge")

    sent = exec_probe(kube_node, node_namespace, "forge", "hup", "hupwait", container="sidecar")
    assert sent.startswith("sent SIGHUP to ")
    hups = wait_for(
        "the main container to record the SIGHUP",
        lambda: (
            kube_node.kubectl(
                "exec",
                "-n",
                node_namespace,
                "forge",
                "-c",
                "main",
                "--",
                "/nodeprobe",
                "cat",
                "/mem/hups",
                check=False,
            ).stdout
        ),
        timeout=10,
    )
    assert "hup pid=" in hups
    ident = exec_probe(kube_node, node_namespace, "forge", "id", container="sidecar")
    assert "uid=1000 gid=1000" in ident
    assert "CapEff: 0000000000000000" in ident
    assert "NoNewPrivs: 1" in ident
    mounts = exec_probe(kube_node, node_namespace, "forge", "cat", "/proc/mounts")
    mem = [line for line in mounts.splitlines() if line.split()[1] == "/mem"]
    assert mem and mem[0].split()[2] == "tmpfs", mounts
    assert "size=16384k" in mem[0]
    root = [line for line in mounts.splitlines() if line.split()[1] == "/"]
    assert root and "ro" in root[0].split()[3].split(","), root
    # The sidecar's log is on the host too.
    assert kube_node.container_logs(node_namespace, "forge", "sidecar")


def test_statefulset_with_a_volume_claim_template_becomes_ready(
    kube_node: Node, node_namespace: str
) -> None:
    template = probe_pod(kube_node, "db", ["sleep"])
    container = template["spec"]["containers"][0]
    container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    container["securityContext"]["runAsUser"] = 10001
    container["securityContext"]["runAsGroup"] = 10001
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {
            "serviceName": "db",
            "replicas": 2,
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {**template["spec"], "securityContext": {"fsGroup": 10001}},
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
        },
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 80}]},
    }
    apply(kube_node, node_namespace, headless, statefulset)

    def ready() -> bool:
        with kube_node.control_plane.api_client() as api:
            sts = client.AppsV1Api(api).read_namespaced_stateful_set("db", node_namespace)
        return (sts.status.ready_replicas or 0) == 2

    wait_for("StatefulSet db to have 2 ready replicas", ready, timeout=180)
    exec_probe(kube_node, node_namespace, "db-0", "write", "/data/x", "written as 10001")
    assert exec_probe(kube_node, node_namespace, "db-0", "cat", "/data/x") == "written as 10001"
    out = exec_probe(kube_node, node_namespace, "db-1", "resolve", f"db-0.db.{node_namespace}")
    assert out.split()[1] == pod_status(kube_node, node_namespace, "db-0").pod_ip

    # Deleting the StatefulSet and its claims releases the volumes, and the provisioner
    # deletes them.
    kube_node.kubectl("delete", "-n", node_namespace, "statefulset", "db", "--wait=true")
    kube_node.kubectl("delete", "-n", node_namespace, "pvc", "--all", "--wait=true", timeout=120)

    def volumes_gone() -> bool:
        with kube_node.control_plane.api_client() as api:
            pvs = client.CoreV1Api(api).list_persistent_volume().items
        return not [
            pv
            for pv in pvs
            if (pv.spec.claim_ref or {}) and pv.spec.claim_ref.namespace == node_namespace
        ]

    wait_for("the released volumes to be deleted", volumes_gone, timeout=60)


def test_images_listed_in_images_json_are_loaded_and_run_by_their_short_name(
    kube_node: Node, node_namespace: str, tmp_path: Path
) -> None:
    """The ``make images`` interface: ``images.json`` lists ``{name, archive, bytes}``; a pod
    names the image as the chart does (``repo/name:tag``, no registry)."""
    name = f"cardano-forge-test/listed:{uuid.uuid4().hex[:8]}"
    spec = ImageSpec(
        name=name,
        files=(ImageFile("/nodeprobe", Path(tool("nodeprobe"))),),
        entrypoint=("/nodeprobe",),
    )
    write_docker_archive(spec, tmp_path / "listed.tar")
    entry = {
        "name": name,
        "archive": "listed.tar",
        "bytes": (tmp_path / "listed.tar").stat().st_size,
    }
    (tmp_path / "images.json").write_text(json.dumps([entry]))

    assert kube_node.load_images_from(tmp_path) == [name]

    pod = probe_pod(kube_node, "listed", ["sleep"])
    pod["spec"]["containers"][0]["image"] = name
    apply(kube_node, node_namespace, pod)
    wait_pod_ready(kube_node, node_namespace, "listed")


def test_a_missing_archive_in_images_json_is_one_line_naming_the_fix(
    kube_node: Node, tmp_path: Path
) -> None:
    (tmp_path / "images.json").write_text(
        json.dumps([{"name": "a/b:1", "archive": "gone.tar", "bytes": 1}])
    )

    with pytest.raises(NodeError, match=r"lists gone.tar, which is missing: run 'make images'"):
        kube_node.load_images_from(tmp_path)


def test_a_second_node_on_the_host_is_refused_with_one_line(
    kube_node: Node, tmp_path: Path
) -> None:
    second = Node(control_plane=kube_node.control_plane, root=tmp_path / "second")

    with pytest.raises(NodeError, match=r"already up on this host .* 'make node-down'"):
        second.start()
    assert not (tmp_path / "second").exists()


def test_stopping_a_crashed_node_restores_the_host_and_it_starts_again(kube_node: Node) -> None:
    """Run a pod, kill -9 the kubelet, containerd and kube-proxy (a crash: the pod's shim and
    processes, mounts, CNI rules and cgroups stay behind), stop the node, and compare the host
    with the snapshot from before the node started; then start the node again for the tests
    that follow. (The graceful stop is checked the same way by the fixture at the end.)"""
    ns = "crash-check"
    kube_node.create_namespace(ns)
    apply(kube_node, ns, probe_pod(kube_node, "web", ["serve", "8080", "hello"]))
    wait_pod_ready(kube_node, ns, "web")
    before = kube_node.host_snapshot
    own = ownership(kube_node.root)
    assert hoststate.compare(before, hoststate.take(own), own), "a running node changes the host"
    for name in ("kubelet", "containerd", "kube-proxy"):
        os.kill(kube_node.pids[name], signal.SIGKILL)

    kube_node.stop()

    assert hoststate.compare(before, hoststate.take(own), own) == []
    kube_node.stop()  # idempotent
    kube_node.start()
    kube_node.kubectl("delete", "namespace", ns, "--wait=false", check=False)
