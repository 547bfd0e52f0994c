"""Building the cluster coordinator from the settings (called by ``__main__``)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from forge_manager.clock import now as boottime_now
from forge_manager.cluster.coordinator import ClusterCoordinator
from forge_manager.cluster.health_check import HealthChecker
from forge_manager.cluster.metrics import ClusterMetrics
from forge_manager.cluster.model import holder_identity
from forge_manager.cluster.pool_lease import PoolLease
from forge_manager.cluster.resource import (
    HEARTBEAT_LABEL,
    ForgeClusterStore,
    HeartbeatStore,
    coordination_api_client,
    seed_body,
    vacant_lease_creator,
)
from forge_manager.cluster.round_trips import RoundTrips, probe
from forge_manager.cluster.settings import ClusterSettings
from forge_manager.config import Settings
from forge_manager.decision import worth_waking
from forge_manager.lease import LeaseRecord
from forge_manager.watch import LeaseWatchSource, WatchedLease, Watcher, watch_api_client


def build_coordinator(
    settings: Settings,
    cluster: ClusterSettings,
    registry: CollectorRegistry,
    *,
    local_leader: Callable[[], bool],
    reconcile: Callable[[], tuple[bool, str]],
) -> ClusterCoordinator:
    """The pool-wide Lease uses the local Lease's durations and request timeout, so the start-up
    timing check (:mod:`forge_manager.timing`) covers both. The start-up probe of the
    coordination API (``ClusterCoordinator.check_api``) reads the pool-wide Lease with the renew
    deadline as its timeout, to measure a round trip longer than a request may take."""
    from forge_manager.lease import LeaseClient  # noqa: PLC0415 (slow import)

    api = coordination_api_client(cluster.coordination_kubeconfig)
    # Followers of the pool-wide Lease and of the regions' heartbeats watch them (watch.py).
    watch_api = watch_api_client(api)
    pool_watch = WatchedLease(
        LeaseWatchSource(
            watch_api,
            namespace=cluster.coordination_namespace,
            name=cluster.pool_lease_name,
            request_timeout=settings.request_timeout,
        ),
        cluster.pool_lease_name,
        what=f"pool lease {cluster.coordination_namespace}/{cluster.pool_lease_name}",
        clock=boottime_now,
        retry_period=settings.retry_period,
    )
    heartbeat_watch = Watcher(
        LeaseWatchSource(
            watch_api,
            namespace=cluster.coordination_namespace,
            label_selector=f"{HEARTBEAT_LABEL}={cluster.pool_lease_name}",
            request_timeout=settings.request_timeout,
        ),
        what=f"heartbeats {cluster.coordination_namespace}/{cluster.pool_lease_name}-*",
        clock=boottime_now,
        retry_period=settings.retry_period,
    )
    identity = holder_identity(cluster.crd_name, settings.pod_name)
    backend = LeaseClient(
        api,
        namespace=cluster.coordination_namespace,
        name=cluster.pool_lease_name,
        identity=identity,
        lease_duration=settings.lease_duration,
        request_timeout=settings.request_timeout,
    )
    metrics = ClusterMetrics(registry, cluster.cluster_name)
    probe_backend = LeaseClient(  # the start-up probe waits longer than a request may take
        api,
        namespace=cluster.coordination_namespace,
        name=cluster.pool_lease_name,
        identity=identity,
        lease_duration=settings.lease_duration,
        request_timeout=settings.renew_deadline,
    )
    coordinator = ClusterCoordinator(
        cluster,
        pod=settings.pod_name,
        renew_deadline=settings.renew_deadline,
        retry_period=settings.retry_period,
        store=ForgeClusterStore(api, cluster, request_timeout=settings.request_timeout),
        heartbeats=HeartbeatStore(
            api,
            namespace=cluster.coordination_namespace,
            pool=cluster.pool_lease_name,
            request_timeout=settings.request_timeout,
            lease_seconds=int(cluster.stale_after),
            watch=heartbeat_watch,
        ),
        pool=PoolLease(
            backend,
            identity=identity,
            lease_duration=float(settings.lease_duration),
            renew_deadline=settings.renew_deadline,
            clock=boottime_now,
            round_trips=RoundTrips(settings.request_timeout),
            on_write=metrics.pool_lease_write,
            create_vacant=vacant_lease_creator(
                api,
                namespace=cluster.coordination_namespace,
                name=cluster.pool_lease_name,
                lease_seconds=settings.lease_duration,
                request_timeout=settings.request_timeout,
            ),
            watch=pool_watch,
        ),
        health=HealthChecker(
            cluster.health_check,
            metrics=metrics,
            ca_bundle=cluster.health_ca_bundle,
            token_file=cluster.health_token_file,
        ),
        seed=seed_body(cluster),
        local_leader=local_leader,
        reconcile=reconcile,
        metrics=metrics,
        api_probe=lambda: probe(probe_backend.read, request_timeout=settings.request_timeout),
    )
    coordinator.watches = (pool_watch, heartbeat_watch)

    def pool_changed(before: LeaseRecord | None, after: LeaseRecord | None) -> None:
        if worth_waking(before, after):  # released, taken, deleted: decide now
            coordinator.wake()

    pool_watch.on_change(pool_changed)
    return coordinator
