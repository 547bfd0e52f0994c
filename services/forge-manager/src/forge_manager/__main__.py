"""Entry point: ``forge-manager`` / ``python -m forge_manager``."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from forge_manager import __version__, failpoints
from forge_manager.clock import now as boottime_now
from forge_manager.cluster.round_trips import CoordinationTooSlow
from forge_manager.cluster.settings import (
    ClusterConfigError,
    ClusterSettings,
    load_cluster_settings,
)
from forge_manager.config import DEFAULT_TARGET_DIR, ConfigError, Settings, load_settings
from forge_manager.credentials import CredentialFiles, remove_targets, remove_temporaries
from forge_manager.decision import PERMIT_LOCAL_ONLY, Permit, may_signal
from forge_manager.events import (
    ApiEventSink,
    EventRecorder,
    EventsConfigError,
    RoutingSink,
    events_enabled,
)
from forge_manager.events import pod as event_pod
from forge_manager.events import region as event_region
from forge_manager.logs import setup_logging
from forge_manager.manager import ForgeManager
from forge_manager.metrics import ForgeMetrics
from forge_manager.node_signal import NodeWatcher, SignalError
from forge_manager.node_sync import (
    NodeSyncCheck,
    NodeSyncCollector,
    NodeSyncConfigError,
    NodeSyncSettings,
    TipSampler,
    load_node_sync_settings,
)
from forge_manager.permit_file import PermitFile
from forge_manager.server import Endpoints, MetricsServer
from forge_manager.watch import LeaseWatchSource, Runnable, WatchedLease, watch_api_client

if TYPE_CHECKING:
    from forge_manager.cluster.coordinator import ClusterCoordinator

log = logging.getLogger("forge_manager")


def _fail(message: str, env: Mapping[str, str], settings: Settings | None = None) -> int:
    """Exit status 2 with one line, after leaving the node not forging: a manager that cannot
    start must not leave a previous incarnation's node forging while the Lease expires."""
    done = leave_not_forging(env, settings)
    suffix = f" ({done})" if done else ""
    print(f"forge-manager: {message}{suffix}", file=sys.stderr, flush=True)
    return 2


def _targets_from_env(env: Mapping[str, str]) -> tuple[Path, ...]:
    """The TARGET_* paths (or their defaults) that are usable, when the settings are not."""
    paths = []
    for var, name in (("TARGET_KES_KEY", "kes.skey"), ("TARGET_VRF_KEY", "vrf.skey"),
                      ("TARGET_OP_CERT", "node.cert")):  # fmt: skip
        path = Path(env.get(var, "").strip() or str(DEFAULT_TARGET_DIR / name))
        if path.is_absolute():
            paths.append(path)
    return tuple(paths)


def leave_not_forging(env: Mapping[str, str], settings: Settings | None) -> str:
    """Remove the credential files (and crash-left temporaries) a previous run left, then tell
    the node: SIGHUP when that is safe (its socket answers, or it was running for longer than
    the start grace: its handler is installed), or stop it when the files cannot be removed.
    Best effort, from the settings or else from the environment; returns what was done."""
    sock: Path | None
    if settings is not None:
        targets: tuple[Path, ...] = settings.targets
        name, pid_file, sock = (
            settings.node_process_name,
            settings.node_pid_file,
            settings.node_socket,
        )
    else:
        targets = _targets_from_env(env)
        name = env.get("CARDANO_NODE_PROCESS_NAME", "").strip() or "cardano-node"
        raw_pid, raw_sock = env.get("CARDANO_NODE_PID_FILE", ""), env.get("NODE_SOCKET", "")
        pid_file = Path(raw_pid) if raw_pid.strip() else None
        sock = Path(raw_sock) if raw_sock.strip() else None
    temporaries = remove_temporaries(targets)
    removed, errors = remove_targets(targets)
    done = []
    if removed or temporaries:
        done.append(
            f"removed {removed} credential file(s) and {temporaries} temporary file(s) a "
            "previous run left"
        )
    if errors:
        done.append("could not remove " + "; ".join(errors))
    if not (removed or errors) or sock is None or "/" in name:
        return "; ".join(done)
    watcher = NodeWatcher(name, pid_file, sock)
    try:
        node = watcher.observe()
        if errors and node.pids:
            done.append(f"stopped cardano-node {list(node.pids)} with {watcher.stop(node.pids)}")
        elif node.pids and may_signal(node, forge=False):
            watcher.send_sighup(node.pids)
            done.append(f"signalled cardano-node {list(node.pids)} to stop forging")
    except SignalError as exc:
        done.append(str(exc))
    finally:
        watcher.close()
    return "; ".join(done)


def build(
    settings: Settings,
    cluster: ClusterSettings | None = None,
    node_sync: tuple[NodeSyncSettings, TipSampler] | None = None,
    events: bool = False,
) -> tuple[
    ForgeManager, MetricsServer, ClusterCoordinator | None, list[Runnable], EventRecorder | None
]:
    """The manager, its server, the coordinator (with cluster management), the watches the
    caller starts before the loops and stops after them, and the Event recorder (with
    ``events``) the caller starts and stops likewise."""
    from forge_manager.lease import LeaseClient, api_client  # noqa: PLC0415 (slow import)

    api = api_client()
    lease = LeaseClient(
        api,
        namespace=settings.namespace,
        name=settings.lease_name,
        identity=settings.pod_name,
        lease_duration=settings.lease_duration,
        request_timeout=settings.request_timeout,
    )
    files = CredentialFiles(sources=settings.sources, targets=settings.targets)
    node = NodeWatcher(settings.node_process_name, settings.node_pid_file, settings.node_socket)
    registry = CollectorRegistry()
    coordinator: ClusterCoordinator | None = None
    enabled = cluster is not None and cluster.enabled
    sync_check = NodeSyncCheck(node_sync[0], node_sync[1].latest) if node_sync is not None else None

    def cluster_permit() -> Permit:  # fail closed until the coordinator exists
        if coordinator is None:
            return Permit(False, "cluster coordination not started")
        return coordinator.permit()

    lease_watch = WatchedLease(  # a follower sees the Lease change through a watch
        LeaseWatchSource(
            watch_api_client(api),
            namespace=settings.namespace,
            name=settings.lease_name,
            request_timeout=settings.request_timeout,
        ),
        settings.lease_name,
        what=f"lease {settings.namespace}/{settings.lease_name}",
        clock=boottime_now,
        retry_period=settings.retry_period,
    )
    manager = ForgeManager(
        settings,
        lease=lease,
        lease_watch=lease_watch,
        files=files,
        node=node,
        signal_node=node.send_sighup,
        stop_node=node.stop,
        permit=cluster_permit if enabled else (lambda: PERMIT_LOCAL_ONLY),
        permit_file=(
            PermitFile(settings.forge_permit_file) if settings.forge_permit_file else None
        ),
        node_sync=sync_check,
    )
    lease_watch.on_change(manager.lease_changed)
    watches: list[Runnable] = [lease_watch]
    if cluster is not None and enabled:
        from forge_manager.cluster.wiring import build_coordinator  # noqa: PLC0415

        coordinator = build_coordinator(
            settings,
            cluster,
            registry,
            local_leader=manager.is_local_leader,
            reconcile=manager.reconcile_now,
            settle_left=manager.demotion_settle_left,
        )
        manager.on_leadership_change = coordinator.wake
        watches.extend(coordinator.watches)
    manager.metrics = ForgeMetrics(
        registry, pod=settings.pod_name, cluster=settings.cluster_name, sample=manager.sample
    )
    recorder: EventRecorder | None = None
    if events:
        recorder = event_recorder(settings, cluster, api, manager.metrics)
        this_pod = event_pod(settings.pod_name, settings.namespace, os.environ.get("POD_UID", ""))
        manager.emit = lambda reason, message, kind: recorder.record(
            this_pod, reason, message, kind
        )
        if coordinator is not None and cluster is not None:
            this_region = event_region(cluster.crd_name, cluster.coordination_namespace)
            coordinator.emit = lambda reason, message, kind: recorder.record(
                this_region, reason, message, kind
            )
    if sync_check is not None:
        registry.register(NodeSyncCollector(sync_check, settings.pod_name, settings.cluster_name))
    server = MetricsServer(
        settings.metrics_bind_address,
        settings.metrics_port,
        Endpoints(
            startup_state=manager.startup_state,
            seconds_since_cycle=manager.seconds_since_cycle,
            renew_deadline=settings.renew_deadline,
            registry=registry,
            node_sync=sync_check.status if sync_check is not None else None,
        ),
    )
    return manager, server, coordinator, watches, recorder


def event_recorder(
    settings: Settings, cluster: ClusterSettings | None, api: object, metrics: ForgeMetrics
) -> EventRecorder:
    """Events through the local API (the pod's) and, with cluster management, the coordination
    API (the region's CardanoForgeCluster); bounded and best effort (events.py)."""
    local = ApiEventSink(api, instance=settings.pod_name, request_timeout=settings.request_timeout)
    remote = None
    if cluster is not None and cluster.enabled and cluster.coordination_kubeconfig:
        from forge_manager.cluster.resource import coordination_api_client  # noqa: PLC0415

        remote = ApiEventSink(
            coordination_api_client(cluster.coordination_kubeconfig),
            instance=settings.pod_name,
            request_timeout=settings.request_timeout,
        )
    return EventRecorder(
        RoutingSink(local, remote),
        clock=boottime_now,
        wall=time.time,
        counters=metrics,
    )


def main() -> int:
    env = os.environ
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", env)
    # Before anything else: an install interrupted by a crash left key material in temporaries.
    stale = remove_temporaries(settings.targets)
    try:
        cluster = load_cluster_settings(env)
    except ClusterConfigError as exc:
        return _fail(f"configuration error: {exc}", env, settings)
    setup_logging(settings.log_level, settings.log_format)
    if stale:
        log.info("removed %d temporary file(s) left by an interrupted install", stale)
    try:
        sync_settings = load_node_sync_settings(os.environ, interval=settings.retry_period)
    except NodeSyncConfigError as exc:
        return _fail(f"configuration error: {exc}", env, settings)
    sampler = TipSampler(sync_settings)
    try:
        events = events_enabled(env)
    except EventsConfigError as exc:
        return _fail(f"configuration error: {exc}", env, settings)
    try:
        manager, server, coordinator, watches, recorder = build(
            settings, cluster, (sync_settings, sampler), events
        )
    except OSError as exc:
        return _fail(
            f"cannot listen on METRICS_PORT={settings.metrics_port}: {exc.strerror}", env, settings
        )
    except Exception as exc:  # kubeconfig missing or invalid
        return _fail(
            "no Kubernetes configuration: neither in-cluster service account nor KUBECONFIG "
            f"usable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
            env,
            settings,
        )

    if coordinator is not None:
        try:
            coordinator.check_api()
        except CoordinationTooSlow as exc:
            return _fail(str(exc), env, settings)

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()
        manager.wake()
        if coordinator is not None:
            coordinator.wake()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    if recorder is not None:
        recorder.start()
    else:
        log.info("KUBE_EVENTS is off: no Kubernetes Events are posted")
    if sync_settings.enabled:
        sampler.start()
        log.info(
            "node sync check: %s on %s, at most %d slots from the wall clock, leader grace %g s",
            sync_settings.metrics_url, sync_settings.network.name,
            sync_settings.max_lag_slots, sync_settings.grace,
        )  # fmt: skip
    else:
        log.warning(
            "NODE_SYNC_CHECK is off: a pod whose cardano-node is replaying its ledger or far "
            "behind the chain can win the Lease and forge blocks that will be lost"
        )
    if failpoints.active() is not None:
        log.warning(
            "failpoints are armed from %s (%s): a test hook that can freeze this process; "
            "never set it outside fault-injection tests",
            failpoints.active(), failpoints.ENV,
        )  # fmt: skip
    log.info(
        "forge-manager %s started as %s (lease %s/%s, duration %d s, renew deadline %g s, "
        "retry %g s, request timeout %g s)",
        __version__, settings.pod_name, settings.namespace, settings.lease_name,
        settings.lease_duration, settings.renew_deadline, settings.retry_period,
        settings.request_timeout,
    )  # fmt: skip
    for watch in watches:
        watch.start()
    cluster_thread: threading.Thread | None = None
    if coordinator is not None:
        cluster_thread = threading.Thread(
            target=coordinator.run, args=(stop,), name="cluster", daemon=True
        )
        cluster_thread.start()
    try:
        manager.run(stop)
    finally:
        if coordinator is not None and cluster_thread is not None:
            cluster_thread.join(timeout=settings.renew_deadline)
            log.info("shutdown: %s", coordinator.shutdown())
        for watch in watches:
            watch.stop()
        server.stop()
        sampler.stop()
        if recorder is not None:
            recorder.stop(timeout=settings.request_timeout * 2)
    log.info("forge-manager stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
