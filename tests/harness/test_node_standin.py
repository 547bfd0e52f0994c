"""The stand-in behaves like cardano-node where the forge manager depends on it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.controlplane import free_port
from tests.harness.forge_pod import write_pool_secret
from tests.harness.forging_log import read_events

REPO = Path(__file__).resolve().parents[2]


def wait(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


class Node:
    def __init__(self, tmp: Path, *flags: str, name: str = "cn-standin-t") -> None:
        self.tmp = tmp
        self.log = tmp / "events.jsonl"
        self.socket = tmp / "node.socket"
        self.files = [tmp / "kes.skey", tmp / "vrf.skey", tmp / "node.cert"]
        self.args = [
            sys.executable, "-m", "tests.harness.node_standin", "--name", name,
            "--socket-path", str(self.socket), "--event-log", str(self.log),
            "--shelley-kes-key", str(self.files[0]), "--shelley-vrf-key", str(self.files[1]),
            "--shelley-operational-certificate", str(self.files[2]), "--startup-delay", "0.5",
            *flags,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=subprocess.DEVNULL)

    def events(self) -> list[str]:
        return [e["event"] for e in read_events([self.log])]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    src = write_pool_secret(tmp_path / "src")
    for name in ("kes.skey", "vrf.skey", "node.cert"):
        (tmp_path / name).write_bytes((src / name).read_bytes())
    return tmp_path


def test_refuses_to_start_without_credentials(tmp_path: Path) -> None:
    node = Node(tmp_path, "--start-as-non-producing-node")
    proc = subprocess.run(node.args, cwd=REPO, capture_output=True, timeout=30)
    assert proc.returncode == 1
    assert b"credential file(s) missing" in proc.stderr
    assert node.events() == ["refused_to_start"]


def test_non_producing_boot_then_sighup_cycle(creds: Path) -> None:
    node = Node(creds, "--start-as-non-producing-node")
    node.start()
    try:
        assert node.proc is not None
        wait(lambda: "started" in node.events())
        # Before the socket is up a SIGHUP is ignored for forging, as the real node does.
        node.proc.send_signal(signal.SIGHUP)
        wait(lambda: "sighup_ignored" in node.events())
        wait(lambda: "socket_up" in node.events())
        assert (Path(f"/proc/{node.proc.pid}/comm").read_text().strip()) == "cn-standin-t"
        assert "forging_started" not in node.events()
        node.proc.send_signal(signal.SIGHUP)
        wait(lambda: "forging_started" in node.events())
        # An unparsable file keeps the previous state; a missing one disables.
        node.files[0].write_text("garbage")
        node.proc.send_signal(signal.SIGHUP)
        wait(lambda: "reconfig_kept" in node.events())
        assert node.events().count("forging_stopped") == 0
        node.files[0].unlink()
        node.proc.send_signal(signal.SIGHUP)
        wait(lambda: "forging_stopped" in node.events())
    finally:
        node.stop()
    assert node.events()[-1] == "exited"
    assert not node.socket.exists()


def test_without_flag_it_boots_forging(creds: Path) -> None:
    node = Node(creds, "--pid-file", str(creds / "node.pid"))
    node.start()
    try:
        wait(lambda: "forging_started" in node.events())
        assert node.proc is not None
        assert int((creds / "node.pid").read_text()) == node.proc.pid
        first = json.loads(node.log.read_text().splitlines()[0])
        assert first["pid"] == node.proc.pid and first["name"] == "cn-standin-t"
        assert abs(first["t"] - time.clock_gettime(time.CLOCK_BOOTTIME)) < 60
    finally:
        node.stop()
    assert os.path.exists(creds / "kes.skey")  # the node never modifies credentials


def chart_command(creds: Path, *extra: str) -> list[str]:
    """The node container's command line as the chart renders it, aimed at ``creds``."""
    (creds / "config.json").write_text("{}\n")
    (creds / "topology.json").write_text("{}\n")
    return [
        sys.executable, "-m", "tests.harness.node_standin", "run",
        "--config", str(creds / "config.json"), "--topology", str(creds / "topology.json"),
        "--database-path", str(creds / "db"), "--socket-path", str(creds / "node.socket"),
        "--host-addr", "0.0.0.0", "--port", "3001",
        "--shelley-kes-key", str(creds / "kes.skey"), "--shelley-vrf-key", str(creds / "vrf.skey"),
        "--shelley-operational-certificate", str(creds / "node.cert"), *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("flag", ["--start-as-non-producing-node", "--non-producing-node"])
def test_takes_the_real_nodes_run_command_line(creds: Path, flag: str) -> None:
    """Events go to stdout and, with STANDIN_EVENT_LOG, to that file; the process: cardano-node."""
    log = creds / "env-events.jsonl"
    env = {**os.environ, "STANDIN_EVENT_LOG": str(log)}
    proc = subprocess.Popen(
        chart_command(creds, flag, "--startup-delay", "0.2"),
        cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait(lambda: "socket_up" in [e["event"] for e in read_events([log])])
        assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == "cardano-node"
        proc.send_signal(signal.SIGHUP)
        wait(lambda: "forging_started" in [e["event"] for e in read_events([log])])
    finally:
        proc.terminate()
        stdout, _ = proc.communicate(timeout=10)
    in_file = read_events([log])
    on_stdout = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert on_stdout == in_file
    assert [e["event"] for e in in_file] == [
        "started", "socket_up", "forging_started", "forging_stopped", "exited",
    ]  # fmt: skip
    assert in_file[0]["non_producing"] is True
    assert {e["name"] for e in in_file} == {"cardano-node"}
    assert {e["host"] for e in in_file} == {socket.gethostname()}
    assert (creds / "db").is_dir()


def test_refuses_unknown_flags_and_missing_config(creds: Path) -> None:
    unknown = subprocess.run(
        [*chart_command(creds), "--no-such-flag"], cwd=REPO, capture_output=True, timeout=30
    )
    assert unknown.returncode != 0
    assert b"unrecognized arguments: --no-such-flag" in unknown.stderr
    # A prefix of a flag is not that flag (the real node does not accept abbreviations).
    abbreviated = [*chart_command(creds), "--start-as-non-producing"]
    prefix = subprocess.run(abbreviated, cwd=REPO, capture_output=True, timeout=30)
    assert prefix.returncode != 0
    command = chart_command(creds)
    (creds / "config.json").unlink()
    missing = subprocess.run(command, cwd=REPO, capture_output=True, timeout=30)
    assert missing.returncode == 1
    assert f"--config {creds / 'config.json'}: no such file".encode() in missing.stderr
    assert missing.stdout == b""  # it did not start


def test_metrics_endpoint_with_a_tip_that_can_lag(creds: Path) -> None:
    port = free_port()
    lag_file = creds / "tip-lag"
    node = Node(creds, "--start-as-non-producing-node", "--metrics-port", str(port),
                "--tip-lag", "7", "--tip-lag-file", str(lag_file))  # fmt: skip

    def tip() -> int | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        for line in text.splitlines():
            if line.startswith("cardano_node_metrics_slotNum_int "):
                return int(line.split()[1])
        return None

    def lag() -> int | None:
        t = tip()
        return None if t is None else 4_492_800 + int(time.time() - 1_596_059_091) - t

    node.start()
    try:
        wait(lambda: "socket_up" in node.events())
        assert lag() in (7, 8)  # --tip-lag while the file does not exist (a second may tick)
        lag_file.write_text("500\n")
        assert lag() in (500, 501)
        lag_file.write_text("none\n")
        assert tip() is None  # no tip: a node replaying its ledger
        lag_file.write_text("0\n")
        assert lag() in (0, 1)
    finally:
        node.stop()


def test_no_tip_before_the_socket_is_up(creds: Path) -> None:
    port = free_port()
    node = Node(creds, "--start-as-non-producing-node", "--metrics-port", str(port))
    node.args[node.args.index("--startup-delay") + 1] = "30"
    node.start()
    try:
        wait(lambda: "started" in node.events())

        def body() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                return r.read().decode()

        wait(lambda: bool(read_or_empty(body)))
        assert "slotNum" not in body()
    finally:
        node.stop()


def read_or_empty(read: Callable[[], str]) -> str:
    try:
        return read()
    except OSError:
        return ""


def test_peer_port_opens_once_up_and_metrics_listen_where_asked(creds: Path) -> None:
    """``--open-peer-port``: the chart's readiness probe (a TCP connect to the peer port) passes
    once the node is up, as with cardano-node after its replay; ``--metrics-host`` lets a
    Prometheus outside the pod scrape it."""
    peer, metrics = free_port(), free_port()
    node = Node(creds, "--start-as-non-producing-node", "--host-addr", "127.0.0.1",
                "--port", str(peer), "--open-peer-port", "--metrics-port", str(metrics),
                "--metrics-host", "127.0.0.2")  # fmt: skip
    node.args[node.args.index("--startup-delay") + 1] = "1.5"

    def connects(port: int, host: str = "127.0.0.1") -> bool:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            return False

    node.start()
    try:
        wait(lambda: connects(metrics, "127.0.0.2"))
        assert "socket_up" not in node.events() and not connects(peer)
        wait(lambda: "socket_up" in node.events())
        wait(lambda: connects(peer))
        assert not connects(metrics)  # not on 127.0.0.1: only where it was asked to listen
    finally:
        node.stop()
    assert not connects(peer)


def test_every_event_names_its_process_instance(creds: Path) -> None:
    """Pods share the name and may share the PID: ``instance`` tells processes apart."""
    first, second = Node(creds), Node(creds)
    second.log = creds / "second.jsonl"
    second.args[second.args.index("--event-log") + 1] = str(second.log)
    second.args[second.args.index("--socket-path") + 1] = str(creds / "second.socket")
    for node in (first, second):
        node.start()
    try:
        wait(lambda: "socket_up" in first.events() and "socket_up" in second.events())
    finally:
        first.stop()
        second.stop()
    instances = [{e["instance"] for e in read_events([n.log])} for n in (first, second)]
    assert all(len(i) == 1 for i in instances) and instances[0] != instances[1]
