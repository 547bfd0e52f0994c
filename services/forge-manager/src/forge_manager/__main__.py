"""Entry point: ``forge-manager`` / ``python -m forge_manager``."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from forge_manager import __version__
from forge_manager.cluster.settings import (
    ClusterConfigError,
    ClusterSettings,
    load_cluster_settings,
)
from forge_manager.config import ConfigError, Settings, load_settings
from forge_manager.credentials import CredentialFiles
from forge_manager.decision import PERMIT_LOCAL_ONLY, Permit
from forge_manager.logs import setup_logging
from forge_manager.manager import ForgeManager
from forge_manager.metrics import ForgeMetrics
from forge_manager.node_signal import NodeWatcher
from forge_manager.permit_file import PermitFile
from forge_manager.server import Endpoints, MetricsServer

if TYPE_CHECKING:
    from forge_manager.cluster.coordinator import ClusterCoordinator

log = logging.getLogger("forge_manager")


def _fail(message: str) -> int:
    print(f"forge-manager: {message}", file=sys.stderr, flush=True)
    return 2


def build(
    settings: Settings, cluster: ClusterSettings | None = None
) -> tuple[ForgeManager, MetricsServer, ClusterCoordinator | None]:
    from forge_manager.lease import LeaseClient, api_client  # noqa: PLC0415 (slow import)

    lease = LeaseClient(
        api_client(),
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

    def cluster_permit() -> Permit:  # fail closed until the coordinator exists
        if coordinator is None:
            return Permit(False, "cluster coordination not started")
        return coordinator.permit()

    manager = ForgeManager(
        settings,
        lease=lease,
        files=files,
        node=node,
        signal_node=node.send_sighup,
        stop_node=node.stop,
        permit=cluster_permit if enabled else (lambda: PERMIT_LOCAL_ONLY),
        permit_file=(
            PermitFile(settings.forge_permit_file) if settings.forge_permit_file else None
        ),
    )
    if cluster is not None and enabled:
        from forge_manager.cluster.wiring import build_coordinator  # noqa: PLC0415

        coordinator = build_coordinator(
            settings,
            cluster,
            registry,
            local_leader=manager.is_local_leader,
            reconcile=manager.reconcile_now,
        )
        manager.on_leadership_change = coordinator.wake
    manager.metrics = ForgeMetrics(
        registry, pod=settings.pod_name, cluster=settings.cluster_name, sample=manager.sample
    )
    server = MetricsServer(
        settings.metrics_bind_address,
        settings.metrics_port,
        Endpoints(
            startup_state=manager.startup_state,
            seconds_since_cycle=manager.seconds_since_cycle,
            renew_deadline=settings.renew_deadline,
            registry=registry,
        ),
    )
    return manager, server, coordinator


def main() -> int:
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}")
    try:
        cluster = load_cluster_settings(os.environ)
    except ClusterConfigError as exc:
        return _fail(f"configuration error: {exc}")
    setup_logging(settings.log_level, settings.log_format)
    try:
        manager, server, coordinator = build(settings, cluster)
    except OSError as exc:
        return _fail(f"cannot listen on METRICS_PORT={settings.metrics_port}: {exc.strerror}")
    except Exception as exc:  # kubeconfig missing or invalid
        return _fail(
            "no Kubernetes configuration: neither in-cluster service account nor KUBECONFIG "
            f"usable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        )

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()
        if coordinator is not None:
            coordinator.wake()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stale = manager.remove_stale_temporaries()
    if stale:
        log.info("removed %d temporary file(s) left by an interrupted install", stale)
    server.start()
    log.info(
        "forge-manager %s started as %s (lease %s/%s, duration %d s, renew deadline %g s, "
        "retry %g s, request timeout %g s)",
        __version__, settings.pod_name, settings.namespace, settings.lease_name,
        settings.lease_duration, settings.renew_deadline, settings.retry_period,
        settings.request_timeout,
    )  # fmt: skip
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
        server.stop()
    log.info("forge-manager stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
