"""Settings of the etcd coordination backend (``COORDINATION_ETCD_*``), validated at start-up.

With ``COORDINATION_ETCD_ENDPOINTS`` set, the pool-wide lock, the regions' heartbeats and the
copies of the regions' CardanoForgeClusters that the other regions decide on live in an etcd
cluster with a member in every failure domain (:mod:`.etcd_store`); each region's
CardanoForgeCluster itself stays in its own Kubernetes cluster. Unset (the default), everything
stays in one Kubernetes API as before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from forge_manager.config import optional_path

DEFAULT_PREFIX = "/cardano-forge"
_PREFIX = re.compile(r"^(/[A-Za-z0-9._-]+)+$")


class EtcdConfigError(ValueError):
    """One line: the variable, what was wrong, the expected form."""


@dataclass(frozen=True)
class EtcdSettings:
    endpoints: tuple[str, ...]
    """``COORDINATION_ETCD_ENDPOINTS``: comma-separated client URLs, this region's own member
    first; a manager moves to the next one when a call fails."""
    ca_file: Path | None
    """``COORDINATION_ETCD_CA_FILE``: CA bundle that signed the members' client certificates
    (system CAs when unset; only for https endpoints)."""
    cert_file: Path | None
    """``COORDINATION_ETCD_CERT_FILE``: this region's client certificate (TLS client auth)."""
    key_file: Path | None
    """``COORDINATION_ETCD_KEY_FILE``: its private key."""
    prefix: str
    """``COORDINATION_ETCD_PREFIX``: keys live under ``<prefix>/<POOL_LEASE_NAME>/``
    (/cardano-forge)."""


def _file(env: Mapping[str, str], name: str) -> Path | None:
    return optional_path(env, name, EtcdConfigError)


def _endpoint(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise EtcdConfigError(
            f"COORDINATION_ETCD_ENDPOINTS has {raw!r}: expected client URLs such as "
            "https://etcd-east.example.org:2379, comma-separated, this region's member first"
        )
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        raise EtcdConfigError(
            f"COORDINATION_ETCD_ENDPOINTS has {raw!r}: name the port, e.g. "
            "https://etcd-east.example.org:2379"
        )
    return f"{parts.scheme}://{parts.netloc}"


def load_etcd_settings(env: Mapping[str, str]) -> EtcdSettings | None:
    """None when ``COORDINATION_ETCD_ENDPOINTS`` is unset; raises :class:`EtcdConfigError`."""
    raw = env.get("COORDINATION_ETCD_ENDPOINTS", "").strip()
    if not raw:
        for name in ("CA_FILE", "CERT_FILE", "KEY_FILE", "PREFIX"):
            if env.get(f"COORDINATION_ETCD_{name}", "").strip():
                raise EtcdConfigError(
                    f"COORDINATION_ETCD_{name} is set but COORDINATION_ETCD_ENDPOINTS is not: "
                    "set the endpoints, or unset it"
                )
        return None
    if env.get("COORDINATION_KUBECONFIG", "").strip():
        raise EtcdConfigError(
            "COORDINATION_KUBECONFIG and COORDINATION_ETCD_ENDPOINTS are both set: with etcd "
            "each region's CardanoForgeCluster stays in its own cluster; unset one of them"
        )
    endpoints = tuple(_endpoint(e.strip()) for e in raw.split(",") if e.strip())
    if len(set(endpoints)) != len(endpoints):
        raise EtcdConfigError(
            f"COORDINATION_ETCD_ENDPOINTS={raw!r} names an endpoint twice: list each member once"
        )
    cert, key = _file(env, "COORDINATION_ETCD_CERT_FILE"), _file(env, "COORDINATION_ETCD_KEY_FILE")
    if (cert is None) != (key is None):
        raise EtcdConfigError(
            "COORDINATION_ETCD_CERT_FILE and COORDINATION_ETCD_KEY_FILE go together: set both "
            "(the client certificate and its key) or neither"
        )
    ca = _file(env, "COORDINATION_ETCD_CA_FILE")
    if (cert is not None or ca is not None) and not all(e.startswith("https:") for e in endpoints):
        raise EtcdConfigError(
            "COORDINATION_ETCD_CA_FILE/CERT_FILE are set but COORDINATION_ETCD_ENDPOINTS has "
            "http:// URLs: use https:// for every member"
        )
    prefix = env.get("COORDINATION_ETCD_PREFIX", "").strip() or DEFAULT_PREFIX
    if not _PREFIX.match(prefix):
        raise EtcdConfigError(
            f"COORDINATION_ETCD_PREFIX={prefix!r} is not valid: expected a key path such as "
            f"{DEFAULT_PREFIX} (/-separated letters, digits, '.', '_', '-', no trailing /)"
        )
    return EtcdSettings(endpoints, ca, cert, key, prefix)
