"""Run a pod of the chart's StatefulSet as local processes: the environment the chart rendered.

The forge manager of a local "pod" gets exactly the environment of the chart's forge-manager
container, with two kinds of change that running outside Kubernetes forces:

* ``valueFrom.fieldRef`` (``metadata.name``, ``metadata.namespace``, ``metadata.uid``) is
  resolved as the kubelet would;
* a path under one of the container's volume mounts is moved to the local directory standing in
  for that volume (the memory-backed credential emptyDir, the socket emptyDir, the mounted Secret).

``METRICS_PORT`` (every pod would want 8000 on one host), ``NODE_METRICS_URL`` (every node's
Prometheus endpoint would be 127.0.0.1:12798) and ``CARDANO_NODE_PROCESS_NAME`` (every node would
be called ``cardano-node`` in one process namespace) are the only values replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

REPLACED = ("METRICS_PORT", "NODE_METRICS_URL", "CARDANO_NODE_PROCESS_NAME")


class ChartEnvError(ValueError):
    """The rendered container cannot be run locally (an unknown volume or env source)."""


def resolve_env(
    container: Mapping[str, Any],
    volume_dirs: Mapping[str, str],
    *,
    pod_name: str,
    namespace: str,
    pod_uid: str = "",
) -> dict[str, str]:
    """The container's environment with field references resolved and volume paths moved
    (``pod_uid``: the Pod object's uid, '' while there is none yet)."""
    mounts = sorted(
        ((str(m["mountPath"]), str(m["name"])) for m in container.get("volumeMounts", [])),
        key=lambda m: -len(m[0]),  # the deepest mount wins
    )
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace, "metadata.uid": pod_uid}
    env: dict[str, str] = {}
    for item in container.get("env", []):
        name = str(item["name"])
        if name in REPLACED:
            continue
        if "value" in item:
            value = str(item["value"])
        elif "fieldRef" in item.get("valueFrom", {}):
            path = item["valueFrom"]["fieldRef"]["fieldPath"]
            if path not in fields:
                raise ChartEnvError(f"{name}: fieldRef {path} cannot be resolved locally")
            value = fields[path]
        else:
            raise ChartEnvError(f"{name}: only value and fieldRef sources can be run locally")
        env[name] = _move(value, mounts, volume_dirs, name)
    return env


def _move(
    value: str, mounts: list[tuple[str, str]], volume_dirs: Mapping[str, str], name: str
) -> str:
    if not value.startswith("/"):
        return value
    path = PurePosixPath(value)
    for mount_path, volume in mounts:
        if path == PurePosixPath(mount_path) or PurePosixPath(mount_path) in path.parents:
            if volume not in volume_dirs:
                raise ChartEnvError(f"{name}={value}: no local directory for volume {volume!r}")
            rest = path.relative_to(mount_path)
            return str(PurePosixPath(volume_dirs[volume]) / rest)
    return value
