"""Losing any one region keeps the pool forging: three regions coordinating through an etcd quorum.

Three simulated regions on loopback (``east`` priority 1, ``west`` 2, ``witness`` 3), each with its
etcd member, its forge pods (real forge managers with ``COORDINATION_ETCD_ENDPOINTS`` and
cardano-node stand-ins under forge-guard) and its own namespace standing for its own cluster;
every byte between regions goes through the breakable links of
:class:`~tests.harness.regionnet.RegionNet` (:mod:`tests.harness.quorum_regions`). Each test
asserts behaviour (who forges, that forging stops and resumes), and from the stand-ins' logs that
no two nodes ever forged at the same moment; the times it prints are figures, not assertions
(``bench/quorum.py`` collects them).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import FAST_TIMING, wait_for
from tests.harness.forging_log import Interval, forging_at, longest_gap, overlaps, summary
from tests.harness.node_standin import now
from tests.harness.quorum_regions import QuorumRegions
from tests.harness.regions import install_crd

# About 12 min for the file on a loaded 2-core host (a three-region world per test, each waiting
# out real leases): run by ``make quorum``, left out of ``make test``.
# Each test is bounded by its waits (WAIT) and by this timeout: building and stopping a
# three-region world alone took over 2 min at a load average of 70.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.quorum,
    pytest.mark.timeout(900),
]

WAIT = 120.0  # upper bound for any wait; behaviour, not speed, is asserted
PRIORITIES = {"east": 1, "west": 2, "witness": 3}
LEASE = float(FAST_TIMING["LEASE_DURATION"])
RENEW_DEADLINE = float(FAST_TIMING["LEASE_RENEW_DEADLINE"])
REQUEST_TIMEOUT = float(FAST_TIMING["KUBE_REQUEST_TIMEOUT"])


@pytest.fixture(scope="module")
def cfc_crd(control_plane: ControlPlane) -> None:
    install_crd(control_plane)


@contextlib.contextmanager
def regions(cp: ControlPlane, root: Path, **kwargs: object) -> Iterator[QuorumRegions]:
    r = QuorumRegions(cp, root, PRIORITIES, **kwargs)  # type: ignore[arg-type]
    try:
        r.start()
        yield r
    finally:
        print(r.diagnose())
        r.stop()


@pytest.fixture
def three(control_plane: ControlPlane, cfc_crd: None, tmp_path: Path) -> Iterator[QuorumRegions]:
    with regions(control_plane, tmp_path) as r:
        yield r


def forging_steadily(r: QuorumRegions, region: str, seconds: float = 2.0) -> None:
    """Wait until ``region`` alone forges, for ``seconds`` in a row."""
    since: list[float] = []

    def steady() -> bool:
        if r.forging_regions() != [region]:
            since.clear()
            return False
        since.append(time.monotonic())
        return since[-1] - since[0] >= seconds

    wait_for(steady, WAIT, f"{region} alone forging for {seconds:g} s", interval=0.2)


def no_overlap(r: QuorumRegions) -> list[Interval]:
    spans = r.spans()
    found = overlaps(spans, now())
    assert not found, f"two nodes forged at once: {found}\n{summary(spans)}"
    return spans


def first_start_after(spans: list[Interval], t: float, region_nodes: set[str]) -> float | None:
    starts = [s.start for s in spans if s.start >= t and s.node.split("/")[0] in region_nodes]
    return min(starts) if starts else None


def nodes_of(r: QuorumRegions, *regions: str) -> set[str]:
    return {p.node_name for p in r.every_pod if r.region_of(p) in regions}


def stopped_at(spans: list[Interval], after: float, nodes: set[str]) -> float | None:
    """When the last forging of ``nodes`` that was open at ``after`` ended (None: still open)."""
    ends = [s.end for s in spans if s.node.split("/")[0] in nodes and s.start <= after]
    if any(e is None for e in ends):
        return None
    closed = [e for e in ends if e is not None and e >= after]
    return max(closed) if closed else after


@pytest.mark.parametrize("first", ["own", "lost"], ids=["own-member-first", "lost-member-first"])
def test_forging_region_lost_as_a_whole(
    control_plane: ControlPlane, cfc_crd: None, tmp_path: Path, first: str
) -> None:
    """east (forging, and with ``lost-member-first`` the member every region calls first) loses
    its etcd member and its pods at once: west forges after the lease; east comes back, rejoins
    and takes the pool back by a hand-over."""
    order = None
    if first == "lost":
        order = {r: ["east", *(x for x in PRIORITIES if x != "east")] for r in PRIORITIES}
    with regions(control_plane, tmp_path, endpoint_order=order) as r:
        forging_steadily(r, "east")
        killed = now()
        r.kill_region("east")
        forging_steadily(r, "west")
        spans = no_overlap(r)
        took = first_start_after(spans, killed, nodes_of(r, "west"))
        assert took is not None
        print(f"region lost ({first} first): west forges {took - killed:.1f} s after the kill")
        r.restore_region("east")
        forging_steadily(r, "east")
        no_overlap(r)


@pytest.mark.parametrize("leader", ["elsewhere", "in-cut-region"])
def test_forging_region_partitioned(three: QuorumRegions, leader: str) -> None:
    """east cut off from west and witness (etcd peers and managers alike): it stops within the
    renew deadline, west takes over after the lease, east rejoins without forging until west
    hands the pool back. With ``in-cut-region`` east's member is also the Raft leader when the
    cut comes: it leads a minority until check-quorum makes it step down, and can neither
    commit nor confirm a read meanwhile."""
    r = three
    forging_steadily(r, "east")
    want = "west" if leader == "elsewhere" else "east"
    r.quorum.move_leader(want)
    wait_for(lambda: r.quorum.leader() == want, WAIT, f"the etcd leader in {want}")
    forging_steadily(r, "east")  # a leader move may cost a renewal: east forging at the cut
    cut = now()
    r.partition("east")
    forging_steadily(r, "west")
    spans = no_overlap(r)
    stopped = stopped_at(spans, cut, nodes_of(r, "east"))
    took = first_start_after(spans, cut, nodes_of(r, "west"))
    assert stopped is not None and took is not None and stopped <= took
    east_started = first_start_after(spans, cut, nodes_of(r, "east"))
    assert east_started is None, "east forged while cut off"
    east_nodes = nodes_of(r, "east")
    assert any(a.split("/")[0] in east_nodes for a in forging_at(spans, cut)), "east not forging"
    print(
        f"partition (etcd leader {leader}, in {r.quorum.leader()} after the cut): east stopped "
        f"{stopped - cut:.1f} s after the cut (renew deadline {RENEW_DEADLINE:g} s), "
        f"west forged {took - cut:.1f} s after it"
    )
    healed = now()
    r.heal("east")
    forging_steadily(r, "east")
    spans = no_overlap(r)
    back = first_start_after(spans, healed, nodes_of(r, "east"))
    west_end = stopped_at(spans, healed, nodes_of(r, "west"))
    assert back is not None and west_end is not None and west_end <= back
    print(f"heal: east forges again {back - healed:.1f} s after, by a hand-over")


def test_quorum_lost_nobody_forges_until_it_returns(three: QuorumRegions) -> None:
    """Two of three members down: the forging region's own member has no quorum, nobody
    forges; forging resumes once a quorum is back."""
    r = three
    forging_steadily(r, "east")
    lost = now()
    r.quorum.kill("west")
    r.quorum.kill("witness")
    wait_for(lambda: not r.forgers(), WAIT, "nobody forging")
    spans = no_overlap(r)
    stopped = stopped_at(spans, lost, nodes_of(r, "east"))
    assert stopped is not None
    time.sleep(LEASE + 2.0)  # well past any lease: still nobody may forge
    assert not forging_at(r.spans(), now())
    assert first_start_after(r.spans(), stopped, nodes_of(r, *PRIORITIES)) is None
    print(f"quorum lost: east stopped {stopped - lost:.1f} s after the second member died")
    back = now()
    r.quorum.start_member("west", wait=False)
    r.quorum.start_member("witness")
    forging_steadily(r, "east")
    spans = no_overlap(r)
    resumed = first_start_after(spans, back, nodes_of(r, *PRIORITIES))
    assert resumed is not None
    print(f"quorum back: forging resumed {resumed - back:.1f} s after the members restarted")


def test_leader_changes_and_member_restarts_during_renewals(three: QuorumRegions) -> None:
    """The etcd leader moves between regions and members restart (the forging region's own
    member too) while east renews: east keeps the pool, nobody else forges."""
    r = three
    forging_steadily(r, "east")
    start = now()
    for target in ("west", "witness", "east", "west"):
        r.quorum.move_leader(target)
        time.sleep(2.0)
    for member in ("east", r.quorum.leader() or "west"):
        r.quorum.kill(member)
        time.sleep(1.5)
        r.quorum.start_member(member)
        time.sleep(2.0)
    forging_steadily(r, "east")
    spans = no_overlap(r)
    assert r.holder() == "east/east-0"
    others = first_start_after(spans, start, nodes_of(r, "west", "witness"))
    assert others is None, "another region forged during leader changes and restarts"
    gap = longest_gap(spans, start, now())
    print(f"leader changes and member restarts: longest time nobody forged {gap:.1f} s")


@pytest.mark.parametrize("leader", ["elsewhere", "in-slow-region"])
def test_slow_link_between_one_region_and_the_quorum(three: QuorumRegions, leader: str) -> None:
    """east's links get a one-way latency above the request timeout. With the etcd leader
    elsewhere, east's calls time out: it stops within the renew deadline and west takes over.
    With the leader in east, every write waits for east's slow links: whoever forges, never two."""
    r = three
    forging_steadily(r, "east")
    r.quorum.move_leader("west" if leader == "elsewhere" else "east")
    slowed = now()
    r.slow("east", REQUEST_TIMEOUT + 0.2)
    if leader == "elsewhere":
        forging_steadily(r, "west")
        spans = no_overlap(r)
        stopped = stopped_at(spans, slowed, nodes_of(r, "east"))
        took = first_start_after(spans, slowed, nodes_of(r, "west"))
        assert stopped is not None and took is not None and stopped <= took
        print(
            f"slow link: east stopped {stopped - slowed:.1f} s after, "
            f"west forged {took - slowed:.1f} s after"
        )
    else:
        time.sleep(3 * LEASE)
        no_overlap(r)
        print(f"slow leader region: forging regions now {r.forging_regions()}")
    r.slow("east", 0.0)
    forging_steadily(r, "east")
    no_overlap(r)
