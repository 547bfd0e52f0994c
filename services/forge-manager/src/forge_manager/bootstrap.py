"""Genesis files for cardano-node: fetched from a base URL (or found on a volume) and verified.

Run as the chart's ``genesis`` init container (``python -m forge_manager.bootstrap``) before the
node starts. The node configuration names the files and carries their hashes; every file it names
is verified before the node may use it:

* ``ByronGenesisFile`` against ``ByronGenesisHash``: Blake2b-256 of the file's canonical JSON
  (sorted keys, no white space), which is how cardano-node hashes the Byron genesis;
* ``ShelleyGenesisFile``, ``AlonzoGenesisFile``, ``ConwayGenesisFile``, ``DijkstraGenesisFile`` and
  ``CheckpointsFile`` against their ``...Hash`` / ``CheckpointsFileHash``: Blake2b-256 of the bytes;
* and, for any file, against a SHA-256 pinned by the operator (``--checksum NAME=SHA256``), which
  also covers a file the configuration names without a hash.

A file the configuration names but nothing can verify is refused. A file is written under a
temporary name, verified, fsynced and renamed, so a node never sees a partial or unverified file;
a file already in place that verifies is kept (a restarted pod does not download again). Every
failure is one line on stderr naming the file, the URL and what to change, and exit status 1:
the pod does not start rather than run on a wrong genesis.

``--verify-only`` checks files that are already there (a ConfigMap or volume, air-gapped), with
the same rules, and downloads nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (configuration key of the file, key of its hash, how the hash is computed)
GENESIS_KEYS: tuple[tuple[str, str, str], ...] = (
    ("ByronGenesisFile", "ByronGenesisHash", "byron"),
    ("ShelleyGenesisFile", "ShelleyGenesisHash", "raw"),
    ("AlonzoGenesisFile", "AlonzoGenesisHash", "raw"),
    ("ConwayGenesisFile", "ConwayGenesisHash", "raw"),
    ("DijkstraGenesisFile", "DijkstraGenesisHash", "raw"),
    ("CheckpointsFile", "CheckpointsFileHash", "raw"),
)
MAX_BYTES = 256 * 2**20
"""Refuse a download larger than this (mainnet's Byron genesis is about 1 MiB)."""
ATTEMPTS = 3
"""Tries per file for a network error or an HTTP 5xx; a 4xx or a mismatch is final."""


class BootstrapError(Exception):
    """One line: which file, what went wrong, what to change."""


@dataclass(frozen=True)
class Wanted:
    """One file the node configuration names."""

    name: str
    """File name (the configuration's path, base name only)."""
    config_key: str
    expected: str | None
    """Blake2b-256 from the configuration, lower-case hex; None when it carries none."""
    hash_key: str
    kind: str
    """``byron`` (canonical JSON) or ``raw`` (the bytes)."""


def wanted_files(config: dict[str, Any]) -> list[Wanted]:
    """The files ``config`` names, in configuration order."""
    out: list[Wanted] = []
    for file_key, hash_key, kind in GENESIS_KEYS:
        path = config.get(file_key)
        if path is None:
            continue
        if not isinstance(path, str) or not path:
            raise BootstrapError(f"{file_key} in the node configuration is not a file name")
        expected = config.get(hash_key)
        if expected is not None and not _is_hex(expected, 64):
            raise BootstrapError(f"{hash_key} in the node configuration is not a 64-digit hex hash")
        out.append(
            Wanted(
                name=Path(path).name,
                config_key=file_key,
                expected=expected.lower() if isinstance(expected, str) else None,
                hash_key=hash_key,
                kind=kind,
            )
        )
    if not out:
        raise BootstrapError("the node configuration names no genesis file (ByronGenesisFile...)")
    return out


def _is_hex(value: object, length: int) -> bool:
    return (
        isinstance(value, str)
        and len(value) == length
        and all(c in "0123456789abcdefABCDEF" for c in value)
    )


def blake2b_256(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def byron_genesis_hash(data: bytes) -> str:
    """cardano-node's Byron genesis hash: Blake2b-256 of the canonical JSON rendering."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc.__class__.__name__})") from None
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return blake2b_256(canonical.encode("utf-8"))


def check(want: Wanted, data: bytes, pinned: str | None, source: str) -> None:
    """Raise :class:`BootstrapError` unless ``data`` is the file the configuration means."""
    if want.expected is None and pinned is None:
        raise BootstrapError(
            f"{want.name} ({want.config_key}): no {want.hash_key} in the node configuration and "
            f"no pinned checksum: set node.genesis.checksums.{want.name} to its SHA-256"
        )
    if want.expected is not None:
        try:
            got = byron_genesis_hash(data) if want.kind == "byron" else blake2b_256(data)
        except ValueError as exc:
            raise BootstrapError(
                f"{want.name} from {source} is {exc}: not a genesis file"
            ) from None
        if got != want.expected:
            raise BootstrapError(
                f"{want.name} from {source}: Blake2b-256 {got} does not match {want.hash_key} "
                f"{want.expected} of the node configuration: a corrupt file or one of another "
                "network (check node.network and node.genesis.baseUrl)"
            )
    if pinned is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != pinned:
            raise BootstrapError(
                f"{want.name} from {source}: SHA-256 {got} does not match the pinned checksum "
                f"{pinned} (node.genesis.checksums)"
            )


Fetch = Callable[[str, float], bytes]


def http_fetch(context: ssl.SSLContext | None) -> Fetch:
    """GET with a timeout and a size bound; raises :class:`BootstrapError` (final) or OSError."""

    def fetch(url: str, timeout: float) -> bytes:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise BootstrapError(f"cannot fetch {url}: not an http(s) URL")
        headers = {"User-Agent": "cardano-forge-bootstrap"}
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 (scheme checked)
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
                data: bytes = response.read(MAX_BYTES + 1)
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                raise OSError(f"HTTP {exc.code} {exc.reason}") from None
            raise BootstrapError(
                f"cannot fetch {url}: HTTP {exc.code} {exc.reason} "
                "(check node.genesis.baseUrl and node.network)"
            ) from None
        if len(data) > MAX_BYTES:
            raise BootstrapError(f"cannot fetch {url}: larger than {MAX_BYTES} bytes")
        return data

    return fetch


def fetch_with_retries(
    fetch: Fetch, url: str, timeout: float, sleep: Callable[[float], None] = time.sleep
) -> bytes:
    last = ""
    for attempt in range(ATTEMPTS):
        try:
            return fetch(url, timeout)
        except (OSError, ValueError) as exc:  # URLError, timeouts, resets, bad URLs
            last = _reason(exc)
        if attempt + 1 < ATTEMPTS:
            sleep(2.0 * (attempt + 1))
    raise BootstrapError(
        f"cannot fetch {url} after {ATTEMPTS} attempts: {last} "
        "(check node.genesis.baseUrl, the network and the egress rules of the namespace)"
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, 0o444)
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@dataclass(frozen=True)
class Outcome:
    name: str
    action: str
    """``kept`` (already there and valid), ``fetched`` or ``verified``."""


def run(
    config: dict[str, Any],
    dest: Path,
    *,
    base_url: str | None,
    checksums: dict[str, str],
    fetch: Fetch,
    timeout: float = 60.0,
    verify_only: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Outcome]:
    """Make every file the configuration names present in ``dest`` and verified."""
    wanted = wanted_files(config)
    unknown = set(checksums) - {w.name for w in wanted}
    if unknown:
        names = ", ".join(w.name for w in wanted)
        raise BootstrapError(
            f"pinned checksums for files the node configuration does not name: "
            f"{', '.join(sorted(unknown))} (it names {names})"
        )
    outcomes: list[Outcome] = []
    for want in wanted:
        target = dest / want.name
        pinned = checksums.get(want.name)
        if target.is_file():
            data = target.read_bytes()
            try:
                check(want, data, pinned, str(target))
            except BootstrapError:
                if verify_only:
                    raise
            else:
                outcomes.append(Outcome(want.name, "verified" if verify_only else "kept"))
                continue
        if verify_only:
            raise BootstrapError(
                f"{want.name} ({want.config_key}) is missing from {dest}: put it in the "
                "ConfigMap or volume of node.genesis"
            )
        if not base_url:
            raise BootstrapError(
                "no base URL to fetch the genesis files from: set node.genesis.baseUrl"
            )
        url = f"{base_url.rstrip('/')}/{urllib.parse.quote(want.name)}"
        data = fetch_with_retries(fetch, url, timeout, sleep)
        check(want, data, pinned, url)
        _write_atomically(target, data)
        outcomes.append(Outcome(want.name, "fetched"))
    return outcomes


def _checksum(raw: str) -> tuple[str, str]:
    name, sep, digest = raw.partition("=")
    if not sep or not name or not _is_hex(digest, 64):
        raise argparse.ArgumentTypeError(f"{raw!r} is not NAME=SHA256 (64 hex digits)")
    return name, digest.lower()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m forge_manager.bootstrap",
        description="Fetch and verify the genesis files a cardano-node configuration names.",
    )
    parser.add_argument("--config", type=Path, required=True, help="the node configuration (JSON)")
    parser.add_argument("--dest", type=Path, required=True, help="directory of the genesis files")
    parser.add_argument("--base-url", default="", help="where the files are published")
    parser.add_argument(
        "--checksum", type=_checksum, action="append", default=[], metavar="NAME=SHA256"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--ca-bundle", type=Path, help="CA certificates for HTTPS (PEM)")
    parser.add_argument("--verify-only", action="store_true", help="check files in --dest only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        try:
            config = json.loads(args.config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BootstrapError(
                f"cannot read the node configuration {args.config}: {exc}"
            ) from None
        if not isinstance(config, dict):
            raise BootstrapError(f"the node configuration {args.config} is not a JSON object")
        if args.base_url and urllib.parse.urlsplit(args.base_url).scheme not in ("http", "https"):
            raise BootstrapError(f"node.genesis.baseUrl {args.base_url!r} is not an http(s) URL")
        if not args.dest.is_dir():
            raise BootstrapError(f"{args.dest} is not a directory")
        context = None
        if args.ca_bundle is not None:
            try:
                context = ssl.create_default_context(cafile=str(args.ca_bundle))
            except (OSError, ssl.SSLError) as exc:
                raise BootstrapError(f"cannot load the CA bundle {args.ca_bundle}: {exc}") from None
        outcomes = run(
            config,
            args.dest,
            base_url=args.base_url or None,
            checksums=dict(args.checksum),
            fetch=http_fetch(context),
            timeout=args.timeout,
            verify_only=args.verify_only,
        )
    except BootstrapError as exc:
        print(f"bootstrap: {exc}", file=sys.stderr, flush=True)
        return 1
    for outcome in outcomes:
        print(f"bootstrap: {outcome.name}: {outcome.action}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
