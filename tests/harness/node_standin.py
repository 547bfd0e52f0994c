"""A cardano-node stand-in: the parts of its behaviour the forge manager depends on.

* Refuses to start (exit 1, one log line) when a credential file is missing, like the real node,
  even with ``--start-as-non-producing-node``.
* With ``--start-as-non-producing-node`` it boots not forging; without it, it boots forging when
  the files are present and parseable.
* After ``--startup-delay`` seconds (the node replaying its chain) it listens on ``--socket-path``.
  A SIGHUP before that is ignored for forging ("consensus not initialised"), as the real node does.
* On SIGHUP: all three files present and parseable -> forging; any file missing -> not forging;
  any other problem (unparsable, unreadable) -> previous state kept. The credentials it forges
  with are recorded as ``keys`` (a short SHA-256 of each file: ``kes``, ``vrf``, ``cert``) in
  ``forging_started``, and a SIGHUP that finds other valid files while forging reloads them
  (``credentials_reloaded``, with the new ``keys``), as the real node re-reads them.
* Every change is written to stdout, and appended to ``--event-log`` (default: the environment
  variable ``STANDIN_EVENT_LOG``) when one is given, as a JSON line with ``t`` from
  ``clock_gettime(CLOCK_BOOTTIME)`` (system-wide on Linux and shared by the containers of a host,
  so logs of several processes and pods compare; the clock of the forge manager's deadlines and
  of the forge permit, so they compare too), ``pid``, ``name``, ``host`` (the hostname: the
  pod's name in Kubernetes), ``instance`` (random, one per process: a pod deleted with
  ``--force`` and its replacement share the hostname and may share the PID) and ``event``
  (``started``, ``socket_up``, ``forging_started``, ``forging_stopped``, ``credentials_reloaded``,
  ``sighup_ignored``, ``reconfig_kept``, ``exited``, ``refused_to_start``).
* ``--name`` (default ``cardano-node``) sets the process name (``/proc/PID/comm``, via
  ``prctl(PR_SET_NAME)``), so a manager can find it by exact name; ``--pid-file`` writes its PID.
* It takes the command line the chart gives the real node: the ``run`` subcommand, ``--config``
  and ``--topology`` (must be files, as the real node reads them), ``--database-path`` (created),
  ``--host-addr``, ``--port`` (the stand-in has no peers; with its own ``--open-peer-port`` it
  listens there once up, as the real node opens its peer port after the ledger replay, so a
  readiness probe on it works; off by default, as tests on the host share one network) and
  ``--non-producing-node`` (the name before cardano-node 10.5.1). Any other flag is refused, as
  the real node refuses an unknown one: ``node.extraArgs`` may carry the stand-in's own
  ``--startup-delay``, ``--event-log``, ``--open-peer-port`` and metrics flags.
* ``--metrics-port`` serves the node's Prometheus endpoint (``/metrics`` on ``--metrics-host``,
  127.0.0.1 by default as in the node's ``hasPrometheus``; 0.0.0.0 lets a Prometheus outside
  the pod scrape it; legacy metric names): the tip ``cardano_node_metrics_slotNum_int`` is
  mainnet's wall-clock slot minus a lag of ``--tip-lag`` slots, absent until the socket is up
  (the ledger replay). The lag can be changed at run time through ``--tip-lag-file``, re-read on
  every scrape: a whole number of slots, or ``none`` for no tip at all; a missing file means
  ``--tip-lag``.

Run: ``python -m tests.harness.node_standin --name cnode-a --socket-path ... --event-log ...
--shelley-kes-key ... --shelley-vrf-key ... --shelley-operational-certificate ...``, or as the
test image's ``cardano-node run --config ... --socket-path ... --start-as-non-producing-node``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

PR_SET_NAME = 15
HOST = socket.gethostname()
INSTANCE = uuid.uuid4().hex[:12]


def now() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def set_process_name(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME) failed")


def parse_envelope(path: Path) -> None:
    """Raise unless ``path`` is a cardano text envelope (JSON with type and cborHex)."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or "type" not in data or "cborHex" not in data:
        raise ValueError(f"{path}: not a text envelope")
    bytes.fromhex(data["cborHex"])


# ---- the node's Prometheus endpoint and a tip that can lag ------------------------------------
MAINNET_SHELLEY_SLOT, MAINNET_SHELLEY_TIME = 4_492_800, 1_596_059_091


def add_metrics_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics-port", type=int, default=0, help="0: no metrics endpoint")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics endpoint")
    p.add_argument("--tip-lag", type=int, default=0, help="slots behind the wall clock")
    p.add_argument("--tip-lag-file", help="re-read per scrape: slots, or 'none' for no tip")


def tip_lag(args: argparse.Namespace) -> int | None:
    """Slots the tip lags behind the wall clock now; None: no tip (replaying)."""
    if args.tip_lag_file:
        with contextlib.suppress(FileNotFoundError):
            text = Path(args.tip_lag_file).read_text().strip()
            return None if text == "none" else int(text)
    return int(args.tip_lag)


def serve_metrics(node: StandIn) -> ThreadingHTTPServer | None:
    """Serve ``/metrics`` in a daemon thread while the process lives."""
    if not node.args.metrics_port:
        return None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection per reader, few ports used

        def do_GET(self) -> None:
            lines = ["# TYPE cardano_node_metrics_connectedPeers_int gauge",
                     "cardano_node_metrics_connectedPeers_int 2"]  # fmt: skip
            lag = tip_lag(node.args) if node.initialised else None
            if lag is not None:
                slot = MAINNET_SHELLEY_SLOT + int(time.time() - MAINNET_SHELLEY_TIME) - lag
                lines += ["# TYPE cardano_node_metrics_slotNum_int gauge",
                          f"cardano_node_metrics_slotNum_int {slot}",
                          f"cardano_node_metrics_blockNum_int {slot // 20}"]  # fmt: skip
            body = ("\n".join(lines) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((node.args.metrics_host, node.args.metrics_port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class StandIn:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.name: str = args.name
        self.files = [Path(args.shelley_kes_key), Path(args.shelley_vrf_key),
                      Path(args.shelley_operational_certificate)]  # fmt: skip
        self.event_log = Path(args.event_log) if args.event_log else None
        self.forging = False
        self.keys: dict[str, str] | None = None
        """Digests of the credentials it forges with (None while not forging)."""
        self.initialised = False
        self.stopping = False
        self.sock: socket.socket | None = None
        self.peer: socket.socket | None = None

    def event(self, event: str, **extra: Any) -> None:
        record = {"t": now(), "pid": os.getpid(), "name": self.name, "host": HOST,
                  "instance": INSTANCE, "event": event, **extra}  # fmt: skip
        line = json.dumps(record).encode() + b"\n"
        with contextlib.suppress(OSError):  # os.write: safe inside a signal handler, unlike print
            os.write(1, line)
        if self.event_log is None:
            return
        fd = os.open(self.event_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def key_digests(self) -> dict[str, str] | None:
        """A short SHA-256 of each credential file, None when one cannot be read."""
        try:
            kinds = ("kes", "vrf", "cert")
            return {
                kind: hashlib.sha256(f.read_bytes()).hexdigest()[:12]
                for kind, f in zip(kinds, self.files, strict=True)
            }
        except OSError:
            return None

    def set_forging(self, on: bool, why: str, keys: dict[str, str] | None = None) -> None:
        if on and self.forging and keys is not None and keys != self.keys:
            self.keys = keys
            self.event("credentials_reloaded", reason=why, keys=keys)
        if on != self.forging:
            self.forging = on
            self.keys = keys if on else None
            extra = {"keys": keys} if on else {}
            self.event("forging_started" if on else "forging_stopped", reason=why, **extra)
            print(f"{self.name}: Performing block forging reconfiguration: "
                  f"{'Enabling' if on else 'Disabling'} ({why})", flush=True)  # fmt: skip

    def read_credentials(self) -> str:
        """'ok', 'missing' or 'error'."""
        if any(not f.exists() for f in self.files):
            return "missing"
        try:
            for f in self.files:
                parse_envelope(f)
        except (OSError, ValueError):
            return "error"
        return "ok"

    def on_sighup(self, _signum: int, _frame: FrameType | None) -> None:
        if not self.initialised:
            self.event("sighup_ignored")
            return
        state = self.read_credentials()
        keys = self.key_digests() if state == "ok" else None
        if state == "ok" and keys is not None:
            self.set_forging(True, "sighup", keys)
        elif state == "missing":
            self.set_forging(False, "sighup")
        else:
            self.event("reconfig_kept", forging=self.forging)

    def on_term(self, _signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        set_process_name(self.name)
        missing = [str(f) for f in self.files if not f.exists()]
        if missing:
            print(f"{self.name}: cannot start: credential file(s) missing: {', '.join(missing)}",
                  file=sys.stderr, flush=True)  # fmt: skip
            self.event("refused_to_start", missing=missing)
            return 1
        if self.args.pid_file:
            Path(self.args.pid_file).write_text(f"{os.getpid()}\n")
        signal.signal(signal.SIGHUP, self.on_sighup)
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_term)
        self.event("started", non_producing=self.args.start_as_non_producing_node)
        serve_metrics(self)
        if not self.args.start_as_non_producing_node and self.read_credentials() == "ok":
            self.set_forging(True, "boot", self.key_digests())
        deadline = now() + self.args.startup_delay
        while not self.stopping and now() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - now())))
        if not self.stopping:
            self.listen()
        try:
            while not self.stopping:
                assert self.sock is not None
                listening = [s for s in (self.sock, self.peer) if s is not None]
                ready, _, _ = select.select(listening, [], [], 0.2)
                for sock in ready:
                    with contextlib.suppress(OSError):
                        conn, _ = sock.accept()
                        conn.close()
        finally:
            self.set_forging(False, "exit")
            self.event("exited")
            if self.peer is not None:
                self.peer.close()
            if self.sock is not None:
                self.sock.close()
                with contextlib.suppress(OSError):
                    Path(self.args.socket_path).unlink()
        return 0

    def listen(self) -> None:
        path = Path(self.args.socket_path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a stale socket from a crashed instance
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        if self.args.open_peer_port and self.args.port:
            self.peer = socket.create_server(
                (self.args.host_addr or "0.0.0.0", int(self.args.port)), backlog=16
            )
        self.initialised = True
        self.event("socket_up")


def run_flags_problem(args: argparse.Namespace) -> str | None:
    """What the real node would refuse to start with among the ``run`` flags, or None."""
    for flag, path in (("--config", args.config), ("--topology", args.topology)):
        if path is not None and not Path(path).is_file():
            return f"{flag} {path}: no such file"
    if args.database_path is not None:
        try:
            Path(args.database_path).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"--database-path {args.database_path}: {exc.strerror}"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:  # the real node's subcommand: `cardano-node run --config ...`
        argv = argv[1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--name", default="cardano-node")
    p.add_argument("--socket-path", required=True)
    p.add_argument("--event-log", default=os.environ.get("STANDIN_EVENT_LOG") or None)
    p.add_argument("--shelley-kes-key", required=True)
    p.add_argument("--shelley-vrf-key", required=True)
    p.add_argument("--shelley-operational-certificate", required=True)
    p.add_argument("--start-as-non-producing-node", "--non-producing-node", action="store_true")
    p.add_argument("--startup-delay", type=float, default=0.5)
    p.add_argument("--pid-file")
    p.add_argument("--open-peer-port", action="store_true", help="listen on --port once up")
    # The rest of the real node's `run` flags that the chart passes (see the module docstring).
    for flag in ("--config", "--topology", "--database-path", "--host-addr", "--port"):
        p.add_argument(flag)
    add_metrics_args(p)
    args = p.parse_args(argv)
    if problem := run_flags_problem(args):
        print(f"{args.name}: cannot start: {problem}", file=sys.stderr, flush=True)
        return 1
    return StandIn(args).run()


if __name__ == "__main__":
    sys.exit(main())
