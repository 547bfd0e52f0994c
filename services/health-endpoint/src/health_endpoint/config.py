"""Configuration: the environment (validated once at startup) and the optional YAML check file.

Every problem is reported as one :class:`ConfigError` line that names the variable or the YAML
path and what would be accepted, so ``kubectl logs`` of a crash-looping pod says what to fix.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from health_endpoint.checks import (
    CHECK_NAME,
    DEFAULT_RULES,
    QUERY_VARIABLES,
    Direction,
    QueryContext,
    Rule,
    Status,
    render_query,
)
from health_endpoint.networks import BUILT_IN, Network
from health_endpoint.units import Unit

_E = TypeVar("_E", Unit, Direction, Status)

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*'
_MATCHERS = re.compile(rf"^({_MATCHER}(,{_MATCHER})*,?\s*)?$")


class ConfigError(ValueError):
    """The configuration cannot work; the message is one line saying what to change."""


@dataclass(frozen=True)
class Settings:
    """Settings read from the environment (variable names in each field's docstring)."""

    prometheus_url: str
    """``PROMETHEUS_URL`` (required): base URL of the Prometheus HTTP API, e.g.
    ``http://prometheus-operated.monitoring:9090`` (a path prefix is kept)."""
    prometheus_timeout_seconds: float = 3.0
    """``PROMETHEUS_TIMEOUT_SECONDS``: sent as the query's ``timeout=``, so Prometheus gives up
    on a query that takes longer."""
    prometheus_client_timeout_seconds: float = 4.0
    """``PROMETHEUS_CLIENT_TIMEOUT_SECONDS``: the HTTP client's own read timeout (default: the
    query timeout plus one second); must exceed ``PROMETHEUS_TIMEOUT_SECONDS``."""
    prometheus_bearer_token_file: Path | None = None
    """``PROMETHEUS_BEARER_TOKEN_FILE``: token sent to Prometheus (for an authenticating proxy)."""
    config_file: Path | None = None
    """``HEALTH_CONFIG_FILE``: YAML file that overrides or extends the built-in checks."""
    network: str = "mainnet"
    """``CARDANO_NETWORK``: ``mainnet``, ``preprod``, ``preview`` or one defined in the file."""
    cluster_label: str | None = "cluster"
    """``CLUSTER_LABEL``: label that selects a cluster's series; empty switches selection off."""
    node_exporter_selector: str | None = None
    """``NODE_EXPORTER_SELECTOR``: label matchers of the node_exporter series (the disk, CPU and
    memory rules), e.g. ``job="node-exporter"`` in a Prometheus of one region, whose node_exporter
    series carry no cluster label; ``$selector`` in it is the cluster's selector. Unset: the
    cluster's selector, as for the cardano-node series."""
    cache_ttl_seconds: float = 5.0
    """``CACHE_TTL_SECONDS``: how long one cluster's answer is reused (0: only shared in flight)."""
    auth_token_file: Path | None = None
    """``AUTH_TOKEN_FILE``: when set, the health API requires ``Authorization: Bearer <token>``."""
    ready_max_age_seconds: float = 30.0
    """``READY_MAX_AGE_SECONDS``: /readyz asks Prometheus again when its last answer is older."""
    query_concurrency: int = 16
    """``QUERY_CONCURRENCY``: threads per worker that run Prometheus queries."""
    multiproc_dir: Path | None = None
    """``PROMETHEUS_MULTIPROC_DIR``: set under several gunicorn workers (see gunicorn.conf.py)."""


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the service needs: the settings plus the resolved checks and network."""

    settings: Settings
    rules: tuple[Rule, ...]
    network: Network
    node_job: str = "cardano-node"
    rate_window: str = "5m"


def load_settings(env: Mapping[str, str]) -> Settings:
    """Read and validate the environment; raises :class:`ConfigError` with every problem."""
    errors: list[str] = []

    def text(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    def number(name: str, default: float, minimum: float, *, strict: bool = False) -> float:
        raw = text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            errors.append(f"{name}={raw!r} is not a number")
            return default
        if value < minimum or (strict and value == minimum) or math.isnan(value):
            bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"
            errors.append(f"{name}={raw!r} must be {bound}")
            return default
        return value

    def file(name: str) -> Path | None:
        raw = text(name)
        if raw is None:
            return None
        path = Path(raw)
        if not path.is_file():
            errors.append(f"{name}={raw!r}: no such file")
        return path

    url = text("PROMETHEUS_URL")
    if url is None:
        errors.append(
            "PROMETHEUS_URL is not set: give the Prometheus base URL, "
            "e.g. http://prometheus-operated.monitoring:9090"
        )
        url = ""
    else:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            errors.append(f"PROMETHEUS_URL={url!r} is not an http(s) URL with a host")
        url = url.rstrip("/")

    timeout = number("PROMETHEUS_TIMEOUT_SECONDS", 3.0, 0.0, strict=True)
    client_timeout = number("PROMETHEUS_CLIENT_TIMEOUT_SECONDS", timeout + 1.0, 0.0, strict=True)
    if client_timeout <= timeout:
        errors.append(
            f"PROMETHEUS_CLIENT_TIMEOUT_SECONDS ({client_timeout:g}) must exceed "
            f"PROMETHEUS_TIMEOUT_SECONDS ({timeout:g}) so Prometheus gives up first"
        )
    label_raw = env.get("CLUSTER_LABEL")
    label: str | None = "cluster" if label_raw is None else (label_raw.strip() or None)
    if label is not None and not LABEL_NAME.match(label):
        errors.append(f"CLUSTER_LABEL={label!r} is not a Prometheus label name")
    node_exporter_raw = env.get("NODE_EXPORTER_SELECTOR")
    node_exporter = None if node_exporter_raw is None else node_exporter_raw.strip()
    if node_exporter is not None and not _MATCHERS.match(
        node_exporter.replace("$selector", 'cluster="x"')
    ):
        errors.append(
            f"NODE_EXPORTER_SELECTOR={node_exporter!r} is not a list of label matchers, "
            'e.g. job="node-exporter" or job="node-exporter",$selector'
        )
    concurrency = number("QUERY_CONCURRENCY", 16, 1)
    if not float(concurrency).is_integer():
        errors.append(f"QUERY_CONCURRENCY={concurrency!r} must be a whole number")
    auth_token_file = file("AUTH_TOKEN_FILE")
    if auth_token_file is not None and auth_token_file.is_file():
        try:
            if not auth_token_file.read_text(encoding="utf-8").strip():
                errors.append(f"AUTH_TOKEN_FILE={str(auth_token_file)!r} is empty")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"AUTH_TOKEN_FILE={str(auth_token_file)!r} cannot be read: {exc}")
    multiproc = text("PROMETHEUS_MULTIPROC_DIR")
    if multiproc is not None and not Path(multiproc).is_dir():
        errors.append(f"PROMETHEUS_MULTIPROC_DIR={multiproc!r} is not a directory")

    settings = Settings(
        prometheus_url=url,
        prometheus_timeout_seconds=timeout,
        prometheus_client_timeout_seconds=client_timeout,
        prometheus_bearer_token_file=file("PROMETHEUS_BEARER_TOKEN_FILE"),
        config_file=file("HEALTH_CONFIG_FILE"),
        network=(text("CARDANO_NETWORK") or "mainnet").lower(),
        cluster_label=label,
        node_exporter_selector=node_exporter,
        cache_ttl_seconds=number("CACHE_TTL_SECONDS", 5.0, 0.0),
        auth_token_file=auth_token_file,
        ready_max_age_seconds=number("READY_MAX_AGE_SECONDS", 30.0, 0.0, strict=True),
        query_concurrency=int(concurrency),
        multiproc_dir=Path(multiproc) if multiproc else None,
    )
    if errors:
        raise ConfigError("; ".join(errors))
    return settings


def load_config(env: Mapping[str, str]) -> ServiceConfig:
    """Settings from ``env`` plus the checks from ``HEALTH_CONFIG_FILE`` (or the defaults)."""
    settings = load_settings(env)
    document: Any = {}
    if settings.config_file is not None:
        try:
            document = yaml.safe_load(settings.config_file.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            detail = " ".join(str(exc).split())
            raise ConfigError(
                f"HEALTH_CONFIG_FILE={str(settings.config_file)!r}: {detail}"
            ) from exc
    try:
        return build_config(settings, document)
    except ConfigError as exc:
        where = (
            f"HEALTH_CONFIG_FILE={str(settings.config_file)!r}: " if settings.config_file else ""
        )
        raise ConfigError(f"{where}{exc}") from None


_TOP_LEVEL = {"defaults", "cardano_node_job", "rate_window", "networks", "checks"}
_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
_RULE_FIELDS = {f.name for f in dataclasses.fields(Rule)} - {"check", "name"}
_NETWORK_FIELDS = {"shelley_start_slot", "shelley_start_time", "slot_length_seconds",
                   "slots_per_kes_period"}  # fmt: skip


def build_config(settings: Settings, document: Any) -> ServiceConfig:
    """Merge the parsed YAML ``document`` over the built-in checks and validate the result."""
    doc = _mapping(document, "the file")
    _no_unknown(doc, _TOP_LEVEL, "the file")
    use_defaults = doc.get("defaults", True)
    if not isinstance(use_defaults, bool):
        raise ConfigError("defaults: must be true or false")
    node_job = doc.get("cardano_node_job", "cardano-node")
    if not isinstance(node_job, str) or not node_job:
        raise ConfigError("cardano_node_job: must be a job name")
    rate_window = doc.get("rate_window", "5m")
    if not isinstance(rate_window, str) or not _DURATION.match(rate_window):
        raise ConfigError(f"rate_window: {rate_window!r} is not a Prometheus duration like 5m")

    networks = dict(BUILT_IN)
    for name, spec in _mapping(doc.get("networks") or {}, "networks").items():
        networks[str(name).lower()] = _network(str(name).lower(), spec)
    network = networks.get(settings.network)
    if network is None:
        known = ", ".join(sorted(networks))
        raise ConfigError(f"CARDANO_NETWORK={settings.network!r} is not one of: {known}")

    rules: dict[tuple[str, str], Rule] = {}
    if use_defaults:
        rules = {(r.check, r.name): r for r in DEFAULT_RULES}
    for check_key, spec in _mapping(doc.get("checks") or {}, "checks").items():
        check = str(check_key)
        if not CHECK_NAME.match(check):
            raise ConfigError(f"checks.{check}: check names are lower_snake_case")
        if spec is None:  # remove the whole check
            rules = {k: v for k, v in rules.items() if k[0] != check}
            continue
        for name_key, fields in _mapping(spec, f"checks.{check}").items():
            name = str(name_key)
            where = f"checks.{check}.{name}"
            if not CHECK_NAME.match(name):
                raise ConfigError(f"{where}: rule names are lower_snake_case")
            if fields is None:
                rules.pop((check, name), None)
                continue
            rules[(check, name)] = _rule(check, name, fields, rules.get((check, name)), where)

    if not any(rule.has_thresholds for rule in rules.values()):
        raise ConfigError("no check is configured: keep the defaults or define checks")
    ctx = QueryContext(cluster="example", cluster_label=settings.cluster_label,
                       node_job=node_job, network=network, rate_window=rate_window,
                       node_exporter_selector=settings.node_exporter_selector)  # fmt: skip
    metrics: dict[str, str] = {}
    for (check, name), rule in rules.items():
        where = f"checks.{check}.{name}"
        try:
            render_query(rule.query, ctx)
        except (KeyError, ValueError) as exc:
            allowed = ", ".join("$" + v for v in QUERY_VARIABLES)
            raise ConfigError(
                f"{where}.query: bad placeholder {exc} (allowed: {allowed}; write $$ for $)"
            ) from None
        if rule.metric is not None:
            if rule.metric in metrics:
                raise ConfigError(
                    f"{where}.metric: {rule.metric!r} is also set by {metrics[rule.metric]}"
                )
            metrics[rule.metric] = where
    return ServiceConfig(settings=settings, rules=tuple(rules.values()), network=network,
                         node_job=node_job, rate_window=rate_window)  # fmt: skip


def _rule(check: str, name: str, fields: Any, base: Rule | None, where: str) -> Rule:
    spec = _mapping(fields, where)
    _no_unknown(spec, _RULE_FIELDS, where)
    values: dict[str, Any] = dataclasses.asdict(base) if base else {"check": check, "name": name}
    if base is None:
        if "query" not in spec:
            raise ConfigError(f"{where}: a new rule needs a query")
        values.setdefault("description", name.replace("_", " ").capitalize())
    for key, raw in spec.items():
        values[key] = _field(key, raw, f"{where}.{key}")
    rule = Rule(**values)
    if not rule.has_thresholds and rule.metric is None:
        raise ConfigError(f"{where}: needs a threshold (degraded/unhealthy) or a metric")
    if rule.degraded is not None and rule.unhealthy is not None:
        inverted = (
            rule.unhealthy < rule.degraded
            if rule.direction is Direction.ABOVE
            else rule.unhealthy > rule.degraded
        )
        if inverted:
            raise ConfigError(
                f"{where}: unhealthy ({rule.unhealthy:g}) is less severe than degraded "
                f"({rule.degraded:g}) for direction {rule.direction.value}"
            )
    return rule


def _field(key: str, raw: Any, where: str) -> Any:
    if key in ("degraded", "unhealthy"):
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ConfigError(f"{where}: must be a number or null")
        return float(raw)
    if key == "unit":
        return _enum(Unit, raw, where)
    if key == "direction":
        return _enum(Direction, raw, where)
    if key == "no_data":
        status = _enum(Status, raw, where)
        if status is Status.UNKNOWN:
            raise ConfigError(f"{where}: must be healthy, degraded or unhealthy")
        return status
    if key == "metric":
        if raw is None:
            return None
        if not isinstance(raw, str) or not CHECK_NAME.match(raw):
            raise ConfigError(f"{where}: must be a lower_snake_case name or null")
        return raw
    if not isinstance(raw, str) or (key in ("query", "description") and not raw.strip()):
        raise ConfigError(f"{where}: must be a non-empty string")
    return raw


def _enum(kind: type[_E], raw: Any, where: str) -> _E:
    try:
        return kind(str(raw))
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise ConfigError(f"{where}: {raw!r} is not one of: {allowed}") from None


def _network(name: str, spec: Any) -> Network:
    where = f"networks.{name}"
    fields = _mapping(spec, where)
    _no_unknown(fields, _NETWORK_FIELDS, where)
    start = fields.get("shelley_start_time")
    if isinstance(start, str):
        try:
            start = dt.datetime.fromisoformat(start)
        except ValueError:
            raise ConfigError(f"{where}.shelley_start_time: not an ISO 8601 time") from None
    if isinstance(start, dt.datetime):
        if start.tzinfo is None:
            start = start.replace(tzinfo=dt.UTC)
        start = int(start.timestamp())
    slot = fields.get("shelley_start_slot")
    length = fields.get("slot_length_seconds", 1)
    per_kes = fields.get("slots_per_kes_period", 129_600)
    for key, value in (("shelley_start_time", start), ("shelley_start_slot", slot),
                       ("slots_per_kes_period", per_kes)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where}.{key}: must be a whole number >= 0")
    if isinstance(length, bool) or not isinstance(length, int | float) or length <= 0:
        raise ConfigError(f"{where}.slot_length_seconds: must be a positive number")
    assert isinstance(start, int) and isinstance(slot, int) and isinstance(per_kes, int)
    return Network(name, slot, start, float(length), per_kes)


def _mapping(value: Any, where: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _no_unknown(spec: Mapping[Any, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in spec if k not in allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
        )
