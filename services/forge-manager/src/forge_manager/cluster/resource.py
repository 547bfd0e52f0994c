"""CardanoForgeCluster and heartbeat-Lease I/O in the coordination API (the ``kubernetes`` client).

* The coordination API is the local cluster's API, or, with ``COORDINATION_KUBECONFIG``, a shared
  API server every region reaches (:func:`coordination_api_client`).
* Every call carries ``_request_timeout`` and the client makes one attempt per call (no urllib3
  retries), so no call blocks the loop for longer than the request timeout.
* Errors surface as :class:`CoordinationError` subclasses; the caller turns every one of them
  into "not forging" (see :mod:`.policy`).
* This region's status is written with PUT on the status subresource against the
  resourceVersion last read: a 409 means someone changed the object (an operator's edit, a
  stale ex-leader) and the next cycle reads again.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from forge_manager.cluster.settings import ClusterSettings
from forge_manager.lease import LeaseError, LeaseLost
from forge_manager.watch import Watcher

KIND = "CardanoForgeCluster"
MANAGED_BY = {"app.kubernetes.io/managed-by": "cardano-forge-manager"}
HEARTBEAT_LABEL = "cardano.io/forge-pool"
REGION_ANNOTATION = "cardano.io/region"


class CoordinationError(Exception):
    """A call to the coordination API failed; never a reason to forge."""


class ResourceNotFound(CoordinationError):
    """404: the object (or the CustomResourceDefinition itself) does not exist."""


class ResourceRejected(CoordinationError):
    """400/422: the API server's schema rejected what we sent."""


class ResourceConflict(CoordinationError):
    """409: the object changed since we read it."""


def _message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
        text = str(body.get("message") or "")
    except (ValueError, AttributeError):
        text = ""
    return f"HTTP {exc.status} {exc.reason}" + (f": {text}" if text else "")


def call(fn: Any, *args: Any, timeout: float, **kwargs: Any) -> Any:
    """Call the API with a timeout, mapping every failure to a :class:`CoordinationError`."""
    try:
        return fn(*args, _request_timeout=timeout, **kwargs)
    except ApiException as exc:
        message = _message(exc)[:500]
        if exc.status == 404:
            raise ResourceNotFound(message) from None
        if exc.status == 409:
            raise ResourceConflict(message) from None
        if exc.status in (400, 422):
            raise ResourceRejected(message) from None
        raise CoordinationError(message) from None
    except Exception as exc:  # urllib3 timeouts, connection refused, TLS errors
        raise CoordinationError(f"{type(exc).__name__}: {exc}"[:300]) from None


def coordination_api_client(kubeconfig: Path | None) -> Any:
    """An ApiClient for the coordination API: ``kubeconfig`` when given, else in-cluster
    configuration, else ``KUBECONFIG``; one attempt per call."""
    configuration = client.Configuration()
    if kubeconfig is not None:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=configuration
        )
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.retries = False
    return client.ApiClient(configuration)


def _duration(seconds: float) -> str:
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"


def seed_body(s: ClusterSettings) -> dict[str, Any]:
    """This region's resource as the environment describes it (used only when it is absent)."""
    hc = s.health_check
    health: dict[str, Any] = {
        "enabled": hc.enabled,
        "interval": _duration(hc.interval),
        "timeout": _duration(hc.timeout),
        "failureThreshold": hc.failure_threshold,
    }
    if hc.endpoint:
        health["endpoint"] = hc.endpoint
    return {
        "apiVersion": f"{s.crd_group}/{s.crd_version}",
        "kind": KIND,
        "metadata": {"name": s.crd_name, "labels": dict(MANAGED_BY)},
        "spec": {
            "region": s.cluster_name,
            "priority": s.priority,
            "forgeState": "Priority-based",
            "healthCheck": health,
        },
    }


class ForgeClusterStore:
    """The CardanoForgeCluster objects of one namespace of the coordination API."""

    def __init__(self, api: Any, s: ClusterSettings, *, request_timeout: float) -> None:
        self._api = client.CustomObjectsApi(api)
        self.group, self.version, self.plural = s.crd_group, s.crd_version, s.crd_plural
        self.namespace = s.coordination_namespace
        self.timeout = request_timeout

    def list(self) -> list[dict[str, Any]]:
        """Every region's object. A missing CRD is :class:`ResourceNotFound`."""
        result = call(
            self._api.list_namespaced_custom_object,
            self.group,
            self.version,
            self.namespace,
            self.plural,
            timeout=self.timeout,
        )
        items = result.get("items") if isinstance(result, dict) else None
        if not isinstance(items, list):
            raise CoordinationError("list answer without items")
        return [i for i in items if isinstance(i, dict)]

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        created = call(
            self._api.create_namespaced_custom_object,
            self.group,
            self.version,
            self.namespace,
            self.plural,
            body,
            timeout=self.timeout,
        )
        return created if isinstance(created, dict) else {}

    def replace_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """PUT the status subresource against ``obj``'s resourceVersion."""
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        body = {
            "apiVersion": f"{self.group}/{self.version}",
            "kind": KIND,
            "metadata": {"name": name, "resourceVersion": meta.get("resourceVersion")},
            "spec": obj.get("spec"),
            "status": status,
        }
        updated = call(
            self._api.replace_namespaced_custom_object_status,
            self.group,
            self.version,
            self.namespace,
            self.plural,
            name,
            body,
            timeout=self.timeout,
        )
        return updated if isinstance(updated, dict) else {}


class HeartbeatStore:
    """Per-region heartbeat Leases ``<pool>-<region>`` in the coordination namespace.

    With ``watch`` (a :class:`~forge_manager.watch.Watcher` of the Leases labelled
    :data:`HEARTBEAT_LABEL` = ``pool``), :meth:`observed` gives each region's heartbeat as the
    watch saw it, and when; the coordinator lists only while the watch is not live."""

    def __init__(
        self,
        api: Any,
        *,
        namespace: str,
        pool: str,
        request_timeout: float,
        lease_seconds: int,
        watch: Watcher | None = None,
    ) -> None:
        self.watch = watch
        self._api = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.pool = pool
        self.timeout = request_timeout
        self.lease_seconds = lease_seconds
        self._own: Any = None

    def name(self, region: str) -> str:
        return f"{self.pool}-{region}"

    def list(self) -> dict[str, str]:
        """resourceVersion of each region's heartbeat Lease, by region."""
        result = call(
            self._api.list_namespaced_lease,
            self.namespace,
            label_selector=f"{HEARTBEAT_LABEL}={self.pool}",
            timeout=self.timeout,
        )
        out: dict[str, str] = {}
        for lease in result.items or []:
            region = (lease.metadata.annotations or {}).get(REGION_ANNOTATION)
            if region and lease.metadata.name == self.name(region):
                out[region] = str(lease.metadata.resource_version)
        return out

    def observed(self) -> dict[str, tuple[str, float]] | None:
        """(resourceVersion, when first seen) of each region's heartbeat Lease, by region, as
        the watch saw them; None while it is not live (then :meth:`list` instead)."""
        if self.watch is None:
            return None
        view = self.watch.view()
        if not view.live:
            return None
        out: dict[str, tuple[str, float]] = {}
        for name, seen in view.objects.items():
            if seen.obj is None:
                continue
            meta = seen.obj.get("metadata") or {}
            region = (meta.get("annotations") or {}).get(REGION_ANNOTATION)
            if region and name == self.name(region):
                out[region] = (seen.version, seen.seen_at)
        return out

    def beat(self, region: str, pod: str) -> None:
        """Renew this region's heartbeat (create it when absent)."""
        name = self.name(region)
        now = dt.datetime.now(dt.UTC)
        spec = client.V1LeaseSpec(
            holder_identity=pod, lease_duration_seconds=self.lease_seconds, renew_time=now
        )
        if self._own is None:
            try:
                self._own = call(
                    self._api.read_namespaced_lease, name, self.namespace, timeout=self.timeout
                )
            except ResourceNotFound:
                meta = client.V1ObjectMeta(
                    name=name,
                    labels={**MANAGED_BY, HEARTBEAT_LABEL: self.pool},
                    annotations={REGION_ANNOTATION: region},
                )
                self._own = call(
                    self._api.create_namespaced_lease,
                    self.namespace,
                    client.V1Lease(metadata=meta, spec=spec),
                    timeout=self.timeout,
                )
                return
        body = self._own
        body.spec = spec
        try:
            self._own = call(
                self._api.replace_namespaced_lease, name, self.namespace, body, timeout=self.timeout
            )
        except CoordinationError:
            self._own = None  # read again next time
            raise


def vacant_lease_creator(
    api: Any, *, namespace: str, name: str, lease_seconds: int, request_timeout: float
) -> Any:
    """A function that creates the Lease ``name`` with no holder (see
    ``PoolLease.create_vacant``); a 409 (it exists by now) raises ``LeaseLost``, any other
    failure ``LeaseError``."""
    leases = client.CoordinationV1Api(api)
    body = client.V1Lease(
        metadata=client.V1ObjectMeta(name=name, labels=dict(MANAGED_BY)),
        spec=client.V1LeaseSpec(lease_duration_seconds=lease_seconds, lease_transitions=0),
    )

    def create() -> None:
        try:
            call(leases.create_namespaced_lease, namespace, body, timeout=request_timeout)
        except ResourceConflict as exc:
            raise LeaseLost(f"lease {name} exists: {exc}") from None
        except CoordinationError as exc:
            raise LeaseError(str(exc)) from None

    return create
