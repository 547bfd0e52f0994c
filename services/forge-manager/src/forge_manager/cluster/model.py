"""CardanoForgeCluster objects as typed, immutable values, and their parsing (no I/O).

A resource that does not parse is not an error to swallow: :func:`parse_region` returns a record
whose ``spec_error`` says what is wrong, and the policy treats such a region as "not forging"
(for this region) or "not a candidate" (for another region). Nothing here ever turns missing or
malformed data into a permission to forge.

The region's *effective* state and priority are computed here too (:func:`effective`): an
override whose ``expiresAt`` has passed is ignored, and a region whose health checks crossed the
failure threshold carries a penalty of :data:`HEALTH_PENALTY` on its priority until the count of
consecutive failures walks back to zero.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

HEALTH_PENALTY = 100
"""Added to the priority of a region whose health checks reached the failure threshold."""

HOLDER_SEPARATOR = "/"
"""The pool-wide Lease holder identity is ``<region>/<pod>``; neither may contain ``/``."""


class ForgeState(enum.StrEnum):
    ENABLED = "Enabled"
    DISABLED = "Disabled"
    PRIORITY_BASED = "Priority-based"


@dataclass(frozen=True)
class Override:
    """``spec.override``: a temporary forge state and/or priority, with an optional expiry."""

    forge_state: ForgeState | None
    priority: int | None
    reason: str
    expires_at: datetime | None
    """Wall-clock time (UTC) written by an operator; ``None`` means until removed."""

    def active(self, now_wall: datetime) -> bool:
        return self.expires_at is None or now_wall < self.expires_at


@dataclass(frozen=True)
class HealthCheckSpec:
    """``spec.healthCheck``: what the region's local leader probes, and how often."""

    enabled: bool
    endpoint: str
    interval: float
    timeout: float
    failure_threshold: int


@dataclass(frozen=True)
class RegionSpec:
    region: str
    priority: int
    forge_state: ForgeState
    health_check: HealthCheckSpec | None
    override: Override | None


@dataclass(frozen=True)
class RegionStatus:
    """``status`` as the region's own local leader last wrote it."""

    effective_state: ForgeState | None
    effective_priority: int | None
    active_leader: str
    forging_enabled: bool
    healthy: bool | None
    consecutive_failures: int
    demoted: bool
    """Health penalty in force (``effectivePriority`` includes it)."""
    heartbeat: str
    """``status.lastHeartbeatTime``: changes at every status write of a live local leader."""
    observed_generation: int | None
    eligible: bool = True
    """False when the region's condition ``Eligible`` is ``False``: its local leader stopped on
    a fail-closed path (cannot read the regions, its resource is invalid...) and must not be
    deferred to. A status without that condition (an older forge manager) counts as eligible."""
    ineligible_reason: str = ""


@dataclass(frozen=True)
class RegionRecord:
    """One CardanoForgeCluster as read from the coordination API."""

    name: str
    generation: int | None
    resource_version: str
    spec: RegionSpec | None
    spec_error: str | None
    """Why ``spec`` is None; a region with a spec error never forges and is never a candidate."""
    status: RegionStatus | None
    status_token: str
    """A canonical rendering of ``status``: a change means the region's leader wrote it."""

    @property
    def status_current(self) -> bool:
        """The status was written for the current spec (``observedGeneration == generation``)."""
        return (
            self.status is not None
            and self.generation is not None
            and self.status.observed_generation == self.generation
        )


class ParseError(ValueError):
    """One line: which field is wrong and why."""


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParseError(f"{field} must be an integer, got {value!r}")
    return value


def parse_duration(raw: Any, field: str) -> float:
    """Seconds from ``"30s"``, ``"1m30s"``, ``"500ms"``, ``"1h"`` or a plain number of seconds."""
    if isinstance(raw, bool):
        raise ParseError(f"{field} must be a duration such as '30s', got {raw!r}")
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        value = _parse_duration_text(raw.strip(), field)
    else:
        raise ParseError(f"{field} must be a duration such as '30s', got {raw!r}")
    if not value > 0 or value == float("inf"):
        raise ParseError(f"{field} must be a positive duration such as '30s', got {raw!r}")
    return value


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _parse_duration_text(text: str, field: str) -> float:
    bad = ParseError(f"{field} must be a duration such as '30s' or '1m30s', got {text!r}")
    if not text:
        raise bad
    try:
        return float(text)
    except ValueError:
        pass
    total, i = 0.0, 0
    while i < len(text):
        j = i
        while j < len(text) and (text[j].isdigit() or text[j] == "."):
            j += 1
        if j == i:
            raise bad
        number = text[i:j]
        k = j
        while k < len(text) and text[k].isalpha():
            k += 1
        unit = text[j:k]
        if unit not in _UNITS:
            raise bad
        try:
            total += float(number) * _UNITS[unit]
        except ValueError:
            raise bad from None
        i = k
    return total


def parse_time(raw: Any, field: str) -> datetime:
    """An RFC 3339 timestamp (``2025-10-02T06:45:11Z``) as an aware UTC datetime."""
    if not isinstance(raw, str):
        raise ParseError(f"{field} must be an RFC 3339 time such as 2025-10-02T06:45:11Z")
    try:
        parsed = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ParseError(
            f"{field}={raw!r} is not an RFC 3339 time such as 2025-10-02T06:45:11Z"
        ) from None
    if parsed.tzinfo is None:
        raise ParseError(f"{field}={raw!r} has no time zone: expected e.g. 2025-10-02T06:45:11Z")
    return parsed.astimezone(UTC)


def format_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _state(value: Any, field: str) -> ForgeState:
    try:
        return ForgeState(value)
    except ValueError:
        choices = ", ".join(s.value for s in ForgeState)
        raise ParseError(f"{field} must be one of {choices}, got {value!r}") from None


def parse_spec(name: str, spec: Any) -> RegionSpec:
    if not isinstance(spec, Mapping):
        raise ParseError("spec is missing")
    region = spec.get("region", name)
    if not isinstance(region, str) or not region:
        raise ParseError(f"spec.region must be a non-empty string, got {region!r}")
    if "priority" not in spec:
        raise ParseError("spec.priority is missing")
    priority = _int(spec["priority"], "spec.priority")
    if "forgeState" not in spec:
        raise ParseError("spec.forgeState is missing")
    forge_state = _state(spec["forgeState"], "spec.forgeState")
    health = _parse_health(spec.get("healthCheck"))
    override = _parse_override(spec.get("override"))
    return RegionSpec(region, priority, forge_state, health, override)


def _parse_health(raw: Any) -> HealthCheckSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ParseError("spec.healthCheck must be an object")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ParseError(f"spec.healthCheck.enabled must be true or false, got {enabled!r}")
    endpoint = raw.get("endpoint", "")
    if not isinstance(endpoint, str):
        raise ParseError("spec.healthCheck.endpoint must be a string")
    if enabled and endpoint and not endpoint.startswith(("http://", "https://")):
        raise ParseError(f"spec.healthCheck.endpoint must be an http(s) URL, got {endpoint!r}")
    threshold = _int(raw.get("failureThreshold", 3), "spec.healthCheck.failureThreshold")
    if threshold < 1:
        raise ParseError("spec.healthCheck.failureThreshold must be at least 1")
    return HealthCheckSpec(
        enabled=enabled,
        endpoint=endpoint,
        interval=parse_duration(raw.get("interval", "30s"), "spec.healthCheck.interval"),
        timeout=parse_duration(raw.get("timeout", "10s"), "spec.healthCheck.timeout"),
        failure_threshold=threshold,
    )


def _parse_override(raw: Any) -> Override | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ParseError("spec.override must be an object")
    state = raw.get("forgeState")
    priority = raw.get("priority")
    reason = raw.get("reason", "")
    if not isinstance(reason, str):
        raise ParseError("spec.override.reason must be a string")
    expires = raw.get("expiresAt")
    return Override(
        forge_state=None if state is None else _state(state, "spec.override.forgeState"),
        priority=None if priority is None else _int(priority, "spec.override.priority"),
        reason=reason,
        expires_at=None if expires is None else parse_time(expires, "spec.override.expiresAt"),
    )


def _parse_status(raw: Any) -> RegionStatus | None:
    """Lenient: a malformed field reads as "unknown", which makes the region no candidate."""
    if not isinstance(raw, Mapping) or not raw:
        return None
    state_raw = raw.get("effectiveState")
    values = {s.value: s for s in ForgeState}
    state = values.get(state_raw) if isinstance(state_raw, str) else None
    prio = raw.get("effectivePriority")
    health = raw.get("healthStatus")
    health = health if isinstance(health, Mapping) else {}
    healthy = health.get("healthy")
    failures = health.get("consecutiveFailures", 0)
    demoted = raw.get("healthDemoted", False)
    generation = raw.get("observedGeneration")
    heartbeat = raw.get("lastHeartbeatTime", "")
    conditions = raw.get("conditions")
    eligible = next(
        (
            c
            for c in (conditions if isinstance(conditions, list) else [])
            if isinstance(c, Mapping) and c.get("type") == "Eligible"
        ),
        None,
    )
    return RegionStatus(
        effective_state=state,
        effective_priority=prio if isinstance(prio, int) and not isinstance(prio, bool) else None,
        active_leader=str(raw.get("activeLeader") or ""),
        forging_enabled=raw.get("forgingEnabled") is True,
        healthy=healthy if isinstance(healthy, bool) else None,
        consecutive_failures=failures if isinstance(failures, int) else 0,
        demoted=demoted is True,
        heartbeat=heartbeat if isinstance(heartbeat, str) else "",
        observed_generation=generation
        if isinstance(generation, int) and not isinstance(generation, bool)
        else None,
        eligible=eligible is None or eligible.get("status") != "False",
        ineligible_reason=str(eligible.get("reason") or "") if eligible is not None else "",
    )


def parse_region(obj: Mapping[str, Any]) -> RegionRecord:
    """A record for any object the API returned; never raises for a malformed spec or status."""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name = str(meta.get("name") or "")
    generation = meta.get("generation")
    spec: RegionSpec | None = None
    error: str | None = None
    try:
        if not name:
            raise ParseError("metadata.name is missing")
        spec = parse_spec(name, obj.get("spec"))
    except ParseError as exc:
        error = str(exc)
    raw_status = obj.get("status")
    return RegionRecord(
        name=name,
        generation=generation if isinstance(generation, int) else None,
        resource_version=str(meta.get("resourceVersion") or ""),
        spec=spec,
        spec_error=error,
        status=_parse_status(raw_status),
        status_token=json.dumps(raw_status, sort_keys=True, default=str),
    )


# ---- effective state ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Effective:
    """What a region's local leader computes for its own region and publishes in its status."""

    state: ForgeState
    priority: int
    """Base priority (override or spec) plus :data:`HEALTH_PENALTY` while demoted."""
    demoted: bool
    source: str
    """Human-readable origin, e.g. ``spec`` or ``override 'maintenance' until ...``."""


def effective(spec: RegionSpec, *, demoted: bool, now_wall: datetime) -> Effective:
    """The region's effective state and priority; an expired override is ignored."""
    state, priority, source = spec.forge_state, spec.priority, "spec"
    ov = spec.override
    if ov is not None and (ov.forge_state is not None or ov.priority is not None):
        if ov.active(now_wall):
            until = "" if ov.expires_at is None else f" until {format_time(ov.expires_at)}"
            why = f" {ov.reason!r}" if ov.reason else ""
            source = f"override{why}{until}"
            if ov.forge_state is not None:
                state = ov.forge_state
            if ov.priority is not None:
                priority = ov.priority
        else:
            assert ov.expires_at is not None  # active() is True without an expiry
            source = f"spec (override expired at {format_time(ov.expires_at)})"
    if demoted:
        priority += HEALTH_PENALTY
    return Effective(state=state, priority=priority, demoted=demoted, source=source)


def holder_identity(region: str, pod: str) -> str:
    return f"{region}{HOLDER_SEPARATOR}{pod}"


def holder_region(identity: str | None) -> str | None:
    if not identity or HOLDER_SEPARATOR not in identity:
        return None
    return identity.split(HOLDER_SEPARATOR, 1)[0]
