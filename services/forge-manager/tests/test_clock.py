"""Every safety deadline runs on CLOCK_BOOTTIME, which keeps counting while the host is suspended.

CLOCK_MONOTONIC stops during a suspend: a leader (and its forge-guard) resumed after one still
believes a deadline that passed for everyone else long ago (issue 11).
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

from prometheus_client import CollectorRegistry


def test_now_reads_clock_boottime() -> None:
    from forge_manager import clock  # noqa: PLC0415 (the module is what is under test)

    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    value = clock.now()
    after = time.clock_gettime(time.CLOCK_BOOTTIME)
    assert before <= value <= after


def test_the_manager_and_the_coordinator_default_to_it() -> None:
    from forge_manager import clock  # noqa: PLC0415
    from forge_manager.cluster.coordinator import ClusterCoordinator  # noqa: PLC0415
    from forge_manager.manager import ForgeManager  # noqa: PLC0415

    for cls in (ForgeManager, ClusterCoordinator):
        assert inspect.signature(cls).parameters["clock"].default is clock.now, cls.__name__


def test_the_pool_wide_lease_is_wired_to_it(tmp_path: Path) -> None:
    from forge_manager import clock  # noqa: PLC0415
    from forge_manager.cluster.settings import load_cluster_settings  # noqa: PLC0415
    from forge_manager.cluster.wiring import build_coordinator  # noqa: PLC0415

    from .test_manager import settings_for  # noqa: PLC0415

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    cluster = load_cluster_settings(
        {
            "ENABLE_CLUSTER_MANAGEMENT": "true",
            "CLUSTER_NAME": "east",
            "NAMESPACE": "cardano",
            "COORDINATION_KUBECONFIG": str(kubeconfig),
        }
    )
    coordinator = build_coordinator(
        settings_for(tmp_path, "pod-0"),
        cluster,
        CollectorRegistry(),
        local_leader=lambda: False,
        reconcile=lambda: (True, ""),
    )
    assert coordinator.pool._clock is clock.now
