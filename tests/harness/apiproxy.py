"""A loopback proxy in front of kube-apiserver that sees the requests it forwards.

:class:`~tests.harness.tcpproxy.TcpProxy` forwards bytes and cannot tell one request from another
inside TLS. This proxy terminates TLS with the API server's own serving certificate (valid for
127.0.0.1 and signed by the test CA, so a kubeconfig only needs ``server=proxy.url``) and
forwards each HTTP/1.1 request to the API server over a TLS connection of its own: with the
admin client certificate when the client presented a client certificate, with none otherwise,
so that a bearer token (a ServiceAccount's) passes through in its ``Authorization`` header and
keeps its own RBAC. An answer is read whole before it is passed on, except a watch's (a request
with ``watch=true`` or ``watch=1``): its answer is streamed through byte for byte as it comes, on
a connection of its own that ends with the watch. The faults below leave watches alone.

Faults, each aimed at the requests a method and a path pattern select:

* :meth:`ApiProxy.drop_answers` forwards the request (the API server applies it) and never
  answers: the client's connection stays open without a byte until the client gives up and
  closes it (its own read timeout), as when an answer is lost on the way back.
* :meth:`ApiProxy.delay` answers ``seconds`` later.

:attr:`ApiProxy.log` records every request (monotonic time, method, path, status or
``"dropped"``). Every thread is bounded by the proxy's stop Event.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import re
import select
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "host",
}
POLL_S = 0.05
HOLD_S = 60.0
"""At most this long a dropped answer's connection is held open waiting for the client."""
UPSTREAM_TIMEOUT_S = 30.0


@dataclass
class _Fault:
    kind: str
    """``drop`` or ``delay``."""
    method: str | None
    path: re.Pattern[str] | None
    remaining: int | None
    """Requests it still applies to; None: until cleared."""
    seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path is None or self.path.search(path.split("?", 1)[0]) is not None


@dataclass(frozen=True)
class Logged:
    t: float
    method: str
    path: str
    outcome: str
    """The HTTP status the API server answered, or ``dropped``."""


class ApiProxy:
    def __init__(self, upstream_port: int, pki: Path, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.pki = pki
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self.log: list[Logged] = []

        serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        serving.load_cert_chain(pki / "apiserver.crt", pki / "apiserver.key")
        serving.load_verify_locations(pki / "ca.crt")
        serving.verify_mode = ssl.CERT_OPTIONAL
        self._with_cert = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self._with_cert.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        self._without_cert = ssl.create_default_context(cafile=str(pki / "ca.crt"))

        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            upstream_conn: http.client.HTTPSConnection | None = None

            def setup(self) -> None:
                self.request.settimeout(UPSTREAM_TIMEOUT_S)
                self.request.do_handshake()
                super().setup()

            def finish(self) -> None:
                with contextlib.suppress(OSError):
                    super().finish()
                if self.upstream_conn is not None:
                    self.upstream_conn.close()

            def _forward(self) -> None:
                proxy._forward(self)

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, object]:
                conn, addr = self.socket.accept()
                return serving.wrap_socket(
                    conn, server_side=True, do_handshake_on_connect=False
                ), addr

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that went away (timeouts are the point of this proxy)

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> ApiProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> ApiProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- faults --------------------------------------------------------------------------------
    def drop_answers(
        self, *, method: str | None = None, path: str | None = None, count: int | None = 1
    ) -> None:
        """Forward the next ``count`` matching requests (None: every one, until :meth:`clear`)
        and never answer them. ``path`` is a regular expression searched in the URL path."""
        self._add(_Fault("drop", method, re.compile(path) if path else None, count))

    def delay(
        self,
        seconds: float,
        *,
        method: str | None = None,
        path: str | None = None,
        count: int | None = None,
    ) -> None:
        """Answer matching requests ``seconds`` later (None: every one, until :meth:`clear`)."""
        self._add(_Fault("delay", method, re.compile(path) if path else None, count, seconds))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def dropped(self) -> list[Logged]:
        with self._lock:
            return [e for e in self.log if e.outcome == "dropped"]

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    # ---- forwarding ----------------------------------------------------------------------------
    def _forward(self, h: http.server.BaseHTTPRequestHandler) -> None:
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            h.send_error(501, "chunked request bodies are not supported by the test proxy")
            return
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        cert = h.request.getpeercert()  # type: ignore[attr-defined]
        context = self._with_cert if cert else self._without_cert
        if _is_watch(h.path):
            self._stream(h, body, context)
            return
        if h.upstream_conn is None:  # type: ignore[attr-defined]
            h.upstream_conn = http.client.HTTPSConnection(  # type: ignore[attr-defined]
                *self.upstream, timeout=UPSTREAM_TIMEOUT_S, context=context
            )
        up: http.client.HTTPSConnection = h.upstream_conn  # type: ignore[attr-defined]
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            up.request(h.command, h.path, body=body, headers=headers)
            answer = up.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException) as exc:
            up.close()
            h.upstream_conn = None  # type: ignore[attr-defined]
            h.send_error(502, f"upstream: {type(exc).__name__}")
            return
        fault = self._take(h.command, h.path)
        if fault is not None and fault.kind == "drop":
            self._record(h.command, h.path, "dropped")
            self._hold(h)
            return
        if fault is not None and fault.kind == "delay" and self._stop.wait(fault.seconds):
            return
        self._record(h.command, h.path, str(answer.status))
        h.send_response_only(answer.status, answer.reason)
        for key, value in answer.getheaders():
            if key.lower() not in HOP_BY_HOP:
                h.send_header(key, value)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)
        h.wfile.flush()

    def _stream(
        self, h: http.server.BaseHTTPRequestHandler, body: bytes | None, context: ssl.SSLContext
    ) -> None:
        """A watch: send the request upstream on a connection of its own and pass every byte
        of the answer on as it comes (status line, headers, chunks), until either side closes
        it or the proxy stops."""
        h.close_connection = True
        host, port = self.upstream
        lines = [f"{h.command} {h.path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
        try:
            raw = socket.create_connection(self.upstream, timeout=UPSTREAM_TIMEOUT_S)
            up = context.wrap_socket(raw, server_hostname=host)
            up.sendall(request)
        except OSError as exc:
            h.send_error(502, f"upstream: {type(exc).__name__}")
            return
        self._record(h.command, h.path, "watch")
        client: socket.socket = h.connection
        try:
            up.settimeout(POLL_S)
            while not self._stop.is_set():
                try:
                    data = up.recv(65536)
                except TimeoutError:
                    if _closed(client):
                        return
                    continue
                if not data:
                    return
                client.sendall(data)
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                up.close()

    def _record(self, method: str, path: str, outcome: str) -> None:
        with self._lock:
            self.log.append(Logged(time.monotonic(), method, path, outcome))

    def _hold(self, h: http.server.BaseHTTPRequestHandler) -> None:
        """Keep the connection open, silent, until the client closes it (or a bound passes)."""
        h.close_connection = True
        conn: socket.socket = h.connection
        deadline = time.monotonic() + HOLD_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                readable, _, _ = select.select([conn], [], [], 0.05)
                if readable and not conn.recv(1):
                    return  # the client closed it
            except (OSError, ValueError):
                return


def _is_watch(path: str) -> bool:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    return any(v.lower() in ("true", "1") for v in query.get("watch", []))


def _closed(conn: socket.socket) -> bool:
    """The client closed its connection (it sends nothing else on a watch's)."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        conn.setblocking(False)
        try:
            return conn.recv(1024) == b""
        finally:
            conn.setblocking(True)
    except ssl.SSLWantReadError:
        return False
    except (OSError, ValueError):
        return True
