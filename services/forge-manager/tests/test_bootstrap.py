"""forge_manager.bootstrap: genesis files fetched from a loopback HTTP server and verified.

The files are preprod's as published, with the hashes of preprod's published configuration, so
the Byron rule (canonical JSON) and the Blake2b-256 of the others are checked against real data.
A corrupted file, an unreachable server, a missing file and a file with no hash are each refused
with one line and exit status 1, and nothing unverified is left where the node would read it.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from forge_manager.bootstrap import (
    BootstrapError,
    byron_genesis_hash,
    http_fetch,
    run,
    wanted_files,
)

FIXTURES = Path(__file__).parent / "fixtures" / "genesis-preprod"
# The hashes of preprod's published node configuration (iohk-nix cardano-lib/preprod-config.nix).
PREPROD: dict[str, Any] = {
    "ByronGenesisFile": "byron-genesis.json",
    "ByronGenesisHash": "d4b8de7a11d929a323373cbab6c1a9bdc931beffff11db111cf9d57356ee1937",
    "ShelleyGenesisFile": "shelley-genesis.json",
    "ShelleyGenesisHash": "162d29c4e1cf6b8a84f2d692e67a3ac6bc7851bc3e6e4afe64d15778bed8bd86",
    "AlonzoGenesisFile": "alonzo-genesis.json",
    "AlonzoGenesisHash": "7e94a15f55d1e82d10f09203fa1d40f8eede58fd8066542cf6566008068ed874",
    "ConwayGenesisFile": "conway-genesis.json",
    "ConwayGenesisHash": "0eb6adaec3fcb1fe286c1b4ae0da2a117eafc3add51e17577d36dd39eddfc3db",
    "Protocol": "Cardano",
}
NAMES = ["byron-genesis.json", "shelley-genesis.json", "alonzo-genesis.json", "conway-genesis.json"]


class Server:
    """A loopback HTTP server for a directory, counting requests per path."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/environments/preprod"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def published(tmp_path: Path) -> Path:
    root = tmp_path / "www" / "environments" / "preprod"
    root.mkdir(parents=True)
    for name in NAMES:
        (root / name).write_bytes((FIXTURES / name).read_bytes())
    return root


@pytest.fixture
def server(published: Path) -> Iterator[Server]:
    s = Server(published.parent.parent)
    yield s
    s.close()


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "genesis"
    d.mkdir()
    return d


def no_sleep(_: float) -> None:
    pass


def fetch_all(dest: Path, base_url: str, **kwargs: Any) -> list[str]:
    outcomes = run(PREPROD, dest, base_url=base_url, checksums=kwargs.pop("checksums", {}),
                   fetch=http_fetch(None), timeout=5, sleep=no_sleep, **kwargs)  # fmt: skip
    return [f"{o.name}:{o.action}" for o in outcomes]


def test_the_published_preprod_files_match_the_published_hashes() -> None:
    byron = (FIXTURES / "byron-genesis.json").read_bytes()
    assert byron_genesis_hash(byron) == PREPROD["ByronGenesisHash"]
    # The Byron hash is not the hash of the bytes: it is of the canonical JSON.
    assert hashlib.blake2b(byron, digest_size=32).hexdigest() != PREPROD["ByronGenesisHash"]


def test_fetches_and_verifies_every_file(server: Server, dest: Path) -> None:
    assert fetch_all(dest, server.url) == [f"{n}:fetched" for n in NAMES]
    for name in NAMES:
        assert (dest / name).read_bytes() == (FIXTURES / name).read_bytes()
        assert (dest / name).stat().st_mode & 0o777 == 0o444
    assert not list(dest.glob(".*.tmp"))
    # A restarted pod keeps what verifies and asks for nothing.
    before = len(server.requests)
    assert fetch_all(dest, server.url) == [f"{n}:kept" for n in NAMES]
    assert len(server.requests) == before


def test_a_corrupted_file_is_refused_and_not_installed(
    server: Server, published: Path, dest: Path
) -> None:
    shelley = published / "shelley-genesis.json"
    shelley.write_bytes(shelley.read_bytes().replace(b'"networkMagic": 1', b'"networkMagic": 2'))
    with pytest.raises(BootstrapError) as excinfo:
        fetch_all(dest, server.url)
    message = str(excinfo.value)
    assert message.startswith(f"shelley-genesis.json from {server.url}/shelley-genesis.json: ")
    assert f"does not match ShelleyGenesisHash {PREPROD['ShelleyGenesisHash']}" in message
    assert "\n" not in message
    assert not (dest / "shelley-genesis.json").exists()


def test_a_corrupted_byron_file_is_refused(server: Server, published: Path, dest: Path) -> None:
    byron = published / "byron-genesis.json"
    document = json.loads(byron.read_bytes())
    document["protocolConsts"]["k"] += 1
    byron.write_text(json.dumps(document, indent=2))
    with pytest.raises(BootstrapError, match="does not match ByronGenesisHash"):
        fetch_all(dest, server.url)
    # Pretty-printing a valid file differently keeps its canonical hash.
    document["protocolConsts"]["k"] -= 1
    byron.write_text(json.dumps(document, indent=7))
    fetch_all(dest, server.url)


def test_a_file_that_is_not_json_is_refused(server: Server, published: Path, dest: Path) -> None:
    (published / "byron-genesis.json").write_text("<html>503 Service Unavailable</html>")
    with pytest.raises(BootstrapError, match=r"is not JSON .*: not a genesis file"):
        fetch_all(dest, server.url)


def test_an_unreachable_server_is_one_line(dest: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(BootstrapError) as excinfo:
        fetch_all(dest, f"http://127.0.0.1:{port}/environments/preprod")
    message = str(excinfo.value)
    assert message.startswith(f"cannot fetch http://127.0.0.1:{port}/environments/preprod/byron")
    assert "after 3 attempts" in message and "Connection refused" in message
    assert "node.genesis.baseUrl" in message
    assert not list(dest.iterdir())


def test_a_missing_file_is_final(server: Server, published: Path, dest: Path) -> None:
    (published / "conway-genesis.json").unlink()
    with pytest.raises(BootstrapError, match=r"conway-genesis.json: HTTP 404 .*node.network"):
        fetch_all(dest, server.url)
    assert server.requests.count("/environments/preprod/conway-genesis.json") == 1


def test_a_wrong_file_in_place_is_replaced(server: Server, dest: Path) -> None:
    (dest / "alonzo-genesis.json").write_text("{}")
    outcomes = fetch_all(dest, server.url)
    assert "alonzo-genesis.json:fetched" in outcomes
    assert (dest / "alonzo-genesis.json").read_bytes() == (
        FIXTURES / "alonzo-genesis.json"
    ).read_bytes()


def test_pinned_checksums(server: Server, dest: Path) -> None:
    good = hashlib.sha256((FIXTURES / "conway-genesis.json").read_bytes()).hexdigest()
    fetch_all(dest, server.url, checksums={"conway-genesis.json": good})
    for f in dest.iterdir():
        f.unlink()
    with pytest.raises(BootstrapError, match="does not match the pinned checksum"):
        fetch_all(dest, server.url, checksums={"conway-genesis.json": "0" * 64})
    with pytest.raises(BootstrapError, match=r"does not name: dijkstra-genesis\.json"):
        fetch_all(dest, server.url, checksums={"dijkstra-genesis.json": good})


def test_a_file_without_any_hash_is_refused_unless_pinned(server: Server, dest: Path) -> None:
    config = {k: v for k, v in PREPROD.items() if k != "ConwayGenesisHash"}
    with pytest.raises(BootstrapError) as excinfo:
        run(config, dest, base_url=server.url, checksums={}, fetch=http_fetch(None),
            sleep=no_sleep)  # fmt: skip
    assert "no ConwayGenesisHash in the node configuration and no pinned checksum" in str(
        excinfo.value
    )
    assert "node.genesis.checksums.conway-genesis.json" in str(excinfo.value)
    pinned = hashlib.sha256((FIXTURES / "conway-genesis.json").read_bytes()).hexdigest()
    run(config, dest, base_url=server.url, checksums={"conway-genesis.json": pinned},
        fetch=http_fetch(None), sleep=no_sleep)  # fmt: skip


def test_verify_only_for_an_air_gapped_volume(dest: Path) -> None:
    for name in NAMES:
        (dest / name).write_bytes((FIXTURES / name).read_bytes())
    outcomes = run(PREPROD, dest, base_url=None, checksums={}, fetch=http_fetch(None),
                   verify_only=True)  # fmt: skip
    assert [o.action for o in outcomes] == ["verified"] * 4
    (dest / "alonzo-genesis.json").write_text('{"tampered": true}')
    with pytest.raises(BootstrapError, match=r"alonzo-genesis.json from .*does not match"):
        run(PREPROD, dest, base_url=None, checksums={}, fetch=http_fetch(None), verify_only=True)
    (dest / "alonzo-genesis.json").unlink()
    with pytest.raises(BootstrapError, match=r"alonzo-genesis.json .* is missing from"):
        run(PREPROD, dest, base_url=None, checksums={}, fetch=http_fetch(None), verify_only=True)


def test_configuration_names(tmp_path: Path) -> None:
    names = [w.name for w in wanted_files({**PREPROD, "ShelleyGenesisFile": "/x/y/shelley.json"})]
    assert names == ["byron-genesis.json", "shelley.json", "alonzo-genesis.json",
                     "conway-genesis.json"]  # fmt: skip
    with pytest.raises(BootstrapError, match="names no genesis file"):
        wanted_files({"Protocol": "Cardano"})
    with pytest.raises(BootstrapError, match=r"ShelleyGenesisHash .* not a 64-digit hex hash"):
        wanted_files({**PREPROD, "ShelleyGenesisHash": "abc"})


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forge_manager.bootstrap", *args],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_command_line(server: Server, published: Path, dest: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(PREPROD))
    ok = cli("--config", str(config), "--dest", str(dest), "--base-url", server.url)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == [f"bootstrap: {n}: fetched" for n in NAMES]
    for f in dest.iterdir():
        f.unlink()
    (published / "alonzo-genesis.json").write_text("{}")
    bad = cli("--config", str(config), "--dest", str(dest), "--base-url", server.url)
    assert bad.returncode == 1
    [line] = bad.stderr.splitlines()
    assert line.startswith("bootstrap: alonzo-genesis.json from http://127.0.0.1:")
    usage = cli("--config", str(config), "--dest", str(dest), "--checksum", "x=y")
    assert usage.returncode == 2 and "is not NAME=SHA256" in usage.stderr
