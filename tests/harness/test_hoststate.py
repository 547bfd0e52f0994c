"""The restore plan of the test node removes exactly what the node added, nothing of others."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import hoststate
from tests.harness.controlplane import REPO_ROOT

OWN = hoststate.Ownership(
    state_dir="/srv/state",
    cgroup_root="cardano-forge-node",
    bridge="cfnode0",
    cni_network="cardano-forge-node",
    host_paths=("/var/lib/kubelet", "/var/lib/cni"),
)


def test_sysctls_changed_in_restorable_trees_are_put_back() -> None:
    before = {
        "vm/overcommit_memory": "0",
        "kernel/panic": "1",
        "kernel/hostname": "vm",
        "net/ipv4/ip_forward": "0",
        "vm/swappiness": "60",
    }
    now = {
        "vm/overcommit_memory": "1",
        "kernel/panic": "10",
        "kernel/hostname": "other",
        "net/ipv4/ip_forward": "1",
        "vm/swappiness": "60",
        "net/ipv4/conf/cfnode0/forwarding": "1",
    }

    assert hoststate.plan_sysctls(before, now) == [
        ("kernel/panic", "1"),
        ("net/ipv4/ip_forward", "0"),
        ("vm/overcommit_memory", "0"),
    ]


def test_only_new_mounts_under_the_node_places_are_unmounted_deepest_first() -> None:
    before = [(1, "/"), (2, "/proc"), (3, "/srv/state/old")]
    now = [
        *before,
        (10, "/srv/state/kubelet"),
        (11, "/srv/state/kubelet/pods/u/volumes/kubernetes.io~empty-dir/mem"),
        (12, "/srv/other"),  # someone else's
        (13, "/srv/state-other/x"),  # a sibling with the same prefix is not under the state dir
        (14, "/srv/state/kubelet"),  # stacked on 10
        (3, "/srv/state/reused-id"),  # ID 3 was another mount's before
    ]

    assert hoststate.plan_mounts(before, now, OWN) == [
        "/srv/state/kubelet/pods/u/volumes/kubernetes.io~empty-dir/mem",
        "/srv/state/kubelet",
        "/srv/state/kubelet",
        "/srv/state/reused-id",
    ]


def test_host_paths_absent_before_are_removed_whole_else_only_new_entries() -> None:
    before: dict[str, list[str] | None] = {
        "/var/lib/kubelet": None,
        "/var/lib/cni": ["networks", "networks/other"],
        "/var/log/containers": None,
    }
    now: dict[str, list[str] | None] = {
        "/var/lib/kubelet": ["device-plugins", "device-plugins/kubelet.sock"],
        "/var/lib/cni": ["networks", "networks/other", "results", "results/a", "results/b"],
        "/var/log/containers": None,
    }

    assert hoststate.plan_paths(before, now) == ["/var/lib/kubelet", "/var/lib/cni/results"]


def test_links_are_the_bridge_and_the_veths_on_it() -> None:
    now = [
        {"name": "eth0", "kind": "", "master": ""},
        {"name": "veth1", "kind": "veth", "master": "cfnode0"},
        {"name": "vethX", "kind": "veth", "master": "cni-podman0"},
        {"name": "cfnode0", "kind": "bridge", "master": ""},
    ]

    assert hoststate.plan_links(now, OWN) == ["veth1", "cfnode0"]


def test_cgroups_of_the_node_are_removed_deepest_first() -> None:
    dirs = {
        "/sys/fs/cgroup/memory": [
            "cardano-forge-node",
            "cardano-forge-node/kubepods",
            "cardano-forge-node/kubepods/besteffort",
            "other",
        ]
    }

    assert hoststate.owned_cgroups(dirs, OWN) == [
        "/sys/fs/cgroup/memory/cardano-forge-node/kubepods/besteffort",
        "/sys/fs/cgroup/memory/cardano-forge-node/kubepods",
        "/sys/fs/cgroup/memory/cardano-forge-node",
    ]


def _netns_scenario() -> None:
    """Run inside a private network namespace (``unshare -n``): someone's rules exist, the
    node's kubelet, CNI bridge and kube-proxy add theirs (and someone else adds a CNI chain of
    another network meanwhile); the plan removes the node's only."""

    def sh(*cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True)

    sh("nft", "add", "table", "inet", "someone")
    sh("nft", "add", "chain", "inet", "someone", "input", "{ type filter hook input priority 0; }")
    sh("nft", "add", "rule", "inet", "someone", "input", "tcp", "dport", "22", "accept")
    sh("iptables", "-t", "nat", "-N", "SOMEONE")
    sh("iptables", "-t", "nat", "-A", "POSTROUTING", "-j", "SOMEONE")
    before = hoststate.read_nft()
    # The kubelet, the CNI bridge plugin (ipMasq) and kube-proxy (nftables mode):
    sh("iptables", "-N", "KUBE-FIREWALL")
    sh("iptables", "-A", "INPUT", "-j", "KUBE-FIREWALL")
    sh("iptables", "-A", "KUBE-FIREWALL", "-d", "127.0.0.0/8", "-j", "DROP")
    sh("ip6tables", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT")
    ours = 'name: "cardano-forge-node" id: "abc"'
    sh("iptables", "-t", "nat", "-N", "CNI-0123")
    sh(
        "iptables",
        "-t",
        "nat",
        "-A",
        "CNI-0123",
        "-d",
        "10.244.0.0/24",
        "-j",
        "ACCEPT",
        "-m",
        "comment",
        "--comment",
        ours,
    )
    sh(
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "10.244.0.5",
        "-j",
        "CNI-0123",
        "-m",
        "comment",
        "--comment",
        ours,
    )
    sh("nft", "add", "table", "ip", "kube-proxy")
    sh("nft", "add", "chain", "ip", "kube-proxy", "services")
    # Someone else's CNI network, meanwhile:
    theirs = 'name: "podman" id: "def"'
    sh("iptables", "-t", "nat", "-N", "CNI-9999")
    sh(
        "iptables",
        "-t",
        "nat",
        "-A",
        "CNI-9999",
        "-j",
        "ACCEPT",
        "-m",
        "comment",
        "--comment",
        theirs,
    )
    sh(
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-j",
        "CNI-9999",
        "-m",
        "comment",
        "--comment",
        theirs,
    )

    marked = hoststate.read_cni_chains(OWN.cni_marker)
    for cmd in hoststate.plan_nft(before, hoststate.read_nft(), marked):
        sh("nft", *cmd)

    after = hoststate.read_nft()
    chains = sorted(
        f"{c['family']} {c['table']} {c['name']}" for i in after if (c := i.get("chain"))
    )
    tables = sorted(f"{t['family']} {t['name']}" for i in after if (t := i.get("table")))
    postrouting = [r for i in after if (r := i.get("rule")) and r["chain"] == "POSTROUTING"]
    print(json.dumps({"chains": chains, "tables": tables, "postrouting": len(postrouting)}))


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nft"),
    reason="needs root, unshare and nft (a private network namespace)",
)
def test_nft_plan_removes_the_node_rules_and_keeps_everyone_elses() -> None:
    code = "from tests.harness.test_hoststate import _netns_scenario; _netns_scenario()"
    out = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout)

    assert "ip filter KUBE-FIREWALL" not in result["chains"]
    assert "ip nat CNI-0123" not in result["chains"]
    assert "ip nat CNI-9999" in result["chains"]
    assert "ip nat SOMEONE" in result["chains"]
    assert "inet someone input" in result["chains"]
    # ip filter and ip6 mangle were created for the node only; ip nat holds someone's chains.
    assert result["tables"] == ["inet someone", "ip nat"]
    assert result["postrouting"] == 2  # someone's two jumps, not the node's


def test_snapshot_round_trips_through_json(tmp_path: Path) -> None:
    snap = hoststate.Snapshot(
        sysctls={"vm/overcommit_memory": "0"},
        mounts=[(1, "/")],
        links=[{"name": "lo", "kind": "", "master": ""}],
        cgroups={"/sys/fs/cgroup/memory": ["a"]},
        paths={"/var/lib/kubelet": None},
    )
    path = tmp_path / "s.json"
    path.write_text(json.dumps(snap.to_json()))

    assert hoststate.Snapshot.from_json(json.loads(path.read_text())) == snap
