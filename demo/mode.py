"""Which way ``make demo`` runs: real pods on a kubelet node, or local processes.

``choose(requested, facts)`` is the decision: a snapshot of the host in (``HostFacts``, gathered
by ``probe``), the mode and its one-line reason out. ``DEMO_MODE`` (or ``--mode``) asks for
``auto`` (the default: pods when this host can run the test node, else processes), ``pods`` (an
error naming the fix when the host cannot) or ``processes``.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

MODES = ("auto", "pods", "processes")
PODS, PROCESSES = "pods", "processes"
#: What the node's start builds or installs itself (make node-tools): only Go must be there.
NODE_BINARIES = ("kubelet", "kube-controller-manager", "kube-scheduler", "kube-proxy", "coredns")


class ModeError(ValueError):
    """A one-line account of why the requested mode cannot run, with the fix."""


@dataclass(frozen=True)
class HostFacts:
    """What the choice depends on, read once at start."""

    linux: bool
    root: bool
    cgroup_missing: tuple[str, ...] = ()
    """cgroup controllers the kubelet needs that this host lacks."""
    node_tools_built: bool = True
    """``make node-tools`` ran (kubelet and the rest are in ``.tools/bin``)."""
    go: bool = True
    """A Go toolchain on PATH (to build the node tools when they are not built)."""
    busy_node: str | None = None
    """The state directory of a running test node the demo cannot use (one node per host)."""
    long_state_dir: str | None = None
    """Why the node's state directory under the demo's ``--dir`` cannot hold its sockets."""


@dataclass(frozen=True)
class Choice:
    mode: str
    """``pods`` or ``processes``."""
    reason: str
    """Why (for processes: why not pods), one line."""

    def first_line(self) -> str:
        if self.mode == PODS:
            return "demo: real pods on a kubelet node"
        return f"demo: processes (reason: {self.reason})"


def obstacle(facts: HostFacts) -> str | None:
    """Why this host cannot run the demo on a kubelet node (one line naming the fix), or None."""
    if not facts.linux:
        return "the kubelet node needs Linux"
    if not facts.root:
        return "the kubelet node needs root (run 'sudo make demo')"
    if facts.cgroup_missing:
        return (
            f"cgroup controller(s) {', '.join(facts.cgroup_missing)} missing: the kubelet "
            "needs them (mount them, cgroup v1 or v2)"
        )
    if not facts.node_tools_built and not facts.go:
        return "the node tools are not built and no Go is on PATH: install Go 1.26+"
    if facts.long_state_dir is not None:
        return facts.long_state_dir.replace("use a directory", "use a --dir")
    if facts.busy_node is not None:
        return (
            f"another test node runs on this host ({facts.busy_node}; one per host): "
            "end it or run 'make node-down'"
        )
    return None


def choose(requested: str, facts: HostFacts) -> Choice:
    """The mode to run in for ``requested`` (``auto``, ``pods`` or ``processes``)."""
    if requested not in MODES:
        raise ModeError(f"DEMO_MODE={requested!r} is not a mode: use one of {', '.join(MODES)}")
    if requested == PROCESSES:
        return Choice(PROCESSES, "DEMO_MODE=processes")
    problem = obstacle(facts)
    if problem is None:
        why = "DEMO_MODE=pods" if requested == PODS else "this host can run the kubelet node"
        return Choice(PODS, why)
    if requested == PODS:
        raise ModeError(f"DEMO_MODE=pods, but {problem}; or use DEMO_MODE=processes")
    return Choice(PROCESSES, problem)


def probe(repo_root: Path, shared_cluster: Path, node_root: Path | None = None) -> HostFacts:
    """The host as ``choose`` needs it (reads /proc, the node's host journal, PATH)."""
    if not sys.platform.startswith("linux"):
        return HostFacts(linux=False, root=False)
    root = os.geteuid() == 0
    if not root:
        return HostFacts(linux=True, root=False)
    from tests.harness import node  # noqa: PLC0415  (Linux only)

    controllers = node._cgroup_controllers()
    missing = tuple(c for c in ("cpu", "memory", "pids", "cpuset") if c not in controllers)
    built = all((repo_root / ".tools" / "bin" / b).exists() for b in NODE_BINARIES)
    busy = None
    journal = node.read_journal()
    if journal is not None and node.journal_is_live(journal):
        usable = journal.get("detached") and Path(journal["control_plane_dir"]) == (
            shared_cluster.resolve()
        )
        if not usable:
            busy = str(journal["state_dir"])
    return HostFacts(
        linux=True,
        root=True,
        long_state_dir=node.state_dir_problem(node_root) if node_root is not None else None,
        cgroup_missing=missing,
        node_tools_built=built,
        go=shutil.which("go") is not None,
        busy_node=busy,
    )
