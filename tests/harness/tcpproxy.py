"""A loopback TCP proxy a test can break: a network partition between one region and the API.

``TcpProxy(upstream_port).start()`` listens on a free loopback port and forwards every connection
to ``127.0.0.1:upstream_port`` byte for byte (TLS passes through untouched, so a kubeconfig only
needs ``server=proxy.url``). :meth:`TcpProxy.partition` cuts every open connection and then either
refuses new ones (``mode="refuse"``: connection reset at once) or accepts and never answers them
(``mode="blackhole"``: the client waits for its own timeout, the nastier case).
:meth:`TcpProxy.heal` forwards again. :meth:`TcpProxy.delay_answers` adds latency: the first bytes
upstream sends after each burst from the client (an answer, a TLS handshake flight) are held that
long, so every round trip through the proxy takes at least that much longer (TLS is not opened;
for faults aimed at one request, such as a write applied whose answer is lost, see
:mod:`tests.harness.apiproxy`). Every thread is bounded by the proxy's stop Event.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable
from typing import Literal

Mode = Literal["refuse", "blackhole"]
POLL_S = 0.05
BUFFER = 65536
LINGER_RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"
"""``SO_LINGER`` on, 0 s: closing the socket resets the connection."""


def loopback_listener(backlog: int) -> tuple[socket.socket, int]:
    """A TCP socket listening on a free loopback port, and that port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    return listener, int(listener.getsockname()[1])


def close_quietly(sock: socket.socket) -> None:
    """Shut ``sock`` down both ways and close it; one already gone is fine."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class ProxyThreads:
    """A proxy's threads: daemons, the finished ones forgotten as new ones start."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def spawn(self, target: Callable[..., object], *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
        t.start()

    def join(self, timeout: float = 2.0) -> None:
        """Wait for each thread at most ``timeout`` seconds (they end with their proxy)."""
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout)


class TcpProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener, self.port = loopback_listener(64)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._mode: Mode | None = None
        self._open: set[socket.socket] = set()
        self._threads = ProxyThreads()
        self._delay = 0.0
        self.connections = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def partitioned(self) -> bool:
        with self._lock:
            return self._mode is not None

    def start(self) -> TcpProxy:
        self._threads.spawn(self._accept_loop)
        return self

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._open.update(socks)

    def _close(self, *socks: socket.socket) -> None:
        for s in socks:
            close_quietly(s)
            with self._lock:
                self._open.discard(s)

    def _accept_loop(self) -> None:
        self._listener.settimeout(POLL_S)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                mode = self._mode
            if mode == "refuse":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
                self._close(conn)
                continue
            self._track(conn)
            if mode == "blackhole":
                continue  # held open, never answered; closed by heal() or stop()
            try:
                up = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                self._close(conn)
                continue
            self._track(up)
            self.connections += 1
            self._threads.spawn(self._pump, conn, up)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        """``a`` is the client's connection, ``b`` upstream's."""
        peers = {a: b, b: a}
        asked = False  # the client sent something upstream has not answered yet
        try:
            while not self._stop.is_set():
                try:
                    ready, _, _ = select.select([a, b], [], [], POLL_S)
                except (OSError, ValueError):
                    return
                for src in ready:
                    data = src.recv(BUFFER)
                    if not data:
                        return
                    if src is a:
                        asked = True
                    elif asked:
                        asked = False
                        with self._lock:
                            delay = self._delay
                        if delay > 0 and self._stop.wait(delay):
                            return
                    peers[src].sendall(data)
        except OSError:
            return
        finally:
            self._close(a, b)

    def partition(self, mode: Mode = "blackhole") -> None:
        """Cut every open connection; new ones are refused or black-holed until :meth:`heal`."""
        with self._lock:
            self._mode = mode
            victims = list(self._open)
        self._close(*victims)

    def delay_answers(self, seconds: float) -> None:
        """Hold upstream's first bytes after each client burst for ``seconds`` (0: no delay);
        applies to open connections too."""
        with self._lock:
            self._delay = max(0.0, seconds)

    def heal(self) -> None:
        with self._lock:
            self._mode = None
            victims = list(self._open)  # black-holed connections: let the clients reconnect
        self._close(*victims)

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            victims = list(self._open)
        self._close(*victims)
        self._threads.join()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
