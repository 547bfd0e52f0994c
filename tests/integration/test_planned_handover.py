"""The planned handover on the real control plane when the leader's release meets a fault.

The leader's manager is SIGTERMed (the pod is deleted) while its connection to the API server is
cut, and the connection comes back once its release failed: the release is sent again,
so the standby takes the Lease at once as a release of the holder it followed, instead of a lease
duration later as an expired Lease. Behaviour is asserted (which path the standby took, from its
own log), never a wall-clock time; the stand-ins' event logs must show no two forgers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.controlplane import ControlPlane, b64_file
from tests.harness.forge_pod import ForgePod, all_events, wait_for, write_pool_secret
from tests.harness.forging_log import forging_at, intervals, overlaps, summary
from tests.harness.node_standin import now
from tests.harness.tcpproxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAIT = 60.0
FAILED = "releasing the lease failed"
"""What the leader logs when its release failed (with the fix and without it): the cut is healed
only then, so that the first attempt always meets it, however loaded the host."""


def forgers(pods: list[ForgePod]) -> list[ForgePod]:
    active = set(forging_at(intervals(all_events(pods)), now()))
    return [p for p in pods if any(a.startswith(p.node_name + "/") for a in active)]


@pytest.fixture
def pods(
    control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> Iterator[tuple[list[ForgePod], dict[str, TcpProxy]]]:
    """Two pods, each reaching the API server through a proxy of its own."""
    secret = write_pool_secret(tmp_path / "pool-secret")
    proxies: dict[str, TcpProxy] = {}
    pods: list[ForgePod] = []
    try:
        for i in range(2):
            name = f"bp-{i}"
            proxy = TcpProxy(control_plane.apiserver_port).start()
            proxies[name] = proxy
            kubeconfig = control_plane.write_kubeconfig(
                tmp_path / f"{name}.kubeconfig",
                user={
                    "client-certificate-data": b64_file(control_plane.pki / "admin.crt"),
                    "client-key-data": b64_file(control_plane.pki / "admin.key"),
                },
                user_name="admin",
                namespace=kube_namespace,
                server=proxy.url,
            )
            pods.append(ForgePod(name, tmp_path, kubeconfig, kube_namespace, secret))
        for pod in pods:
            pod.start()
        yield pods, proxies
    finally:
        for pod in pods:
            pod.stop()
        for proxy in proxies.values():
            proxy.stop()
    spans = intervals(all_events(pods))
    found = overlaps(spans, until=now())
    assert not found, f"two nodes forged at once: {found}\n{summary(spans)}"


def test_a_release_cut_off_on_shutdown_is_sent_again_and_taken_at_once(
    pods: tuple[list[ForgePod], dict[str, TcpProxy]],
) -> None:
    pool, proxies = pods
    wait_for(lambda: len(forgers(pool)) == 1, WAIT, "one forger")
    leader = forgers(pool)[0]
    standby = next(p for p in pool if p is not leader)
    before = len(standby.manager_log.read_bytes())
    proxies[leader.name].partition("blackhole")
    stop = threading.Event()

    def heal_after_the_first_failure() -> None:
        deadline = time.monotonic() + WAIT
        while not stop.is_set() and time.monotonic() < deadline:
            if FAILED in leader.manager_log.read_text():
                break
            stop.wait(0.05)
        proxies[leader.name].heal()

    healer = threading.Thread(target=heal_after_the_first_failure, daemon=True)
    healer.start()
    try:
        assert leader.sigterm_manager(timeout=WAIT) == 0
    finally:
        stop.set()
        healer.join(WAIT)
        proxies[leader.name].heal()
    assert not leader.credentials_present()
    wait_for(lambda: forgers(pool) == [standby], WAIT, f"{standby.name} forging")
    log = leader.manager_log.read_text()
    assert FAILED in log, log[-2000:]  # the fault met the release
    assert "releasing the lease again" in log, log[-2000:]
    assert "shutdown: released the lease" in log
    # The standby took it as a release of the holder it followed, not as an expired Lease.
    taken = standby.manager_log.read_bytes()[before:].decode()
    assert f"lease was released by {leader.name}; acquiring it" in taken, taken
    assert "expired" not in taken, taken
