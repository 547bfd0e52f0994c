"""Live regions for the CLI's tests and figures: real forge managers and node stand-ins.

:func:`live_regions` starts :class:`tests.harness.regions.Regions` (the nodes under forge-guard)
in a namespace of its own, with a Pod object per local pod (:mod:`tests.harness.pod_objects`), so
the CLI finds the pods as in a real cluster and reads each forge manager's ``/metrics`` through
the API server's pod proxy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.cli.cli_run import Run, cardano_forge
from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import ForgePod, wait_for
from tests.harness.forging_log import overlaps, summary
from tests.harness.node_standin import now
from tests.harness.pod_objects import host_address, register
from tests.harness.regions import Regions, create_namespace, install_crd

CHART_TIMING = {
    "LEASE_DURATION": "15",
    "LEASE_RENEW_DEADLINE": "10",
    "LEASE_RETRY_PERIOD": "2",
    "KUBE_REQUEST_TIMEOUT": "1",
}
"""The chart's default timings (the faster test timings flap on a loaded shared machine)."""
CHART_CLUSTER_TIMING = {
    "HEALTH_CHECK_INTERVAL": "2",
    "HEALTH_CHECK_TIMEOUT": "1",
    "HEALTH_CHECK_FAILURE_THRESHOLD": "3",
    "CLUSTER_HEARTBEAT_INTERVAL": "5",
    "CLUSTER_STALE_AFTER": "12",
}
"""The chart's default cluster timings."""
START_TIMEOUT = 300.0
"""Per pod: interpreter start and first cycle, minutes on a loaded shared machine."""


@contextlib.contextmanager
def live_regions(
    cp: ControlPlane,
    namespace: str,
    root: Path,
    priorities: Mapping[str, int],
    *,
    address: str | None = None,
    timing: Mapping[str, str] | None = None,
    cluster_timing: Mapping[str, str] | None = None,
    start_timeout: float = START_TIMEOUT,
    never_two: bool = True,
) -> Iterator[Regions]:
    """The regions started in ``namespace``, each manager's metrics on ``address`` (reachable by
    the pod proxy; by default this host's non-loopback IPv4 address, the test skipped without
    one); stopped at the end, then, with ``never_two``, the stand-ins' logs must show that no two
    nodes ever forged at once."""
    address = address or host_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address for the API server's pod proxy")
    install_crd(cp)
    create_namespace(cp, namespace)
    r = Regions(
        cp,
        namespace,
        root,
        priorities,
        via_proxy=False,
        timing=timing,
        cluster_timing=cluster_timing,
        extra_env={"METRICS_BIND_ADDRESS": address},
    )
    try:
        r.start(timeout=start_timeout)
        register(cp, namespace, r.all_pods, address=address)
        yield r
    finally:
        r.stop()
        if never_two:
            found = overlaps(r.spans(), until=now())
            assert not found, f"two nodes forged at once: {found}\n{summary(r.spans())}"


def cf(r: Regions, *args: str, timeout: float = 240.0) -> Run:
    """The installed ``cardano-forge`` against ``r``'s namespace."""
    return cardano_forge(*args, kubeconfig=r.cp.kubeconfig, namespace=r.namespace, timeout=timeout)


def hand_over(r: Regions, old: ForgePod, new: ForgePod, since: float) -> tuple[float, float]:
    """From the stand-ins' logs, after ``since``: when ``old`` stopped forging and when ``new``
    started (CLOCK_BOOTTIME seconds)."""
    spans = [s for s in r.spans() if s.end is None or s.end >= since]
    stop = next(s.end for s in spans if s.node.startswith(old.node_name + "/") and s.end)
    start = next(s.start for s in spans if s.node.startswith(new.node_name + "/"))
    return stop, start


def wait_one_forger(r: Regions, wait: float, region: str | None = None) -> ForgePod:
    """The one forging node (in ``region``, if named), waited for at most ``wait`` seconds; an
    AssertionError with :meth:`Regions.diagnose` after that."""

    def check() -> bool:
        f = r.forgers()
        return len(f) == 1 and (region is None or r.region_of(f[0]) == region)

    where = "" if region is None else f", in region {region}"
    try:
        wait_for(check, wait, f"exactly one forging node{where}")
    except AssertionError:
        raise AssertionError(r.diagnose()) from None
    return r.forgers()[0]
