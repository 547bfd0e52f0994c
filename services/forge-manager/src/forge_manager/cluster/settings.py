"""Cluster-wide coordination settings from the environment, validated once at startup.

With ``ENABLE_CLUSTER_MANAGEMENT`` false (the default) nothing else here is read. An invalid
value raises :class:`ClusterConfigError` with one line naming the variable and the expected form.

The environment only *seeds* this region's CardanoForgeCluster when it does not exist
(``CLUSTER_PRIORITY``, ``HEALTH_CHECK_*``); afterwards the resource is what operators edit with
kubectl, and its spec wins. ``HEALTH_CHECK_CA_BUNDLE`` and ``HEALTH_CHECK_TOKEN_FILE`` are files
mounted into the pod and are always taken from the environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from forge_manager.cluster.etcd_settings import EtcdConfigError, EtcdSettings, load_etcd_settings
from forge_manager.cluster.model import HealthCheckSpec, ParseError, parse_duration
from forge_manager.config import optional_path

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")

DEFAULT_POOL_LEASE_NAME = "cardano-forge-pool"
MAX_PRIORITY = 99
"""The CRD's bound: the +100 of an unhealthy region puts it behind every healthy one."""


class ClusterConfigError(ValueError):
    """One line: the variable, what was wrong, the expected form."""


@dataclass(frozen=True)
class ClusterSettings:
    """Everything cluster-wide coordination reads from the environment."""

    enabled: bool
    """``ENABLE_CLUSTER_MANAGEMENT``: compete for the pool-wide Lease across regions (false)."""
    cluster_name: str
    """``CLUSTER_NAME``: this region's name, e.g. us-east-1-prod (required when enabled)."""
    priority: int
    """``CLUSTER_PRIORITY``: seeds ``spec.priority``; lower forges first (1)."""
    health_check: HealthCheckSpec
    """``HEALTH_CHECK_ENDPOINT`` (none: no checks), ``HEALTH_CHECK_INTERVAL`` (30 s),
    ``HEALTH_CHECK_TIMEOUT`` (10 s), ``HEALTH_CHECK_FAILURE_THRESHOLD`` (3): seed
    ``spec.healthCheck``."""
    health_ca_bundle: Path | None
    """``HEALTH_CHECK_CA_BUNDLE``: CA certificates to verify the endpoint with (system CAs)."""
    health_token_file: Path | None
    """``HEALTH_CHECK_TOKEN_FILE``: file holding a bearer token sent to the endpoint (none)."""
    crd_group: str
    """``CLUSTER_CRD_GROUP``: API group of CardanoForgeCluster (cardano.io)."""
    crd_version: str
    """``CLUSTER_CRD_VERSION``: (v1)."""
    crd_plural: str
    """``CLUSTER_CRD_PLURAL``: (cardanoforgeclusters)."""
    crd_name: str
    """``CLUSTER_CRD_NAME``: this region's CardanoForgeCluster (default: CLUSTER_NAME)."""
    coordination_kubeconfig: Path | None
    """``COORDINATION_KUBECONFIG``: kubeconfig of the API server shared by all regions (none:
    the local cluster's API is the coordination API)."""
    coordination_namespace: str
    """``COORDINATION_NAMESPACE``: namespace, in the coordination API, of the resources and
    the pool-wide Lease (default: NAMESPACE)."""
    pool_lease_name: str
    """``POOL_LEASE_NAME``: the pool-wide Lease every region's local leader competes for
    (cardano-forge-pool). All regions of one pool must use the same name."""
    heartbeat_interval: float
    """``CLUSTER_HEARTBEAT_INTERVAL``: the local leader rewrites its status at least this often
    (5 s)."""
    stale_after: float
    """``CLUSTER_STALE_AFTER``: another region whose status has not changed for this long in
    our observation is considered dead (12 s); more than twice the heartbeat interval. Below the
    default lease duration, so a cut-off better region stops blocking the others by the time the
    pool-wide Lease has expired: a partition fails over in lease-bound time."""
    etcd: EtcdSettings | None = None
    """``COORDINATION_ETCD_*``: the pool-wide lock, the heartbeats and the regions' copies in an
    etcd cluster with a member per failure domain (:mod:`.etcd_store`); None: in the coordination
    API as above."""


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, "").strip() or default


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ClusterConfigError(f"{name}={env.get(name)!r} is not valid: expected true or false")


def _int(env: Mapping[str, str], name: str, default: str, minimum: int) -> int:
    raw = _get(env, name, default)
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ClusterConfigError(
            f"{name}={raw!r} is not valid: expected a whole number of at least {minimum}"
        )
    return value


def _seconds(env: Mapping[str, str], name: str, default: str) -> float:
    raw = _get(env, name, default)
    try:
        return parse_duration(raw, name)
    except ParseError:
        raise ClusterConfigError(
            f"{name}={raw!r} is not valid: expected seconds or a duration such as {default}s"
            if default.isdigit()
            else f"{name}={raw!r} is not valid: expected a duration such as {default}"
        ) from None


def _file(env: Mapping[str, str], name: str) -> Path | None:
    return optional_path(env, name, ClusterConfigError)


def _name(value: str, variable: str, *, label: bool = False) -> str:
    pattern, limit = (_DNS_LABEL, 63) if label else (_DNS_SUBDOMAIN, 253)
    if len(value) > limit or not pattern.match(value):
        kind = "a DNS label" if label else "a Kubernetes object name"
        raise ClusterConfigError(
            f"{variable}={value!r} is not valid: expected {kind} "
            "(lower-case letters, digits, '-'" + ("" if label else " and '.'") + ")"
        )
    return value


def load_cluster_settings(env: Mapping[str, str]) -> ClusterSettings:
    """Parse and validate; raises :class:`ClusterConfigError` on the first problem."""
    enabled = _bool(env, "ENABLE_CLUSTER_MANAGEMENT")
    raw_name = env.get("CLUSTER_NAME", "").strip()
    if enabled and not raw_name:
        raise ClusterConfigError(
            "CLUSTER_NAME is not set: expected this region's name, e.g. us-east-1-prod "
            "(required with ENABLE_CLUSTER_MANAGEMENT=true)"
        )
    namespace = env.get("NAMESPACE", "").strip() or "default"
    cluster_name = _name(raw_name or namespace, "CLUSTER_NAME")
    endpoint = env.get("HEALTH_CHECK_ENDPOINT", "").strip()
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise ClusterConfigError(
            f"HEALTH_CHECK_ENDPOINT={endpoint!r} is not valid: expected an http:// or https:// URL"
        )
    interval = _seconds(env, "HEALTH_CHECK_INTERVAL", "30")
    timeout = _seconds(env, "HEALTH_CHECK_TIMEOUT", "10")
    if timeout >= interval:
        raise ClusterConfigError(
            f"HEALTH_CHECK_TIMEOUT={timeout:g} must be less than HEALTH_CHECK_INTERVAL="
            f"{interval:g}: lower the timeout or raise the interval"
        )
    health = HealthCheckSpec(
        enabled=bool(endpoint),
        endpoint=endpoint,
        interval=interval,
        timeout=timeout,
        failure_threshold=_int(env, "HEALTH_CHECK_FAILURE_THRESHOLD", "3", 1),
    )
    raw_priority = _get(env, "CLUSTER_PRIORITY", "1")
    try:
        priority = int(raw_priority)
    except ValueError:
        priority = 0
    if not 1 <= priority <= MAX_PRIORITY:
        raise ClusterConfigError(
            f"CLUSTER_PRIORITY={raw_priority!r} is not valid: expected a whole number from 1 to "
            f"{MAX_PRIORITY}, lower forges first, e.g. 1"
        )
    heartbeat = _seconds(env, "CLUSTER_HEARTBEAT_INTERVAL", "5")
    stale_after = _seconds(env, "CLUSTER_STALE_AFTER", "12")
    if not stale_after > 2 * heartbeat:
        raise ClusterConfigError(
            f"CLUSTER_STALE_AFTER={stale_after:g} must exceed twice CLUSTER_HEARTBEAT_INTERVAL="
            f"{heartbeat:g}: raise CLUSTER_STALE_AFTER or lower the heartbeat interval"
        )
    pool_lease_name = _name(
        _get(env, "POOL_LEASE_NAME", DEFAULT_POOL_LEASE_NAME), "POOL_LEASE_NAME", label=True
    )
    crd_name = _name(_get(env, "CLUSTER_CRD_NAME", cluster_name), "CLUSTER_CRD_NAME")
    if len(pool_lease_name) + 1 + len(crd_name) > 253:
        raise ClusterConfigError(
            f"POOL_LEASE_NAME and CLUSTER_CRD_NAME are too long together: the heartbeat Lease "
            f"{pool_lease_name}-{crd_name} must be at most 253 characters"
        )
    try:
        etcd = load_etcd_settings(env)
    except EtcdConfigError as exc:
        raise ClusterConfigError(str(exc)) from None
    return ClusterSettings(
        enabled=enabled,
        cluster_name=cluster_name,
        priority=priority,
        health_check=health,
        health_ca_bundle=_file(env, "HEALTH_CHECK_CA_BUNDLE"),
        health_token_file=_file(env, "HEALTH_CHECK_TOKEN_FILE"),
        crd_group=_name(_get(env, "CLUSTER_CRD_GROUP", "cardano.io"), "CLUSTER_CRD_GROUP"),
        crd_version=_name(
            _get(env, "CLUSTER_CRD_VERSION", "v1"), "CLUSTER_CRD_VERSION", label=True
        ),
        crd_plural=_name(
            _get(env, "CLUSTER_CRD_PLURAL", "cardanoforgeclusters"),
            "CLUSTER_CRD_PLURAL",
            label=True,
        ),
        crd_name=crd_name,
        coordination_kubeconfig=_file(env, "COORDINATION_KUBECONFIG"),
        coordination_namespace=_name(
            _get(env, "COORDINATION_NAMESPACE", namespace), "COORDINATION_NAMESPACE", label=True
        ),
        pool_lease_name=_name(
            _get(env, "POOL_LEASE_NAME", DEFAULT_POOL_LEASE_NAME), "POOL_LEASE_NAME"
        ),
        heartbeat_interval=heartbeat,
        stale_after=stale_after,
        etcd=etcd,
    )
