"""The network between simulated regions on loopback: every link can be cut or made slow.

Each region's processes listen on loopback ports of their own; whatever crosses from one region to
another goes through a :class:`LinkProxy` of a :class:`RegionNet`, which knows both ends of every
connection it carries:

* the **destination** is the proxy's own (one proxy in front of each listening port that other
  regions reach: an etcd member's peer port, its client port for one client region);
* the **source** is fixed for a proxy only one region dials (a region's managers reaching another
  region's etcd member), or found per connection for a proxy that several regions dial (an etcd
  member's peer port, which every other member dials at the one URL the cluster advertises): the
  proxy looks the connecting socket up in ``/proc/net/tcp`` and finds which registered process
  (:meth:`RegionNet.register`) holds it, so member A's and member C's connections to member B
  are told apart though they reach the same port.

:meth:`RegionNet.partition` cuts every link of a region (open connections closed, new ones
refused or black-holed, as :class:`~tests.harness.tcpproxy.TcpProxy` does), :meth:`RegionNet.heal`
restores them, :meth:`RegionNet.set_delay` adds a one-way latency to a region's links (every chunk
is held that long in each direction, in order, also on long-lived streams such as etcd's Raft
streams, so a round trip costs twice the delay). Connections from processes no region registered
(the test's own clients) are never cut or slowed. Every thread is bounded by the net's stop Event.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import socket
import threading
import time
from pathlib import Path

from tests.harness.tcpproxy import (
    BUFFER,
    LINGER_RST,
    POLL_S,
    Mode,
    ProxyThreads,
    close_quietly,
    loopback_listener,
)


def _hex_addr(addr: tuple[str, int]) -> str:
    ip, port = addr
    return socket.inet_aton(ip)[::-1].hex().upper() + f":{port:04X}"


def socket_inode(local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The inode of the IPv4 TCP socket bound to ``local`` and connected to ``remote``."""
    want_local, want_remote = _hex_addr(local), _hex_addr(remote)
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[1] == want_local and fields[2] == want_remote:
                return int(fields[9])
    return None


def pid_holds(pid: int, inode: int) -> bool:
    target = f"socket:[{inode}]"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
    return False


class _Conn:
    def __init__(self, src: str | None, dst: str, *socks: socket.socket) -> None:
        self.src, self.dst, self.socks = src, dst, socks


class RegionNet:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._cut: dict[frozenset[str], Mode] = {}
        self._delay: dict[frozenset[str], float] = {}
        self._pids: dict[int, str] = {}
        self._proxies: list[LinkProxy] = []
        self.unidentified = 0
        """Connections to a shared port whose source no registered process held."""

    # ---- who is where -------------------------------------------------------------------------
    def register(self, pid: int, region: str) -> None:
        with self._lock:
            self._pids[pid] = region

    def unregister(self, pid: int) -> None:
        with self._lock:
            self._pids.pop(pid, None)

    def identify(self, conn: socket.socket) -> str | None:
        """The region of the registered process that opened ``conn`` (None: nobody's)."""
        try:
            peer, me = conn.getpeername(), conn.getsockname()
        except OSError:
            return None
        for _ in range(3):
            inode = socket_inode(peer, me)
            if inode is not None:
                with self._lock:
                    pids = dict(self._pids)
                for pid, region in pids.items():
                    if pid_holds(pid, inode):
                        return region
            time.sleep(0.01)
        with self._lock:
            self.unidentified += 1
        return None

    # ---- link state ---------------------------------------------------------------------------
    def state(self, src: str | None, dst: str) -> tuple[Mode | None, float]:
        if src is None or src == dst:
            return None, 0.0
        pair = frozenset((src, dst))
        with self._lock:
            return self._cut.get(pair), self._delay.get(pair, 0.0)

    def delay(self, src: str | None, dst: str) -> float:
        return self.state(src, dst)[1]

    def _others(self, region: str) -> list[str]:
        with self._lock:
            regions = {r for p in self._proxies for r in (p.dst, p.src) if r is not None}
            regions.update(self._pids.values())
        return sorted(regions - {region})

    def cut(self, a: str, b: str, mode: Mode = "blackhole") -> None:
        """Cut the link between ``a`` and ``b`` (open connections closed)."""
        with self._lock:
            self._cut[frozenset((a, b))] = mode
        self._close_crossing({frozenset((a, b))})

    def partition(self, region: str, mode: Mode = "blackhole") -> None:
        """Cut every link of ``region``."""
        pairs = {frozenset((region, other)) for other in self._others(region)}
        with self._lock:
            for pair in pairs:
                self._cut[pair] = mode
        self._close_crossing(pairs)

    def heal(self, region: str | None = None) -> None:
        """Restore ``region``'s links (every link when None); black-holed connections are
        closed so that the clients reconnect."""
        with self._lock:
            pairs = {p for p in self._cut if region is None or region in p}
            for pair in pairs:
                del self._cut[pair]
        self._close_crossing(pairs)

    def set_delay(self, region: str, seconds: float, *, to: str | None = None) -> None:
        """One-way latency on ``region``'s links (only the one to ``to`` when given)."""
        others = [to] if to is not None else self._others(region)
        with self._lock:
            for other in others:
                self._delay[frozenset((region, other))] = max(0.0, seconds)

    def set_all_delays(self, seconds: float) -> None:
        """The same one-way latency between every two regions."""
        regions = set(self._others(""))
        with self._lock:
            for a in regions:
                for b in regions - {a}:
                    self._delay[frozenset((a, b))] = max(0.0, seconds)

    def _close_crossing(self, pairs: set[frozenset[str]]) -> None:
        with self._lock:
            proxies = list(self._proxies)
        for proxy in proxies:
            proxy.close_where(lambda c: c.src is not None and frozenset((c.src, c.dst)) in pairs)

    # ---- proxies ------------------------------------------------------------------------------
    def proxy(self, upstream_port: int, dst: str, *, src: str | None = None) -> LinkProxy:
        """A started proxy in front of ``127.0.0.1:upstream_port`` in region ``dst``; ``src``
        fixes the source region (else found per connection)."""
        proxy = LinkProxy(self, upstream_port, dst, src)
        with self._lock:
            self._proxies.append(proxy)
        proxy.start()
        return proxy

    @property
    def stopping(self) -> threading.Event:
        return self._stop

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            proxies = list(self._proxies)
        for proxy in proxies:
            proxy.stop()


class LinkProxy:
    def __init__(self, net: RegionNet, upstream_port: int, dst: str, src: str | None) -> None:
        self.net, self.dst, self.src = net, dst, src
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener, self.port = loopback_listener(128)
        self._lock = threading.Lock()
        self._conns: list[_Conn] = []
        self._threads = ProxyThreads()
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._threads.spawn(self._accept_loop)

    def _track(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.append(conn)

    def _close(self, conn: _Conn) -> None:
        for s in conn.socks:
            close_quietly(s)
        with self._lock, contextlib.suppress(ValueError):
            self._conns.remove(conn)

    def close_where(self, predicate: object) -> None:
        with self._lock:
            victims = [c for c in self._conns if predicate(c)]  # type: ignore[operator]
        for conn in victims:
            self._close(conn)

    def _accept_loop(self) -> None:
        self._listener.settimeout(POLL_S)
        stop = self.net.stopping
        while not stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._threads.spawn(self._serve, sock)

    def _serve(self, sock: socket.socket) -> None:
        src = self.src if self.src is not None else self.net.identify(sock)
        mode, _ = self.net.state(src, self.dst)
        if mode == "refuse":
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            self._close(_Conn(src, self.dst, sock))
            return
        if mode == "blackhole":
            self._track(_Conn(src, self.dst, sock))  # held, never answered; closed on heal
            return
        try:
            up = socket.create_connection(self.upstream, timeout=2)
        except OSError:
            self._close(_Conn(src, self.dst, sock))
            return
        conn = _Conn(src, self.dst, sock, up)
        self._track(conn)
        self.connections += 1
        self._pump(conn, sock, up)

    def _pump(self, conn: _Conn, a: socket.socket, b: socket.socket) -> None:
        """Forward both ways, each chunk held for the link's one-way delay (read at arrival)."""
        peers = {a: b, b: a}
        queues: dict[socket.socket, collections.deque[tuple[float, bytes]]] = {
            a: collections.deque(),
            b: collections.deque(),
        }  # keyed by the socket the data goes *to*
        last_due = {a: 0.0, b: 0.0}
        open_src = {a, b}
        stop = self.net.stopping
        try:
            while not stop.is_set():
                now = time.monotonic()
                for dest, queue in queues.items():
                    while queue and queue[0][0] <= now:
                        dest.sendall(queue.popleft()[1])
                if not open_src and not any(queues.values()):
                    return
                due = [q[0][0] for q in queues.values() if q]
                wait = min([POLL_S, *(max(0.0, d - now) for d in due)])
                try:
                    ready, _, _ = select.select(list(open_src), [], [], wait)
                except (OSError, ValueError):
                    return
                for src in ready:
                    data = src.recv(BUFFER)
                    if not data:
                        open_src.clear()  # one side closed: flush what is queued, then close
                        break
                    dest = peers[src]
                    delay = self.net.delay(conn.src, conn.dst)
                    at = max(time.monotonic() + delay, last_due[dest])
                    last_due[dest] = at
                    if delay <= 0 and not queues[dest]:
                        dest.sendall(data)
                    else:
                        queues[dest].append((at, data))
        except OSError:
            return
        finally:
            self._close(conn)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            victims = list(self._conns)
        for conn in victims:
            self._close(conn)
        self._threads.join()
