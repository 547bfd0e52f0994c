"""A node that cannot forge well must not lead: two forge managers and two node stand-ins on the
real control plane, with tips that a test makes lag.

The story: pod b's node starts behind the chain, so a (synced) wins; b catches up and waits as a
synced standby; a's node falls behind: after the grace a stops forging and hands over, and b
forges; then b's node falls behind too: nobody forges, and both say why; a catches up and forges
again. From the stand-ins' monotonic event logs: never two forgers at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import FAST_TIMING, ForgePod, all_events, wait_for, write_pool_secret
from tests.harness.forging_log import intervals, overlaps, summary
from tests.harness.node_standin import now

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GRACE = 3.0
MAX_LAG = 5
SYNC_ENV = {"NODE_SYNC_MAX_LAG_SLOTS": str(MAX_LAG), "NODE_SYNC_GRACE_SECONDS": str(GRACE)}
RETRY_PERIOD = float(FAST_TIMING["LEASE_RETRY_PERIOD"])
WAIT = 60.0  # upper bound of every wait; behaviour, not speed, is asserted
BEHIND = 600


@pytest.fixture
def pods(control_plane: ControlPlane, kube_namespace: str, tmp_path: Path) -> Iterator[
    tuple[ForgePod, ForgePod]
]:  # fmt: skip
    secret = write_pool_secret(tmp_path / "pool-secret")
    a, b = (
        ForgePod(name, tmp_path, control_plane.kubeconfig, kube_namespace, secret,
                 extra_env=SYNC_ENV)
        for name in ("bp-a", "bp-b")
    )  # fmt: skip
    try:
        yield a, b
    finally:
        for pod in (a, b):
            pod.stop()


def node_sync(pod: ForgePod) -> dict[str, object]:
    code, body = pod.get("/health")
    assert code == 200, body
    status: dict[str, object] = json.loads(body)["node_sync"]
    return status


def test_a_lagging_leader_hands_over_and_nobody_forges_when_no_node_is_synced(
    pods: tuple[ForgePod, ForgePod], request: pytest.FixtureRequest
) -> None:
    a, b = pods
    b.set_tip_lag(BEHIND)
    a.start()
    b.start()
    wait_for(lambda: a.forging(), WAIT, "bp-a (the only synced node) to forge")
    # The state is judged at each request, the gate once a cycle: wait for both.
    wait_for(lambda: str(node_sync(b)["blocked"]).startswith(
        "cardano-node not synced: its tip is more than 5 slots behind"), WAIT,
        "bp-b to stay out of the election because its node is behind")  # fmt: skip
    wait_for(lambda: not b.credentials_present(), WAIT, "bp-b to remove its start-up credentials")
    assert not b.forging() and b.metric("cardano_node_synced") == 0.0
    assert node_sync(b)["state"] == "behind"

    # b catches up: a synced standby. a falls behind.
    b.set_tip_lag(0)
    wait_for(lambda: b.metric("cardano_node_synced") == 1.0, WAIT, "bp-b to report synced")
    a.set_tip_lag(BEHIND)
    lagged_at = now()
    wait_for(lambda: b.forging(), WAIT, "bp-b to take over from the lagging bp-a")
    assert not a.forging()
    spans = intervals(all_events([a, b]))
    a_stop = max(s.end for s in spans if s.node.startswith(a.node_name) and s.end is not None)
    b_start = min(s.start for s in spans if s.node.startswith(b.node_name))
    assert a_stop <= b_start
    assert a_stop - lagged_at >= GRACE  # the grace was honoured (a lower bound, not a speed)
    figures = {
        "lag_to_a_stopped_s": round(a_stop - lagged_at, 3),
        "lag_to_b_forging_s": round(b_start - lagged_at, 3),
        "beyond_grace_to_b_forging_s": round(b_start - lagged_at - GRACE, 3),
        "gap_s": round(b_start - a_stop, 3),
    }
    request.node.user_properties.append(("node_sync_handover", figures))
    print(f"node sync hand-over: {figures}")
    assert 'cardano_forge_demotions_total{cause="node_not_synced"} 1.0' in a.get("/metrics")[1]
    assert "not synced" in str(node_sync(a)["blocked"])

    # b falls behind as well: after its grace nobody forges, and both say why.
    b.set_tip_lag(BEHIND)
    wait_for(lambda: not b.forging(), WAIT, "bp-b to stop forging")
    deadline = time.monotonic() + 4 * RETRY_PERIOD + GRACE
    while time.monotonic() < deadline:  # a few retry periods: still nobody
        assert not a.forging() and not b.forging()
        time.sleep(0.2)
    for pod in (a, b):
        assert pod.metric("cardano_node_synced") == 0.0
        assert pod.metric("cardano_node_sync_blocked") == 1.0
        assert pod.metric("cardano_forging_enabled") == 0.0
        assert not pod.credentials_present()
        status = node_sync(pod)
        assert status["state"] == "behind" and status["synced"] is False
        assert str(status["blocked"]).startswith("cardano-node not synced: its tip is more")

    # a catches up and forges again.
    a.set_tip_lag(0)
    wait_for(lambda: a.forging(), WAIT, "bp-a to forge again once synced")
    assert not b.forging()

    spans = intervals(all_events([a, b]))
    found = overlaps(spans, until=now())
    assert not found, f"two nodes forged at once: {found}\n{summary(spans)}"
