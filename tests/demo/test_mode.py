"""The demo's choice between real pods and processes, and the reason it gives on its first line."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.mode import PODS, PROCESSES, HostFacts, ModeError, choose
from tests.harness.node import state_dir_problem

CAPABLE = HostFacts(linux=True, root=True)


def test_auto_runs_on_pods_where_the_node_can_start() -> None:
    choice = choose("auto", CAPABLE)
    assert choice.mode == PODS
    assert choice.first_line() == "demo: real pods on a kubelet node"


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (HostFacts(linux=True, root=False), "the kubelet node needs root (run 'sudo make demo')"),
        (HostFacts(linux=False, root=False), "the kubelet node needs Linux"),
        (
            HostFacts(linux=True, root=True, cgroup_missing=("cpuset",)),
            "cgroup controller(s) cpuset missing: the kubelet needs them (mount them, "
            "cgroup v1 or v2)",
        ),
        (
            HostFacts(linux=True, root=True, node_tools_built=False, go=False),
            "the node tools are not built and no Go is on PATH: install Go 1.26+",
        ),
        (
            HostFacts(
                linux=True,
                root=True,
                long_state_dir=state_dir_problem(Path("/srv/" + "d" * 80 + "/cluster/node")),
            ),
            "the node's state directory /srv/" + "d" * 80 + "/cluster/node is too long for its "
            "unix sockets (134 bytes with kubelet/device-plugins/kubelet.sock, at most 107): use "
            "a --dir of at most 71 bytes",
        ),
        (
            HostFacts(linux=True, root=True, busy_node="/srv/x/node"),
            "another test node runs on this host (/srv/x/node; one per host): end it or run "
            "'make node-down'",
        ),
    ],
)
def test_auto_falls_back_to_processes_with_the_reason(facts: HostFacts, reason: str) -> None:
    choice = choose("auto", facts)
    assert choice.mode == PROCESSES
    assert choice.reason == reason
    assert choice.first_line() == f"demo: processes (reason: {reason})"
    assert "\n" not in choice.first_line()


def test_node_tools_not_built_are_built_when_go_is_there() -> None:
    facts = HostFacts(linux=True, root=True, node_tools_built=False, go=True)
    assert choose("auto", facts).mode == PODS


def test_the_first_obstacle_is_the_one_named() -> None:
    facts = HostFacts(linux=True, root=False, cgroup_missing=("cpu",), busy_node="/n")
    assert "root" in choose("auto", facts).reason


def test_processes_forced_even_where_pods_could_run() -> None:
    choice = choose("processes", CAPABLE)
    assert choice.mode == PROCESSES
    assert choice.first_line() == "demo: processes (reason: DEMO_MODE=processes)"


def test_pods_forced_on_a_host_that_cannot_is_one_line_naming_both_fixes() -> None:
    with pytest.raises(ModeError) as raised:
        choose("pods", HostFacts(linux=True, root=False))
    message = str(raised.value)
    assert message == (
        "DEMO_MODE=pods, but the kubelet node needs root (run 'sudo make demo'); "
        "or use DEMO_MODE=processes"
    )


def test_pods_forced_where_it_can() -> None:
    choice = choose("pods", CAPABLE)
    assert (choice.mode, choice.reason) == (PODS, "DEMO_MODE=pods")


@pytest.mark.parametrize("requested", ["", "pod", "Pods", "kubelet"])
def test_unknown_mode_is_refused(requested: str) -> None:
    with pytest.raises(ModeError, match="is not a mode: use one of auto, pods, processes"):
        choose(requested, CAPABLE)
