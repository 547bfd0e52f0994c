"""Storage for the test node: a default StorageClass and a tiny provisioner of local volumes.

A StatefulSet's ``volumeClaimTemplates`` create PersistentVolumeClaims that stay ``Pending``
until a PersistentVolume exists. The test node has one disk and one node, so a volume is a
directory under the node's state directory. Every second this provisioner lists the claims and
volumes of its StorageClass and

* for each Pending claim without a volume: creates the directory (mode 0777, so any UID can
  write; ``fsGroup`` still applies because the volume is of type ``local``) and a ``local``
  PersistentVolume pre-bound to the claim, with node affinity to the test node;
* for each of its volumes that is ``Released`` or ``Failed`` (the claim was deleted): deletes the
  volume and its directory (reclaim policy ``Delete``).

``plan()`` is the pure decision; ``run()`` the loop, which ends on SIGTERM or when the state
directory disappears. The StorageClass uses ``volumeBindingMode: Immediate``: the claim is bound
as soon as the volume exists, and the scheduler then places the pod on the volume's node.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STORAGE_CLASS = "standard"
PROVISIONER = "cardano-forge.test/local-dir"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
INTERVAL_S = 1.0


def storage_class() -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


@dataclass(frozen=True)
class Claim:
    namespace: str
    name: str
    uid: str
    storage_class: str | None
    phase: str
    volume_name: str
    request: str
    access_modes: tuple[str, ...]
    volume_mode: str


@dataclass(frozen=True)
class Volume:
    name: str
    phase: str
    provisioned_by: str
    path: str


@dataclass(frozen=True)
class Create:
    claim: Claim

    @property
    def volume_name(self) -> str:
        return f"pvc-{self.claim.uid}"


@dataclass(frozen=True)
class Delete:
    volume: Volume


def plan(claims: list[Claim], volumes: list[Volume]) -> list[Create | Delete]:
    """What to do now: create a volume for each unbound claim of the class, delete released ones."""
    existing = {v.name for v in volumes}
    actions: list[Create | Delete] = []
    for claim in claims:
        if claim.storage_class != STORAGE_CLASS or claim.phase != "Pending" or claim.volume_name:
            continue
        if claim.volume_mode != "Filesystem":
            continue  # block volumes are not offered
        action = Create(claim)
        if action.volume_name not in existing:
            actions.append(action)
    for volume in volumes:
        if volume.provisioned_by == PROVISIONER and volume.phase in ("Released", "Failed"):
            actions.append(Delete(volume))
    return actions


def volume_manifest(action: Create, base_dir: Path, node_name: str) -> dict[str, Any]:
    claim = action.claim
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": action.volume_name,
            "annotations": {PROVISIONED_BY: PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": claim.request},
            "accessModes": list(claim.access_modes),
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "volumeMode": "Filesystem",
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": claim.namespace,
                "name": claim.name,
                "uid": claim.uid,
            },
            "local": {"path": str(base_dir / action.volume_name)},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node_name],
                                }
                            ]
                        }
                    ]
                }
            },
        },
    }


def _claims(core: Any) -> list[Claim]:
    result = []
    for pvc in core.list_persistent_volume_claim_for_all_namespaces().items:
        spec, status = pvc.spec, pvc.status
        result.append(
            Claim(
                namespace=pvc.metadata.namespace,
                name=pvc.metadata.name,
                uid=pvc.metadata.uid,
                storage_class=spec.storage_class_name,
                phase=(status.phase if status else None) or "Pending",
                volume_name=spec.volume_name or "",
                request=(spec.resources.requests or {}).get("storage", "1Gi"),
                access_modes=tuple(spec.access_modes or ["ReadWriteOnce"]),
                volume_mode=spec.volume_mode or "Filesystem",
            )
        )
    return result


def _volumes(core: Any) -> list[Volume]:
    result = []
    for pv in core.list_persistent_volume().items:
        annotations = pv.metadata.annotations or {}
        result.append(
            Volume(
                name=pv.metadata.name,
                phase=(pv.status.phase if pv.status else None) or "",
                provisioned_by=annotations.get(PROVISIONED_BY, ""),
                path=pv.spec.local.path if pv.spec.local else "",
            )
        )
    return result


def run_once(core: Any, base_dir: Path, node_name: str) -> list[str]:
    """One pass; returns a line per action taken."""
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    done = []
    for action in plan(_claims(core), _volumes(core)):
        if isinstance(action, Create):
            path = base_dir / action.volume_name
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)
            try:
                core.create_persistent_volume(volume_manifest(action, base_dir, node_name))
            except ApiException as exc:
                if exc.status != 409:
                    raise
            c = action.claim
            done.append(f"created {action.volume_name} for {c.namespace}/{c.name}")
        else:
            vol = action.volume
            if vol.path and Path(vol.path).parent == base_dir:
                shutil.rmtree(vol.path, ignore_errors=True)
            with contextlib.suppress(ApiException):
                core.delete_persistent_volume(vol.name)
            done.append(f"deleted {vol.name} ({vol.phase})")
    return done


def run(kubeconfig: Path, base_dir: Path, node_name: str, state_dir: Path) -> int:
    """Provision until SIGTERM or until ``state_dir`` is gone (the node was removed)."""
    from kubernetes import client, config  # noqa: PLC0415

    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    base_dir.mkdir(parents=True, exist_ok=True)
    api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    core = client.CoreV1Api(api)
    while not stop and state_dir.exists():
        try:
            for line in run_once(core, base_dir, node_name):
                print(line, flush=True)
        except Exception as exc:  # the API may be down for a while (an outage test): retry
            print(f"provisioner pass failed: {type(exc).__name__}: {exc}", flush=True)
        time.sleep(INTERVAL_S)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--dir", required=True, help="where volume directories are made")
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--state-dir", required=True, help="stop when this disappears")
    args = parser.parse_args(argv)
    os.umask(0)
    return run(Path(args.kubeconfig), Path(args.dir), args.node_name, Path(args.state_dir))


if __name__ == "__main__":
    sys.exit(main())
