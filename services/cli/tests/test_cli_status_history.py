"""status and history documents and their rendering (pure)."""

from __future__ import annotations

from datetime import timedelta

from cardano_forge_cli.history import history_entries, pending_overrides, render_history
from cardano_forge_cli.model import PodFacts, PoolView, Snapshot
from cardano_forge_cli.status import render_status, status_document
from cli_builders import NOW, NS, POOL, cfc, facts, later, lease, pod, region, two_regions


def snapshot() -> Snapshot:
    base = two_regions()
    west = cfc(
        "west",
        2,
        override={
            "forgeState": "Disabled",
            "reason": "kernel (paused by bob)",
            "expiresAt": later(3600),
        },
        effective_state="Disabled",
        healthy=False,
        failures=1,
    )
    pool = PoolView(
        base.name,
        True,
        base.namespace,
        base.lease,
        (base.regions[0], region(west)),
        base.pods,
        {
            ("bp", "east-leader"): lease("east-leader", "east-0", namespace="bp", acquired=120),
        },
        {
            ("bp", "east-0"): facts(
                leader=True,
                forging=True,
                credentials_present=True,
                forging_since=(NOW - timedelta(seconds=90)).timestamp(),
                kes_left=41,
                version="0.1.0",
            ),
            ("bp", "east-1"): facts(synced=True),
            ("bp", "west-0"): PodFacts.unknown("no permission to get pods/proxy in bp"),
        },
    )
    return Snapshot(NOW, (pool,), ("something to say",))


def test_status_document() -> None:
    doc = status_document(snapshot())
    (p,) = doc["pools"]
    assert p["lease"]["holder"] == "east/east-0" and p["lease"]["secondsSinceChange"] == 60.0
    east, west = p["regions"]
    assert (east["state"], east["effectivePriority"], east["holdsPoolLease"]) == (
        "Priority-based",
        1,
        True,
    )
    assert (west["state"], west["overrideActive"], west["healthFailures"]) == ("Disabled", True, 1)
    pods = {x["pod"]: x for x in p["pods"]}
    assert (
        pods["east-0"]["leader"],
        pods["east-0"]["forging"],
        pods["east-0"]["kesPeriodsLeft"],
    ) == (True, True, 41)
    assert pods["east-1"]["leader"] is False and pods["east-1"]["synced"] is True
    assert pods["west-0"]["leader"] is None  # its Lease was not readable
    assert pods["west-0"]["forging"] is None and not pods["west-0"]["metricsReachable"]
    assert doc["warnings"] == ["something to say"]


def test_status_tables() -> None:
    text = render_status(status_document(snapshot()))
    lines = text.splitlines()
    assert lines[0] == (
        f"pool {POOL} in namespace {NS}: held by east/east-0 for 1m (3 transitions)"
    )
    assert lines[2].split() == [
        "REGION",
        "STATE",
        "PRIORITY",
        "HEALTH",
        "LOCAL",
        "LEADER",
        "FORGING",
    ]
    assert lines[3].split() == ["east", "Priority-based", "1", "0/3", "east-0", "yes"]
    assert lines[4].split() == ["west", "Disabled*", "2", "1/3", "unhealthy", "west-0", "no"]
    pods = {ln.split()[1]: ln.split() for ln in lines if ln.startswith("bp ")}
    assert pods["east-0"] == ["bp", "east-0", "east", "yes", "yes", "yes", "up", "unknown", "41"]
    assert pods["west-0"] == ["bp", "west-0", "west"] + ["unknown"] * 6
    assert "* west: override 'kernel (paused by bob)' until" in text
    assert (
        "unknown: the forge managers' /metrics of 1 pod(s) could not be read (no permission to "
        "get pods/proxy in bp)"
    ) in text
    assert text.endswith("warning: something to say")


def test_status_of_a_free_pool_lease_and_of_a_local_pool() -> None:
    free = PoolView(
        POOL, True, NS, lease(POOL, None, annotations={"cardano.io/released-by": "east/east-0"})
    )
    local = PoolView("bp-leader", False, "bp", None, (), (pod("bp-0", "bp", cluster=False),))
    text = render_status(status_document(Snapshot(NOW, (free, local))))
    assert "held by nobody for 1.0s, released by east/east-0" in text
    assert (
        "pool (no cluster management: one region) bp-leader in namespace bp: no Lease bp-leader"
        in text
    )


def test_history_merges_events_conditions_leases_and_metrics() -> None:
    events = [
        {
            "metadata": {"uid": "1"},
            "involvedObject": {"kind": "CardanoForgeCluster", "name": "west"},
            "reason": "Paused",
            "message": "paused by bob until ...",
            "count": 1,
            "reportingComponent": "cardano-forge-cli",
            "lastTimestamp": (NOW - timedelta(minutes=2)).isoformat(),
        },
        {
            "metadata": {"uid": "2"},
            "involvedObject": {"kind": "Pod", "name": "east-0", "namespace": "bp"},
            "reason": "BecameLeader",
            "message": "acquired the lease",
            "count": 3,
            "source": {"component": "cardano-forge-manager"},
            "lastTimestamp": (NOW - timedelta(minutes=3)).isoformat(),
        },
        {
            "metadata": {"uid": "3"},
            "involvedObject": {"kind": "Pod", "name": "east-0", "namespace": "bp"},
            "reason": "Pulled",
            "source": {"component": "kubelet"},
            "lastTimestamp": NOW.isoformat(),
        },
        {
            "metadata": {"uid": "4"},
            "involvedObject": {"kind": "Pod", "name": "other-0", "namespace": "bp"},
            "reason": "BecameLeader",
            "reportingComponent": "cardano-forge-manager",
            "lastTimestamp": NOW.isoformat(),
        },
    ]
    snap = snapshot()
    entries = history_entries(snap, events)
    whats = [(e.source, e.subject, e.what) for e in entries]
    assert ("event", "cardanoforgecluster/west", "Paused") in whats
    assert ("event", "pod/east-0", "BecameLeader (x3)") in whats
    assert all(
        "Pulled" not in w and "other-0" not in s for _, s, w in whats
    )  # kubelet, other release
    assert ("condition", "cfc/east", "forging (Holding)") in whats
    assert ("pool-lease", f"lease/{POOL}", "acquired by east/east-0") in whats
    assert ("lease", "pod/east-0", "became local leader (east-leader)") in whats
    assert ("metrics", "pod/east-0", "started forging") in whats
    assert [e.time for e in entries] == sorted(e.time for e in entries)
    pending = pending_overrides(snap)
    assert pending == [
        f"region west: override forgeState=Disabled ('kernel (paused by bob)') until {later(3600)}"
    ]
    text = render_history(entries, pending)
    assert text.splitlines()[0].split() == ["TIME", "REGION", "OBJECT", "WHAT", "WHY"]
    assert "in force now:" in text
    assert render_history([], []).startswith("no history found")
