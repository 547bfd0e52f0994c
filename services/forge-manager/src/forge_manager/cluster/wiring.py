"""Building the cluster coordinator from the settings (called by ``__main__``)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from forge_manager.clock import now as boottime_now
from forge_manager.cluster.coordinator import ClusterCoordinator, Heartbeats, ResourceStore
from forge_manager.cluster.health_check import HealthChecker
from forge_manager.cluster.metrics import ClusterMetrics
from forge_manager.cluster.model import holder_identity
from forge_manager.cluster.pool_lease import LeaseBackend, PoolLease
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
from forge_manager.timing import DEMOTION_BUDGET_S
from forge_manager.watch import LeaseWatchSource, WatchedLease, Watcher, watch_api_client


def build_coordinator(
    settings: Settings,
    cluster: ClusterSettings,
    registry: CollectorRegistry,
    *,
    local_leader: Callable[[], bool],
    reconcile: Callable[[], tuple[bool, str]],
    settle_left: Callable[[], float] | None = None,
) -> ClusterCoordinator:
    """The pool-wide Lease uses the local Lease's durations and request timeout, so the start-up
    timing check (:mod:`forge_manager.timing`) covers both. The start-up probe of the
    coordination API (``ClusterCoordinator.check_api``) reads the pool-wide Lease with the renew
    deadline as its timeout, to measure a round trip longer than a request may take."""
    from forge_manager.lease import LeaseClient  # noqa: PLC0415 (slow import)

    api = coordination_api_client(cluster.coordination_kubeconfig)
    identity = holder_identity(cluster.crd_name, settings.pod_name)
    metrics = ClusterMetrics(registry, cluster.cluster_name)
    store: ResourceStore
    heartbeats: Heartbeats
    backend: LeaseBackend
    probe_read: Callable[[], object]
    create_vacant: Callable[[], object]
    # Followers of the pool-wide Lease and of the regions' heartbeats watch them: through the
    # API server's watch (watch.py) or etcd's (etcd_watch.py).
    pool_watch: WatchedLease | None = None
    heartbeat_watch: Watcher | None = None
    if cluster.etcd is not None:
        # etcd across the failure domains: the lock, heartbeats and regions' copies there; this
        # region's CardanoForgeCluster in its own cluster (``api`` is the local API then).
        from forge_manager.cluster.etcd_client import Etcd, prefix_end  # noqa: PLC0415
        from forge_manager.cluster.etcd_store import (  # noqa: PLC0415
            EtcdHeartbeats,
            EtcdPoolLease,
            Keys,
            RegionDirectory,
            watched_record,
        )
        from forge_manager.cluster.etcd_watch import (  # noqa: PLC0415
            EtcdWatchSource,
            HttpWatchTransport,
            key_name,
            suffix_name,
        )

        etcd = Etcd(cluster.etcd, timeout=settings.request_timeout)
        keys = Keys(cluster.etcd.prefix, cluster.pool_lease_name)
        lock = EtcdPoolLease(
            etcd, key=keys.lease, identity=identity, lease_duration=settings.lease_duration
        )
        backend, create_vacant = lock, lock.create_vacant
        probe_read = EtcdPoolLease(  # the start-up probe waits longer than a request may take
            Etcd(cluster.etcd, timeout=settings.renew_deadline),
            key=keys.lease,
            identity=identity,
            lease_duration=settings.lease_duration,
        ).read
        store = RegionDirectory(
            ForgeClusterStore(api, cluster, request_timeout=settings.request_timeout),
            etcd,
            keys,
            region=cluster.crd_name,
        )
        transport = HttpWatchTransport(cluster.etcd, request_timeout=settings.request_timeout)
        where = f"{cluster.etcd.prefix}/{cluster.pool_lease_name}"
        pool_watch = WatchedLease(
            EtcdWatchSource(
                Etcd(cluster.etcd, timeout=settings.request_timeout),  # the watcher's thread
                transport,
                key=keys.lease,
                range_end=None,
                name_of=key_name(keys.lease),
                clock=boottime_now,
                calls=etcd,
            ),
            keys.lease,
            what=f"pool lock etcd {where}/lease",
            clock=boottime_now,
            retry_period=settings.retry_period,
            record=watched_record,
        )
        heartbeat_watch = Watcher(
            EtcdWatchSource(
                Etcd(cluster.etcd, timeout=settings.request_timeout),
                transport,
                key=keys.heartbeats,
                range_end=prefix_end(keys.heartbeats),
                name_of=suffix_name(keys.heartbeats),
                clock=boottime_now,
                calls=etcd,
            ),
            what=f"heartbeats etcd {where}/heartbeats/",
            clock=boottime_now,
            retry_period=settings.retry_period,
        )
        heartbeats = EtcdHeartbeats(etcd, keys, watch=heartbeat_watch)
    else:
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
        backend = LeaseClient(
            api,
            namespace=cluster.coordination_namespace,
            name=cluster.pool_lease_name,
            identity=identity,
            lease_duration=settings.lease_duration,
            request_timeout=settings.request_timeout,
        )
        probe_read = LeaseClient(  # the start-up probe waits longer than a request may take
            api,
            namespace=cluster.coordination_namespace,
            name=cluster.pool_lease_name,
            identity=identity,
            lease_duration=settings.lease_duration,
            request_timeout=settings.renew_deadline,
        ).read
        create_vacant = vacant_lease_creator(
            api,
            namespace=cluster.coordination_namespace,
            name=cluster.pool_lease_name,
            lease_seconds=settings.lease_duration,
            request_timeout=settings.request_timeout,
        )
        store = ForgeClusterStore(api, cluster, request_timeout=settings.request_timeout)
        heartbeats = HeartbeatStore(
            api,
            namespace=cluster.coordination_namespace,
            pool=cluster.pool_lease_name,
            request_timeout=settings.request_timeout,
            lease_seconds=int(cluster.stale_after),
            watch=heartbeat_watch,
        )
    coordinator = ClusterCoordinator(
        cluster,
        pod=settings.pod_name,
        renew_deadline=settings.renew_deadline,
        retry_period=settings.retry_period,
        store=store,
        heartbeats=heartbeats,
        pool=PoolLease(
            backend,
            identity=identity,
            lease_duration=float(settings.lease_duration),
            renew_deadline=settings.renew_deadline,
            clock=boottime_now,
            round_trips=RoundTrips(settings.request_timeout),
            on_write=metrics.pool_lease_write,
            create_vacant=create_vacant,
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
        settle_left=settle_left if settle_left is not None else lambda: DEMOTION_BUDGET_S,
        api_probe=lambda: probe(probe_read, request_timeout=settings.request_timeout),
    )
    if pool_watch is not None and heartbeat_watch is not None:
        coordinator.watches = (pool_watch, heartbeat_watch)

        def pool_changed(before: LeaseRecord | None, after: LeaseRecord | None) -> None:
            if worth_waking(before, after):  # released, taken, deleted: decide now
                coordinator.wake()

        pool_watch.on_change(pool_changed)
    return coordinator
