"""An etcd cluster with one member per simulated region, its traffic between regions breakable.

Each member listens on loopback ports of its own. Its **peer** traffic from the other members
goes through a :class:`~tests.harness.regionnet.LinkProxy` in front of its peer port (the URL the
cluster advertises for it; the proxy tells the dialling members apart), and a region's managers
reach **other** regions' members through a proxy per (client region, member), their own member
directly. So :meth:`RegionNet.partition` of a region cuts it off from the others as a whole
(Raft messages both ways and its managers' calls to other members), while its managers still
reach their own member, which is then in the minority: as in a real partition.

Members are real ``etcd`` processes (``make tools``) with ``--unsafe-no-fsync`` (throwaway
state); :meth:`EtcdQuorum.kill` is SIGKILL, :meth:`EtcdQuorum.start_member` restarts a member on
its data directory (it rejoins), :meth:`EtcdQuorum.move_leader` is ``etcdctl move-leader``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.harness.controlplane import free_port, tool
from tests.harness.regionnet import LinkProxy, RegionNet

START_WAIT_S = 60.0


@dataclass
class Member:
    region: str
    client_port: int
    peer_port: int
    ingress: LinkProxy
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        """What the cluster advertises: the proxy in front of the peer port."""
        return f"http://127.0.0.1:{self.ingress.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class EtcdQuorum:
    def __init__(
        self,
        root: Path,
        regions: Sequence[str],
        net: RegionNet,
        *,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
    ) -> None:
        self.root = root
        self.net = net
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.token = f"q{uuid.uuid4().hex[:8]}"
        self.members: dict[str, Member] = {}
        for region in regions:
            client_port, peer_port = free_port(), free_port()
            self.members[region] = Member(
                region,
                client_port,
                peer_port,
                net.proxy(peer_port, region),
                root / f"etcd-{region}",
                root / f"etcd-{region}.log",
            )
        self._client_proxies: dict[tuple[str, str], LinkProxy] = {}

    # ---- lifecycle ----------------------------------------------------------------------------
    def _args(self, m: Member) -> list[str]:
        cluster = ",".join(f"{x.region}={x.peer_url}" for x in self.members.values())
        return [
            f"--name={m.region}",
            f"--data-dir={m.data_dir}",
            f"--listen-client-urls={m.client_url}",
            f"--advertise-client-urls={m.client_url}",
            f"--listen-peer-urls=http://127.0.0.1:{m.peer_port}",
            f"--initial-advertise-peer-urls={m.peer_url}",
            f"--initial-cluster={cluster}",
            f"--initial-cluster-token={self.token}",
            "--initial-cluster-state=new",
            f"--heartbeat-interval={self.heartbeat_ms}",
            f"--election-timeout={self.election_ms}",
            "--log-level=warn",
            # Test bed only: state is thrown away after each run, so skip fsync for speed.
            "--unsafe-no-fsync",
        ]

    def start_member(self, region: str, *, wait: bool = True) -> None:
        m = self.members[region]
        if m.running:
            return
        with m.log.open("ab") as logf:
            m.proc = subprocess.Popen(
                [tool("etcd"), *self._args(m)],
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.net.register(m.proc.pid, region)
        if wait:
            self.wait_healthy(region)

    def start(self) -> None:
        for region in self.members:
            self.start_member(region, wait=False)
        for region in self.members:
            self.wait_healthy(region)

    def healthy(self, region: str, timeout: float = 1.0) -> bool:
        """The member answers ``/health`` true (it has a leader and serves linearizable reads)."""
        url = f"{self.members[region].client_url}/health"
        with (
            contextlib.suppress(OSError, urllib.error.URLError, ValueError),
            urllib.request.urlopen(url, timeout=timeout) as resp,
        ):
            return bool(json.load(resp).get("health") == "true")
        return False

    def wait_healthy(self, region: str, timeout: float = START_WAIT_S) -> None:
        m = self.members[region]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not m.running:
                raise AssertionError(f"etcd {region} exited; log:\n{self.log_tail(region)}")
            if self.healthy(region):
                return
            time.sleep(0.2)
        raise AssertionError(
            f"etcd {region} not healthy within {timeout:g} s; log:\n{self.log_tail(region)}"
        )

    def kill(self, region: str) -> None:
        """SIGKILL the member (its region lost)."""
        m = self.members[region]
        if m.proc is not None and m.proc.poll() is None:
            os.kill(m.proc.pid, signal.SIGKILL)
            m.proc.wait(10)
        if m.proc is not None:
            self.net.unregister(m.proc.pid)

    def stop_member(self, region: str) -> None:
        """SIGTERM (a clean restart's first half)."""
        m = self.members[region]
        if m.proc is not None and m.proc.poll() is None:
            m.proc.terminate()
            try:
                m.proc.wait(15)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait(10)
        if m.proc is not None:
            self.net.unregister(m.proc.pid)

    def stop(self) -> None:
        for region in self.members:
            self.stop_member(region)
        for proxy in self._client_proxies.values():
            proxy.stop()
        for m in self.members.values():
            m.ingress.stop()

    def log_tail(self, region: str, lines: int = 20) -> str:
        try:
            text = self.members[region].log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    # ---- clients ------------------------------------------------------------------------------
    def endpoints(self, region: str, order: Sequence[str] | None = None) -> list[str]:
        """Client URLs for ``region``'s managers: its own member directly, the others through
        a proxy of the (region, member) link; ``order`` lists member regions (default: own
        first, then the others in order)."""
        order = (
            list(order)
            if order is not None
            else [
                region,
                *(r for r in self.members if r != region),
            ]
        )
        urls = []
        for member in order:
            m = self.members[member]
            if member == region:
                urls.append(m.client_url)
                continue
            key = (region, member)
            if key not in self._client_proxies:
                self._client_proxies[key] = self.net.proxy(m.client_port, member, src=region)
            urls.append(self._client_proxies[key].url)
        return urls

    def status(self, region: str, timeout: float = 1.0) -> dict[str, object] | None:
        req = urllib.request.Request(
            f"{self.members[region].client_url}/v3/maintenance/status",
            data=b"{}",
            headers={"Content-Type": "application/json"},
        )
        with (
            contextlib.suppress(OSError, urllib.error.URLError, ValueError),
            urllib.request.urlopen(req, timeout=timeout) as resp,
        ):
            answer = json.load(resp)
            return answer if isinstance(answer, dict) else None
        return None

    def leader(self) -> str | None:
        """The region whose member leads (as the running members report it)."""
        ids: dict[str, str] = {}
        leader_id = None
        for region, m in self.members.items():
            if not m.running:
                continue
            st = self.status(region)
            if st is None:
                continue
            ids[str((st.get("header") or {}).get("member_id"))] = region  # type: ignore[union-attr]
            leader_id = leader_id or str(st.get("leader"))
        return ids.get(leader_id) if leader_id else None

    def move_leader(self, to: str) -> None:
        """``etcdctl move-leader`` to ``to``'s member (asked of the current leader)."""
        current = self.leader()
        if current is None or current == to:
            return
        st = self.status(to)
        if st is None:
            raise AssertionError(f"etcd {to} does not answer")
        member_id = int(str((st.get("header") or {}).get("member_id")))  # type: ignore[union-attr]
        subprocess.run(
            [
                tool("etcdctl"),
                f"--endpoints={self.members[current].client_url}",
                "move-leader",
                f"{member_id:x}",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
