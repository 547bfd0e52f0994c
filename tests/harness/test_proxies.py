"""The fault-injecting proxies, against small loopback servers (no control plane needed)."""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.apiproxy import ApiProxy
from tests.harness.controlplane import make_pki
from tests.harness.tcpproxy import TcpProxy


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pki")
    make_pki(path)
    return path


class Upstream:
    """An HTTPS server standing in for the API server: it records each request and answers
    with what it saw (method, path, body, Authorization, whether a client certificate came)."""

    def __init__(self, pki: Path) -> None:
        self.seen: list[dict[str, Any]] = []
        self.more = threading.Event()
        outer = self
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki / "apiserver.crt", pki / "apiserver.key")
        context.load_verify_locations(pki / "ca.crt")
        context.verify_mode = ssl.CERT_OPTIONAL

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                if "watch=true" in self.path:
                    self._watch()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                seen = {
                    "method": self.command,
                    "path": self.path,
                    "body": self.rfile.read(length).decode() if length else "",
                    "auth": self.headers.get("Authorization"),
                    "cert": bool(self.connection.getpeercert()),  # type: ignore[attr-defined]
                }
                outer.seen.append(seen)
                data = json.dumps(seen).encode()
                self.send_response(404 if self.path.endswith("/missing") else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _watch(self) -> None:
                """A watch's chunked stream: one event, the two others once the test sets
                ``more`` (a proxy that waited for the whole answer passes nothing before)."""
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(3):
                    event = json.dumps({"type": "MODIFIED", "n": i}).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                    outer.more.wait(10)
                self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True

            do_GET = do_PUT = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def api(pki: Path) -> Iterator[tuple[Upstream, ApiProxy]]:
    upstream = Upstream(pki)
    proxy = ApiProxy(upstream.port, pki).start()
    try:
        yield upstream, proxy
    finally:
        for conn in OPEN:
            conn.close()
        OPEN.clear()
        proxy.stop()
        upstream.stop()


OPEN: list[http.client.HTTPSConnection] = []


def connect(
    pki: Path, port: int, *, cert: bool, timeout: float = 5.0
) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert:
        context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    OPEN.append(conn)  # closed by the fixture
    return conn


def call(conn: http.client.HTTPSConnection, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    conn.request(method, path, **kw)
    answer = conn.getresponse()
    return answer.status, json.loads(answer.read())


def test_api_proxy_forwards_requests_with_the_client_s_kind_of_credentials(
    pki: Path, api: tuple[Upstream, ApiProxy]
) -> None:
    _upstream, proxy = api
    with_cert = connect(pki, proxy.port, cert=True)
    status, seen = call(with_cert, "PUT", "/apis/x/leases/a?dryRun=All", body=b'{"a": 1}',
                        headers={"Content-Type": "application/json"})  # fmt: skip
    assert status == 200
    assert seen == {"method": "PUT", "path": "/apis/x/leases/a?dryRun=All", "body": '{"a": 1}',
                    "auth": None, "cert": True}  # fmt: skip
    assert call(with_cert, "GET", "/missing")[0] == 404  # same connection, status passed on
    token = connect(pki, proxy.port, cert=False)
    status, seen = call(token, "GET", "/api", headers={"Authorization": "Bearer sa-token"})
    assert (seen["auth"], seen["cert"]) == ("Bearer sa-token", False)  # its own RBAC upstream
    assert [e.outcome for e in proxy.log] == ["200", "404", "200"]


def test_api_proxy_applies_a_request_and_drops_its_answer(
    pki: Path, api: tuple[Upstream, ApiProxy]
) -> None:
    upstream, proxy = api
    proxy.drop_answers(method="PUT", path=r"/leases/a$", count=1)
    conn = connect(pki, proxy.port, cert=True, timeout=0.5)
    assert call(conn, "GET", "/apis/x/leases/a")[0] == 200  # another method: answered
    with pytest.raises((TimeoutError, socket.timeout)):
        call(conn, "PUT", "/apis/x/leases/a", body=b"{}")
    conn.close()
    assert [s["method"] for s in upstream.seen] == ["GET", "PUT"]  # the PUT was applied
    assert [e.method for e in proxy.dropped()] == ["PUT"]
    conn = connect(pki, proxy.port, cert=True, timeout=0.5)
    assert call(conn, "PUT", "/apis/x/leases/a", body=b"{}")[0] == 200  # count=1: next answered


def test_api_proxy_delays_answers(pki: Path, api: tuple[Upstream, ApiProxy]) -> None:
    _upstream, proxy = api
    proxy.delay(2.0, path=r"/slow$")
    conn = connect(pki, proxy.port, cert=True, timeout=0.5)
    assert call(conn, "GET", "/fast")[0] == 200
    with pytest.raises((TimeoutError, socket.timeout)):
        call(conn, "GET", "/slow")
    proxy.clear()
    conn = connect(pki, proxy.port, cert=True, timeout=0.5)
    assert call(conn, "GET", "/slow")[0] == 200


def test_api_proxy_streams_a_watch_as_it_comes(pki: Path, api: tuple[Upstream, ApiProxy]) -> None:
    upstream, proxy = api
    proxy.delay(5.0)  # faults leave watches alone
    conn = connect(pki, proxy.port, cert=True, timeout=2.0)
    conn.request("GET", "/apis/x/leases?watch=true")
    answer = conn.getresponse()  # times out (2 s) if the proxy waits for the whole answer
    assert answer.status == 200
    assert json.loads(answer.readline()) == {"type": "MODIFIED", "n": 0}
    upstream.more.set()
    assert [json.loads(line)["n"] for line in answer.read().splitlines()] == [1, 2]
    assert [(e.method, e.outcome) for e in proxy.log] == [("GET", "watch")]
    proxy.clear()
    assert call(connect(pki, proxy.port, cert=True), "GET", "/after")[0] == 200


class Echo:
    """A TCP server that echoes what it receives."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def stop(self) -> None:
        self.listener.close()


def test_tcp_proxy_delays_each_answer() -> None:
    echo = Echo()
    proxy = TcpProxy(echo.port).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5) as conn:
            conn.sendall(b"ping")
            assert conn.recv(4) == b"ping"
            proxy.delay_answers(2.0)
            conn.sendall(b"pong")
            with pytest.raises((TimeoutError, socket.timeout)):
                conn.recv(4)
            proxy.delay_answers(0)
    finally:
        proxy.stop()
        echo.stop()
