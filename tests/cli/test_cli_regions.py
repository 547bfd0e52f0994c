"""The CLI against two live regions: real forge managers and node stand-ins on the control plane.

The set-up is the cluster coordination tests' (:class:`tests.harness.regions.Regions`: regions
east, priority 1, and west, priority 2, two pods each, the nodes under forge-guard), plus a Pod
object per local pod (:mod:`tests.harness.pod_objects`), so the CLI finds the pods as in a real
cluster and reads each forge manager's ``/metrics`` through the API server's pod proxy. Every
command runs as the installed ``cardano-forge`` in a subprocess. The tests of this module share
one set of regions and run in order; each leaves east forging. At the end, the stand-ins' logs
must show that no two nodes ever forged at the same moment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.cli.cli_run import cli_env, one_line_error
from tests.cli.live_regions import cf, live_regions, wait_one_forger
from tests.harness.controlplane import REPO_ROOT, ControlPlane, tool
from tests.harness.forge_pod import ForgePod, wait_for
from tests.harness.forging_log import overlaps, summary
from tests.harness.node_standin import now
from tests.harness.regions import Regions

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

WAIT = 90.0


@pytest.fixture(scope="module")
def regions(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Regions]:
    with live_regions(
        control_plane,
        f"cli-{os.urandom(4).hex()}",
        tmp_path_factory.mktemp("cli-regions"),
        {"east": 1, "west": 2},
    ) as r:
        wait_forger(r, "east")
        yield r


def wait_forger(r: Regions, region: str) -> ForgePod:
    return wait_one_forger(r, WAIT, region)


def cfc_status(r: Regions, region: str) -> dict[str, Any]:
    """The region's CardanoForgeCluster status; empty while its manager has not created it yet."""
    try:
        status: dict[str, Any] = r.cfc(region).get("status") or {}
    except client.ApiException as exc:
        if exc.status == 404:
            return {}
        raise
    return status


def wait_status(r: Regions, region: str, what: str, predicate: Any) -> None:
    wait_for(lambda: predicate(cfc_status(r, region)), WAIT, f"{region}: {what}")


def overrides(r: Regions) -> dict[str, Any]:
    return {region: r.cfc(region)["spec"].get("override") for region in ("east", "west")}


def cli_events(r: Regions) -> list[dict[str, Any]]:
    with r.cp.api_client() as api:
        items = client.CoreV1Api(api).list_namespaced_event(r.namespace).items
        return [
            api.sanitize_for_serialization(e)
            for e in items
            if (e.reporting_component or "") == "cardano-forge-cli"
        ]


# ---- status -----------------------------------------------------------------------------------
def test_status_shows_regions_lease_and_pods_from_the_managers_metrics(regions: Regions) -> None:
    r = regions
    forger = wait_forger(r, "east")
    wait_status(r, "west", "published", lambda s: s.get("effectivePriority") == 2)
    run = cf(r, "status")
    assert run.code == 0, run
    lines = run.out.splitlines()
    assert lines[0].startswith(
        f"pool cardano-forge-pool in namespace {r.namespace}: held by east/{forger.name} "
    )
    rows = {ln.split()[0]: ln.split() for ln in lines if ln.split()[:1] in (["east"], ["west"])}
    assert rows["east"][1:4] == ["Priority-based", "1", "0/3"] and rows["east"][-1] == "yes"
    assert rows["west"][1:4] == ["Priority-based", "2", "0/3"] and rows["west"][-1] == "no"
    pods = {ln.split()[1]: ln.split() for ln in lines if ln.startswith(r.namespace + " ")}
    assert set(pods) == {p.name for p in r.all_pods}
    # NAMESPACE POD REGION LEADER FORGING CREDENTIALS NODE SYNCED KES-LEFT
    assert pods[forger.name][3:7] == ["yes", "yes", "yes", "up"]
    for p in r.all_pods:
        if p is not forger:
            assert pods[p.name][4:7] == ["no", "no", "up"], run
    assert "unknown: the forge managers' /metrics" not in run.out  # every pod was read

    doc = cf(r, "status", "-o", "json").json()
    (pool,) = doc["pools"]
    assert pool["lease"]["holder"] == r.pool_lease_holder() == f"east/{forger.name}"
    facts = {p["pod"]: p for p in pool["pods"]}
    assert (
        facts[forger.name]["forging"] is True and facts[forger.name]["credentialsPresent"] is True
    )
    assert facts[forger.name]["forgingSince"] > 0 and facts[forger.name]["managerVersion"]
    assert sum(1 for p in pool["pods"] if p["forging"]) == 1
    assert {x["region"]: x["localLeader"] for x in pool["regions"]}["east"] == forger.name
    assert (
        cf(r, "status", "-o", "yaml").yaml()["pools"][0]["lease"]["holder"] == f"east/{forger.name}"
    )

    # The kubectl plugin: kubectl finds kubectl-cardano_forge on PATH; KUBECONFIG reaches it.
    env = cli_env() | {"KUBECONFIG": str(r.cp.kubeconfig)}
    argv = [tool("kubectl"), "cardano-forge", "status", "-n", r.namespace, "-o", "json"]
    plugin = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert plugin.returncode == 0, plugin.stderr
    assert json.loads(plugin.stdout)["pools"][0]["lease"]["holder"] == f"east/{forger.name}"

    # --coordination-kubeconfig: the regions read from a second API client (multi-cluster case).
    run = cf(r, "status", "-o", "json", "--coordination-kubeconfig", str(r.cp.kubeconfig))
    assert run.code == 0 and run.json()["pools"][0]["lease"]["holder"] == f"east/{forger.name}"


def test_status_watch_refreshes_until_ctrl_c(regions: Regions) -> None:
    r = regions
    argv = [
        sys.executable,
        "-m",
        "cardano_forge_cli",
        "--kubeconfig",
        str(r.cp.kubeconfig),
        "-n",
        r.namespace,
        "status",
        "--watch",
        "--interval",
        "0.5s",
        "-o",
        "json",
    ]
    frames: list[dict[str, Any]] = []
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=REPO_ROOT,
    ) as proc:
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 60
            while len(frames) < 3 and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if line.strip():
                    frames.append(json.loads(line))
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate(timeout=30)
                message = f"status --watch ignored Ctrl-C for 60 s; stderr: {err}"
                raise AssertionError(message) from None
            err = proc.stderr.read() if proc.stderr else ""
    assert code == 0, err
    assert len(frames) == 3 and all(f["pools"][0]["lease"]["holder"] for f in frames)
    assert frames[0]["time"] <= frames[-1]["time"]


# ---- switchover --------------------------------------------------------------------------------
def test_switchover_refusals_change_nothing(regions: Regions) -> None:
    r = regions
    wait_forger(r, "east")
    before = overrides(r)

    run = cf(r, "switchover", "--to-region", "west", "--dry-run")
    assert run.code == 0, run
    assert "region west: priority 2 -> 1 until" in run.out and "dry run: nothing changed" in run.out
    assert "region east: priority 1 -> 2 until" in run.out

    error = one_line_error(cf(r, "switchover", "--to-region", "west"))  # no --yes, no terminal
    assert "refusing to change anything without confirmation: pass --yes" in error

    error = one_line_error(cf(r, "switchover", "--to-region", "south", "--yes"))
    assert error == "error: unknown region 'south': the regions are east, west"

    run = cf(r, "switchover", "--to-region", "east", "--yes")
    assert run.code == 0 and "region east already forges" in run.out, run

    # Not healthy: west's health endpoint fails until the region is demoted (+100).
    r.health["west"].status = 503
    try:
        wait_status(
            r, "west", "unhealthy", lambda s: (s.get("healthStatus") or {}).get("healthy") is False
        )
        error = one_line_error(cf(r, "switchover", "--to-region", "west", "--yes"))
        assert "region west is not healthy (3/3 consecutive health-check failures" in error
    finally:
        r.health["west"].status = 200
    wait_status(r, "west", "healthy again", lambda s: s.get("effectivePriority") == 2)

    # An Enabled region is never preempted: the CLI says so instead of waiting in vain.
    r.patch_spec("east", {"forgeState": "Enabled"})
    try:
        error = one_line_error(cf(r, "switchover", "--to-region", "west", "--yes"))
        assert "region east is Enabled (spec): an Enabled region keeps forging" in error
    finally:
        r.patch_spec("east", {"forgeState": "Priority-based"})

    assert overrides(r) == before
    assert not [e for e in cli_events(r) if e["reason"].startswith("Switchover")]
    assert r.region_of(wait_forger(r, "east")) == "east"


def test_switchover_to_a_region_and_back_with_no_two_forgers(regions: Regions) -> None:
    r = regions
    old = wait_forger(r, "east")
    wait_status(r, "west", "live and current", lambda s: s.get("effectivePriority") == 2)
    started = now()
    run = cf(r, "switchover", "--to-region", "west", "--yes", "--for", "1h", "--timeout", "90s")
    assert run.code == 0, run
    new = wait_forger(r, "west")
    assert f"forging moved from east/{old.name} to west/{new.name}" in run.out, run
    # The CLI's gap (from the managers' metrics) against the stand-ins' own logs.
    spans = [s for s in r.spans() if s.end is None or s.end >= started]
    stop = next(s.end for s in spans if s.node.startswith(old.node_name + "/") and s.end)
    start = next(s.start for s in spans if s.node.startswith(new.node_name + "/"))
    true_gap = start - stop
    assert true_gap > 0, summary(spans)
    low, high = _printed_gap(run.out)
    assert low <= true_gap + 1.0 and true_gap <= high + 1.0, (true_gap, run.out)
    print(
        f"switchover east -> west: command {run.seconds:.1f} s, gap {true_gap * 1000:.0f} ms "
        f"(stand-ins), CLI says {low:.2f}..{high:.2f} s"
    )

    ov = overrides(r)
    assert ov["west"]["priority"] == 1 and ov["east"]["priority"] == 2
    assert ov["west"]["reason"].startswith("switchover to west by ")
    assert ov["west"]["expiresAt"] == ov["east"]["expiresAt"]
    assert {e["reason"] for e in cli_events(r)} >= {"SwitchoverRequested", "SwitchoverCompleted"}

    run = cf(r, "switchover", "--to-region", "west", "--yes")
    assert run.code == 0 and "region west already forges" in run.out, run

    # Back to east: the earlier overrides are removed, the spec's priorities rank east first.
    run = cf(r, "switchover", "--to-region", "east", "--yes", "--timeout", "90s")
    assert run.code == 0, run
    wait_forger(r, "east")
    assert overrides(r) == {"east": None, "west": None}
    assert not overlaps(r.spans(), until=now())


def _printed_gap(text: str) -> tuple[float, float]:
    marker = "no node forged for "
    assert marker in text, text
    rest = text.split(marker, 1)[1]
    low, high = rest.split(" s ", 1)[0].split(" to ")
    return (float(low) if low != "?" else 0.0), float(high)


def test_pause_and_resume(regions: Regions) -> None:
    r = regions
    forger = wait_forger(r, "east")
    error = one_line_error(cf(r, "pause", "east", "--for", "soon", "--reason", "x"))
    assert "--for 'soon' is not a duration" in error
    error = one_line_error(cf(r, "pause", "south", "--for", "1h", "--reason", "x", "--yes"))
    assert "unknown region 'south'" in error

    run = cf(
        r, "pause", "east", "--for", "2h", "--reason", "kernel upgrade", "--yes", "--timeout", "90s"
    )
    assert run.code == 0, run
    assert "region east forges now: it hands forging over to region west" in run.out
    new = wait_forger(r, "west")
    assert "region east paused until " in run.out, run
    assert f"forging moved from east/{forger.name} to west/{new.name}" in run.out, run
    ov = r.cfc("east")["spec"]["override"]
    assert ov["forgeState"] == "Disabled" and ov["reason"].startswith("kernel upgrade (paused by ")
    assert forger.forging() is False

    # A paused region is refused as a switchover target, with what to do.
    error = one_line_error(cf(r, "switchover", "--to-region", "east", "--yes"))
    assert "region east is Disabled (override 'kernel upgrade (paused by" in error
    assert "resume it first: cardano-forge resume east" in error

    run = cf(r, "resume", "east", "--yes")
    assert run.code == 0 and "region east resumed" in run.out, run
    wait_forger(r, "east")
    assert r.cfc("east")["spec"].get("override") is None
    run = cf(r, "resume", "east", "--yes")
    assert run.code == 0 and "region east has no override" in run.out
    assert {e["reason"] for e in cli_events(r)} >= {"Paused", "Resumed"}


def test_history_tells_who_forged_when_and_why(regions: Regions) -> None:
    r = regions
    forger = wait_forger(r, "east")
    run = cf(r, "history")
    assert run.code == 0, run
    text = run.out
    for expected in (
        "SwitchoverRequested",
        "SwitchoverCompleted",
        "Paused",
        "Resumed",
        "started forging",
    ):
        assert expected in text, text
    doc = cf(r, "history", "-o", "json").json()
    # acquireTime when the manager keeps it, else the last renewal: who holds each Lease.
    leases = {(e["source"], e["subject"]): e["what"] for e in doc["entries"]}
    assert f"east/{forger.name}" in leases[("pool-lease", "lease/cardano-forge-pool")]
    assert "local leader" in leases[("lease", f"pod/{forger.name}")]
    times = [e["time"] for e in doc["entries"]]
    assert times == sorted(times)
    assert any(e["source"] == "condition" and e["region"] == "east" for e in doc["entries"])
    recent = cf(r, "history", "--since", "1s", "-o", "json").json()
    assert len(recent["entries"]) < len(doc["entries"])


def test_a_region_without_usable_credentials_or_live_leader_is_refused(regions: Regions) -> None:
    """Last in the module: it breaks region west for good."""
    r = regions
    wait_forger(r, "east")
    kes = r.secrets["west"] / "kes.skey"
    kes.unlink()  # the Secret lost its KES key: west's managers leave the election
    error = one_line_error(
        cf(r, "switchover", "--to-region", "west", "--yes", "--stale-after", "3s")
    )
    assert (
        "has no usable credentials" in error
        or "has no live local leader" in error
        or "has no local leader" in error
    ), error
    for pod in r.pods["west"]:
        pod.stop()
    time.sleep(4)  # past --stale-after below: its heartbeat Lease no longer changes
    error = one_line_error(
        cf(r, "switchover", "--to-region", "west", "--yes", "--stale-after", "3s")
    )
    assert "region west has no live local leader" in error or "has no local leader" in error, error
    assert r.region_of(wait_forger(r, "east")) == "east"
