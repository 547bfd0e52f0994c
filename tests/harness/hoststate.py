"""What the test node changes on the host: a snapshot taken before, and the plan that puts it back.

A kubelet, kube-proxy, containerd and the CNI bridge change host-wide settings that outlive them:
sysctls (``vm.overcommit_memory``, ``kernel.panic``, ``net.ipv4.ip_forward``...), nf_tables
tables, chains and rules (through iptables-nft and kube-proxy's nftables mode), mounts (the
kubelet's bind mount of its root directory, pod volumes, container root filesystems, network
namespaces), cgroups, the bridge and its veths, and files at hard-coded host paths
(``/var/lib/kubelet/device-plugins``, ``/var/log/containers``, ``/var/lib/cni``,
``/run/containerd/s``).

``take()`` records all of that as plain JSON-able data before the node starts; the ``plan_*``
functions are pure: given the snapshot from before, the state now and what the node owns, they
return what to undo. Ownership is conservative: only what is new since the snapshot **and** is
the node's by name or place (a ``KUBE-*`` chain, a ``CNI-*`` chain carrying the node's network
name, a mount under the node's state directory, the node's cgroup root, bridge and veths) is
removed, so someone else's rules, mounts or links on the same host are left alone.
``compare()`` lists the differences that matter between two snapshots (the restore test).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYSCTL_ROOT = Path("/proc/sys")
CGROUP_MOUNT_TYPES = ("cgroup", "cgroup2")
#: sysctls the node may change and ``restore`` puts back (path prefixes below /proc/sys; paths,
#: not dotted names, because interface names may contain dots).
RESTORED_SYSCTLS = ("kernel/panic", "kernel/keys/", "vm/", "net/")
#: sysctls that change by themselves; never compared.
VOLATILE_SYSCTLS = ("kernel/ns_last_pid", "kernel/random/", "fs/", "kernel/pty/")
MAX_LISTING = 20000


@dataclass(frozen=True)
class Ownership:
    """What belongs to one test node (names and places, fixed per host)."""

    state_dir: str
    cgroup_root: str  # directory name at the root of every cgroup hierarchy
    bridge: str
    cni_network: str
    host_paths: tuple[str, ...]

    @property
    def cni_marker(self) -> str:
        # The CNI bridge plugin comments its rules with: name: "<network>" id: "<container>"
        return f'name: "{self.cni_network}"'


@dataclass
class Snapshot:
    sysctls: dict[str, str] = field(default_factory=dict)
    nft: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[tuple[int, str]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)
    cgroups: dict[str, list[str]] = field(default_factory=dict)
    paths: dict[str, list[str] | None] = field(default_factory=dict)
    #: (family, table, chain) of the chains whose rules carry the node's CNI comment.
    cni_chains: list[tuple[str, str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "sysctls": self.sysctls,
            "nft": self.nft,
            "cni_chains": [list(c) for c in self.cni_chains],
            "mounts": [list(m) for m in self.mounts],
            "links": self.links,
            "cgroups": self.cgroups,
            "paths": self.paths,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        return cls(
            sysctls=dict(data["sysctls"]),
            nft=list(data["nft"]),
            mounts=[(int(i), str(p)) for i, p in data["mounts"]],
            links=list(data["links"]),
            cgroups={k: list(v) for k, v in data["cgroups"].items()},
            paths={k: (None if v is None else list(v)) for k, v in data["paths"].items()},
            cni_chains=[(str(f), str(t), str(c)) for f, t, c in data.get("cni_chains", [])],
        )


# ---- reading the host --------------------------------------------------------------------------
def read_sysctls() -> dict[str, str]:
    """Every readable and writable sysctl, by path below /proc/sys (``vm/overcommit_memory``)."""
    values: dict[str, str] = {}
    for dirpath, _dirs, files in os.walk(SYSCTL_ROOT):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                if not os.stat(path).st_mode & 0o200:
                    continue
                with open(path) as f:
                    value = f.read(4096)
            except OSError:
                continue
            key = os.path.relpath(path, SYSCTL_ROOT)
            values[key] = " ".join(value.split())
    return values


def read_nft() -> list[dict[str, Any]]:
    """The nf_tables ruleset as ``nft -j`` objects (tables, chains, rules); [] without nft."""
    if shutil.which("nft") is None:
        return []
    out = subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        return []
    items = json.loads(out.stdout).get("nftables", [])
    keep = ("table", "chain", "rule")
    return [item for item in items if any(k in item for k in keep)]


def read_cni_chains(marker: str) -> list[tuple[str, str, str]]:
    """Chains with a rule commented ``marker``. iptables-nft keeps comments in an xt match that
    ``nft -j`` does not print, so they are read from ``iptables-save``/``ip6tables-save``."""
    found: set[tuple[str, str, str]] = set()
    for family, cmd in (("ip", "iptables-save"), ("ip6", "ip6tables-save")):
        if shutil.which(cmd) is None:
            continue
        out = subprocess.run([cmd], capture_output=True, text=True).stdout
        table = ""
        for line in out.splitlines():
            if line.startswith("*"):
                table = line[1:].strip()
            elif line.startswith("-A ") and marker.replace('"', '\\"') in line:
                found.add((family, table, line.split()[1]))
    return sorted(found)


def _unescape(field_: str) -> str:
    return field_.encode().decode("unicode_escape")


def read_mounts() -> list[tuple[int, str]]:
    """(mount ID, mount point) of every mount in this mount namespace."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split()
        mounts.append((int(parts[0]), _unescape(parts[4])))
    return mounts


def cgroup_mounts() -> list[str]:
    """Mount points of every cgroup (v1) and cgroup2 hierarchy."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        if post.split()[0] in CGROUP_MOUNT_TYPES:
            points.append(_unescape(pre.split()[4]))
    return points


def read_links() -> list[dict[str, Any]]:
    """Network links: name, kind (bridge, veth...) and master."""
    out = subprocess.run(["ip", "-j", "-d", "link", "show"], capture_output=True, text=True)
    if out.returncode != 0:
        return []
    links = []
    for link in json.loads(out.stdout or "[]"):
        links.append(
            {
                "name": link.get("ifname", ""),
                "kind": link.get("linkinfo", {}).get("info_kind", ""),
                "master": link.get("master", ""),
            }
        )
    return links


def _listing(root: str, limit: int = MAX_LISTING) -> list[str]:
    entries: list[str] = []
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            entries.append(os.path.relpath(os.path.join(dirpath, name), root))
            if len(entries) >= limit:
                return sorted(entries)
    return sorted(entries)


def read_cgroups() -> dict[str, list[str]]:
    """The directories of every cgroup hierarchy (relative to its mount point)."""
    result = {}
    for point in cgroup_mounts():
        dirs: list[str] = []
        for dirpath, subdirs, _files in os.walk(point):
            dirs.extend(os.path.relpath(os.path.join(dirpath, d), point) for d in subdirs)
            if len(dirs) >= MAX_LISTING:
                break
        result[point] = sorted(dirs)
    return result


def read_paths(paths: tuple[str, ...]) -> dict[str, list[str] | None]:
    """For each path: None when absent, else its recursive listing."""
    return {p: (_listing(p) if os.path.lexists(p) else None) for p in paths}


def take(own: Ownership) -> Snapshot:
    return Snapshot(
        sysctls=read_sysctls(),
        nft=read_nft(),
        mounts=read_mounts(),
        links=read_links(),
        cgroups=read_cgroups(),
        paths=read_paths(own.host_paths),
        cni_chains=read_cni_chains(own.cni_marker),
    )


# ---- pure planning -----------------------------------------------------------------------------
def plan_sysctls(before: dict[str, str], now: dict[str, str]) -> list[tuple[str, str]]:
    """(key, value from before) for every restorable sysctl whose value changed."""
    return sorted(
        (key, old)
        for key, old in before.items()
        if key.startswith(RESTORED_SYSCTLS) and key in now and now[key] != old
    )


def _tables(nft: list[dict[str, Any]]) -> set[tuple[str, str, int]]:
    return {(t["family"], t["name"], int(t["handle"])) for i in nft if (t := i.get("table"))}


def _jump_targets(expr: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(expr, dict):
        for key, value in expr.items():
            if key in ("jump", "goto") and isinstance(value, dict) and "target" in value:
                found.add(str(value["target"]))
            else:
                found |= _jump_targets(value)
    elif isinstance(expr, list):
        for item in expr:
            found |= _jump_targets(item)
    return found


def plan_nft(
    before: list[dict[str, Any]],
    now: list[dict[str, Any]],
    cni_chains: list[tuple[str, str, str]],
) -> list[list[str]]:
    """``nft`` argument lists that remove the node's tables, chains and rules (in order).

    ``cni_chains`` are the chains that carry the node's CNI comment now (``read_cni_chains``)."""
    marked_chains = set(cni_chains)
    old_tables = _tables(before)
    table_handle = {(f, n): h for f, n, h in _tables(now)}

    def table_is_old(family: str, table: str) -> bool:
        return (family, table, table_handle.get((family, table), -1)) in old_tables

    old_chains = {(c["family"], c["table"], c["name"]) for i in before if (c := i.get("chain"))}
    old_rules = {
        (r["family"], r["table"], r["chain"], int(r["handle"]))
        for i in before
        if (r := i.get("rule"))
    }
    chains = [c for i in now if (c := i.get("chain"))]
    rules = [r for i in now if (r := i.get("rule"))]

    def is_new_chain(c: dict[str, Any]) -> bool:
        key = (c["family"], c["table"], c["name"])
        return not table_is_old(c["family"], c["table"]) or key not in old_chains

    def is_new_rule(r: dict[str, Any]) -> bool:
        key = (r["family"], r["table"], r["chain"], int(r["handle"]))
        return not table_is_old(r["family"], r["table"]) or key not in old_rules

    owned_tables = {
        (f, n) for f, n, _h in _tables(now) if n == "kube-proxy" and not table_is_old(f, n)
    }
    owned_chains: set[tuple[str, str, str]] = set()
    for c in chains:
        key = (c["family"], c["table"], c["name"])
        if (c["family"], c["table"]) in owned_tables or not is_new_chain(c):
            continue
        name = c["name"]
        if name.startswith("KUBE-") or (name.startswith("CNI-") and key in marked_chains):
            owned_chains.add(key)

    commands: list[list[str]] = []
    remaining_rules: dict[tuple[str, str, str], int] = {}
    for r in rules:
        key = (r["family"], r["table"], r["chain"])
        if (r["family"], r["table"]) in owned_tables or key in owned_chains:
            continue
        jumps = {(r["family"], r["table"], t) for t in _jump_targets(r.get("expr", []))}
        if is_new_rule(r) and jumps & owned_chains:
            commands.append(["delete", "rule", *key, "handle", str(r["handle"])])
        else:
            remaining_rules[key] = remaining_rules.get(key, 0) + 1
    for key in sorted(owned_chains):
        commands.append(["flush", "chain", *key])
    for key in sorted(owned_chains):
        commands.append(["delete", "chain", *key])
    # A table that did not exist before and holds nothing but emptied new chains is the node's
    # (iptables-nft creates filter/nat/mangle with their base chains on first use).
    for family, name, _h in sorted(_tables(now)):
        if (family, name) in owned_tables or table_is_old(family, name):
            continue
        left = [
            c
            for c in chains
            if (c["family"], c["table"]) == (family, name)
            and (c["family"], c["table"], c["name"]) not in owned_chains
        ]
        if all(
            is_new_chain(c) and not remaining_rules.get((family, name, c["name"])) for c in left
        ):
            owned_tables.add((family, name))
    for family, name in sorted(owned_tables):
        commands.append(["delete", "table", family, name])
    return commands


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def plan_mounts(
    before: list[tuple[int, str]], now: list[tuple[int, str]], own: Ownership
) -> list[str]:
    """Mount points to unmount, deepest (and most recent) first: mounts that are new since the
    snapshot and lie under the node's state directory or one of its host paths."""
    # Mount IDs are reused after an unmount: a mount is old only if its ID and point both match.
    old = set(before)
    prefixes = (own.state_dir, *own.host_paths)
    new = [
        (mount_id, point)
        for mount_id, point in now
        if (mount_id, point) not in old and any(_under(point, p) for p in prefixes)
    ]
    new.sort(key=lambda m: (m[1].count("/"), m[0]), reverse=True)
    return [point for _, point in new]


def plan_links(now: list[dict[str, Any]], own: Ownership) -> list[str]:
    """Links to delete: the veths on the node's bridge, then the bridge."""
    veths = sorted(link["name"] for link in now if link["master"] == own.bridge)
    bridge = [link["name"] for link in now if link["name"] == own.bridge]
    return veths + bridge


def plan_paths(before: dict[str, list[str] | None], now: dict[str, list[str] | None]) -> list[str]:
    """Host paths to remove: a path that did not exist before, whole; inside one that did, the
    entries that are new (children before parents)."""
    remove: list[str] = []
    for path, old in before.items():
        current = now.get(path)
        if current is None:
            continue
        if old is None:
            remove.append(path)
            continue
        if len(old) >= MAX_LISTING:
            continue  # too big to judge entry by entry: leave it alone
        new = set(current) - set(old)
        # Only the top-most new entries: removing one removes what is below it.
        tops = [e for e in new if not any(_under(e, o) for o in new if o != e)]
        remove.extend(os.path.join(path, e) for e in sorted(tops, key=len, reverse=True))
    return remove


def owned_cgroups(hierarchies: dict[str, list[str]], own: Ownership) -> list[str]:
    """Absolute cgroup directories of the node, deepest first (the order ``rmdir`` needs)."""
    dirs = [
        os.path.join(point, d)
        for point, listing in hierarchies.items()
        for d in listing
        if _under(d, own.cgroup_root)
    ]
    return sorted(dirs, key=lambda d: (d.count("/"), d), reverse=True)


# ---- comparing two snapshots (the restore test) ------------------------------------------------
def compare(before: Snapshot, after: Snapshot, own: Ownership) -> list[str]:
    """Differences between two snapshots that the node could have caused, one line each."""
    diffs = []
    for key in sorted(set(before.sysctls) & set(after.sysctls)):
        if key.startswith(VOLATILE_SYSCTLS):
            continue
        if before.sysctls[key] != after.sysctls[key]:
            diffs.append(f"sysctl {key}: {before.sysctls[key]!r} -> {after.sysctls[key]!r}")
    for key in sorted(set(after.sysctls) - set(before.sysctls)):
        if own.bridge in key or "/veth" in key:
            diffs.append(f"sysctl {key}: new")
    left = plan_nft(before.nft, after.nft, after.cni_chains)
    diffs += [f"nft left: nft {' '.join(c)}" for c in left]
    old_rules = _rule_counts(before.nft)
    for chain, count in sorted(_rule_counts(after.nft).items()):
        if chain in old_rules and count != old_rules[chain]:
            diffs.append(f"nft chain {' '.join(chain)}: {old_rules[chain]} rules -> {count}")
    old_points = {p for _, p in before.mounts}
    prefixes = (own.state_dir, *own.host_paths)
    for _, point in after.mounts:
        if point not in old_points and any(_under(point, p) for p in prefixes):
            diffs.append(f"mount left: {point}")
    diffs += [f"link left: {name}" for name in plan_links(after.links, own)]
    for point, listing in after.cgroups.items():
        old = set(before.cgroups.get(point, []))
        for d in listing:
            if d not in old and (_under(d, own.cgroup_root) or d.startswith("kubepods")):
                diffs.append(f"cgroup left: {os.path.join(point, d)}")
    for path, now_listing in after.paths.items():
        old_listing = before.paths.get(path)
        if (old_listing is None) != (now_listing is None):
            state = "exists (it did not before)" if now_listing is not None else "is gone"
            diffs.append(f"path {path} {state}")
        elif now_listing is not None and old_listing is not None and now_listing != old_listing:
            extra = sorted(set(now_listing) - set(old_listing))[:3]
            diffs.append(f"path {path} differs (new: {extra})")
    return diffs


def _rule_counts(nft: list[dict[str, Any]]) -> dict[tuple[str, str, str], int]:
    counts: dict[tuple[str, str, str], int] = {}
    for item in nft:
        if rule := item.get("rule"):
            key = (rule["family"], rule["table"], rule["chain"])
            counts[key] = counts.get(key, 0) + 1
    return counts


# ---- applying ----------------------------------------------------------------------------------
def write_sysctl(key: str, value: str) -> None:
    (SYSCTL_ROOT / key).write_text(value)


def kill_cgroup_processes(dirs: list[str]) -> int:
    """SIGKILL every process in the given cgroup directories; the number signalled."""
    killed = 0
    for d in dirs:
        with contextlib.suppress(OSError):
            for line in Path(d, "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(line), 9)
                    killed += 1
    return killed
