"""Settings from the environment, validated once at startup.

An invalid or missing value raises :class:`ConfigError` with one line naming the variable and the
expected form; ``__main__`` prints it and exits non-zero before any file is touched.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from forge_manager.timing import Timing, TimingError, check_timing

DEFAULT_TARGET_DIR = Path("/opt/cardano/secrets")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# RFC 1123 subdomain (Lease names) and label (namespaces, pod names are subdomains too).
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ConfigError(ValueError):
    """One line: the variable, what was wrong, the expected form."""


@dataclass(frozen=True)
class Settings:
    """Everything the manager reads from its environment."""

    pod_name: str
    """``POD_NAME``: this pod's name, the Lease holder identity (downward API)."""
    namespace: str
    """``NAMESPACE``: namespace of the Lease (downward API)."""
    lease_name: str
    """``LEASE_NAME``: the Lease shared by the pods of one pool (default cardano-node-leader)."""
    lease_duration: int
    """``LEASE_DURATION``: seconds without a change after which followers take over (15)."""
    renew_deadline: float
    """``LEASE_RENEW_DEADLINE``: seconds after the last renew was sent to demotion (10)."""
    retry_period: float
    """``LEASE_RETRY_PERIOD``: seconds between election cycles (2)."""
    request_timeout: float
    """``KUBE_REQUEST_TIMEOUT``: bound on every API call, at most the retry period (1)."""
    metrics_port: int
    """``METRICS_PORT``: port of /metrics, /health and /startup-status (8000)."""
    metrics_bind_address: str
    """``METRICS_BIND_ADDRESS``: address the HTTP server binds (0.0.0.0)."""
    source_kes_key: Path
    """``SOURCE_KES_KEY``: KES signing key in the mounted Secret (never modified)."""
    source_vrf_key: Path
    """``SOURCE_VRF_KEY``: VRF signing key in the mounted Secret (never modified)."""
    source_op_cert: Path
    """``SOURCE_OP_CERT``: operational certificate in the mounted Secret (never modified)."""
    target_kes_key: Path
    """``TARGET_KES_KEY``: where cardano-node reads the KES key (/opt/cardano/secrets/kes.skey)."""
    target_vrf_key: Path
    """``TARGET_VRF_KEY``: where cardano-node reads the VRF key (/opt/cardano/secrets/vrf.skey)."""
    target_op_cert: Path
    """``TARGET_OP_CERT``: where cardano-node reads the certificate (.../node.cert)."""
    node_socket: Path
    """``NODE_SOCKET``: cardano-node's socket; 'node up' means connect() succeeds."""
    node_process_name: str
    """``CARDANO_NODE_PROCESS_NAME``: exact process name of cardano-node (cardano-node)."""
    node_pid_file: Path | None
    """``CARDANO_NODE_PID_FILE``: when set, the node is found through this file."""
    cluster_name: str
    """``CLUSTER_NAME``: the ``cluster`` label of the metrics (default: the namespace)."""
    log_level: str
    """``LOG_LEVEL``: DEBUG, INFO, WARNING or ERROR (INFO)."""
    log_format: str
    """``LOG_FORMAT``: json or text (json)."""
    forge_permit_file: Path | None = None
    """``FORGE_PERMIT_FILE``: where to write the forging deadline that ``forge-guard`` enforces
    beside the node (unset: no guard)."""

    @property
    def timing(self) -> Timing:
        return Timing(
            lease_duration=float(self.lease_duration),
            renew_deadline=self.renew_deadline,
            retry_period=self.retry_period,
            request_timeout=self.request_timeout,
        )

    @property
    def sources(self) -> tuple[Path, Path, Path]:
        return (self.source_kes_key, self.source_vrf_key, self.source_op_cert)

    @property
    def targets(self) -> tuple[Path, Path, Path]:
        return (self.target_kes_key, self.target_vrf_key, self.target_op_cert)


def _get(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = env.get(name, "").strip()
    if value:
        return value
    if default is None:
        raise ConfigError(f"{name} is not set: expected {_EXPECTED[name]}")
    return default


_EXPECTED = {
    "POD_NAME": "the pod's name, e.g. from the downward API (metadata.name)",
    "NAMESPACE": "the pod's namespace, e.g. from the downward API (metadata.namespace)",
    "SOURCE_KES_KEY": "the path of the KES signing key in the mounted Secret",
    "SOURCE_VRF_KEY": "the path of the VRF signing key in the mounted Secret",
    "SOURCE_OP_CERT": "the path of the operational certificate in the mounted Secret",
    "NODE_SOCKET": "the path of cardano-node's socket, e.g. /ipc/node.socket",
}


def _number(env: Mapping[str, str], name: str, default: str, *, integer: bool = False) -> float:
    raw = _get(env, name, default)
    form = "a whole number of seconds" if integer else "a number of seconds"
    try:
        value = float(raw) if not integer else float(int(raw))
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not valid: expected {form}, e.g. {default}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}={raw!r} is not valid: expected {form} greater than 0")
    return value


def _path(env: Mapping[str, str], name: str, default: str | None = None) -> Path:
    return absolute_path(_get(env, name, default), name)


def absolute_path(raw: str, name: str, error: type[ValueError] = ConfigError) -> Path:
    """``raw``, the value of the variable ``name``, as a path; ``error`` (one line naming the
    variable) unless it is absolute."""
    path = Path(raw)
    if not path.is_absolute():
        raise error(f"{name}={raw!r} is not valid: expected an absolute path")
    return path


def optional_path(
    env: Mapping[str, str], name: str, error: type[ValueError] = ConfigError
) -> Path | None:
    """The absolute path in ``name``; None when it is unset or blank (see :func:`absolute_path`)."""
    raw = env.get(name, "").strip()
    return absolute_path(raw, name, error) if raw else None


def load_settings(env: Mapping[str, str]) -> Settings:
    """Parse and validate; raises :class:`ConfigError` on the first problem."""
    pod_name = _get(env, "POD_NAME")
    if len(pod_name) > 253 or not _DNS_SUBDOMAIN.match(pod_name):
        raise ConfigError(
            f"POD_NAME={pod_name!r} is not valid: expected a Kubernetes object name "
            "(lower-case letters, digits, '-' and '.')"
        )
    namespace = _get(env, "NAMESPACE")
    if len(namespace) > 63 or not _DNS_LABEL.match(namespace):
        raise ConfigError(
            f"NAMESPACE={namespace!r} is not valid: expected a namespace name "
            "(lower-case letters, digits and '-', at most 63)"
        )
    lease_name = _get(env, "LEASE_NAME", "cardano-node-leader")
    if len(lease_name) > 253 or not _DNS_SUBDOMAIN.match(lease_name):
        raise ConfigError(
            f"LEASE_NAME={lease_name!r} is not valid: expected a Kubernetes object name "
            "(lower-case letters, digits, '-' and '.')"
        )
    raw_port = _get(env, "METRICS_PORT", "8000")
    try:
        port = int(raw_port)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise ConfigError(f"METRICS_PORT={raw_port!r} is not valid: expected a port 1-65535")
    log_level = _get(env, "LOG_LEVEL", "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(
            f"LOG_LEVEL={env.get('LOG_LEVEL')!r} is not valid: expected one of "
            + ", ".join(LOG_LEVELS)
        )
    log_format = _get(env, "LOG_FORMAT", "json").lower()
    if log_format not in ("json", "text"):
        raise ConfigError(
            f"LOG_FORMAT={env.get('LOG_FORMAT')!r} is not valid: expected json or text"
        )
    process_name = _get(env, "CARDANO_NODE_PROCESS_NAME", "cardano-node")
    if "/" in process_name or "\0" in process_name:
        raise ConfigError(
            f"CARDANO_NODE_PROCESS_NAME={process_name!r} is not valid: expected a bare "
            "process name without '/', e.g. cardano-node"
        )
    pid_file = _path(env, "CARDANO_NODE_PID_FILE") if env.get("CARDANO_NODE_PID_FILE") else None

    settings = Settings(
        pod_name=pod_name,
        namespace=namespace,
        lease_name=lease_name,
        lease_duration=int(_number(env, "LEASE_DURATION", "15", integer=True)),
        renew_deadline=_number(env, "LEASE_RENEW_DEADLINE", "10"),
        retry_period=_number(env, "LEASE_RETRY_PERIOD", "2"),
        request_timeout=_number(env, "KUBE_REQUEST_TIMEOUT", "1"),
        metrics_port=port,
        metrics_bind_address=_get(env, "METRICS_BIND_ADDRESS", "0.0.0.0"),  # noqa: S104 (probes)
        source_kes_key=_path(env, "SOURCE_KES_KEY"),
        source_vrf_key=_path(env, "SOURCE_VRF_KEY"),
        source_op_cert=_path(env, "SOURCE_OP_CERT"),
        target_kes_key=_path(env, "TARGET_KES_KEY", str(DEFAULT_TARGET_DIR / "kes.skey")),
        target_vrf_key=_path(env, "TARGET_VRF_KEY", str(DEFAULT_TARGET_DIR / "vrf.skey")),
        target_op_cert=_path(env, "TARGET_OP_CERT", str(DEFAULT_TARGET_DIR / "node.cert")),
        node_socket=_path(env, "NODE_SOCKET"),
        node_process_name=process_name,
        node_pid_file=pid_file,
        cluster_name=_get(env, "CLUSTER_NAME", namespace),
        log_level=log_level,
        log_format=log_format,
        forge_permit_file=(
            _path(env, "FORGE_PERMIT_FILE") if env.get("FORGE_PERMIT_FILE") else None
        ),
    )
    targets = settings.targets
    if len(set(targets)) != 3:
        raise ConfigError(
            "TARGET_KES_KEY, TARGET_VRF_KEY and TARGET_OP_CERT must be three different paths"
        )
    overlap = set(targets) & set(settings.sources)
    if overlap:
        raise ConfigError(
            f"a TARGET_* path equals a SOURCE_* path ({sorted(map(str, overlap))[0]}): "
            "expected targets outside the mounted Secret, e.g. /opt/cardano/secrets/kes.skey"
        )
    try:
        check_timing(settings.timing)
    except TimingError as exc:
        raise ConfigError(str(exc)) from None
    return settings
