"""What the CLI and the forge managers agree on, beyond the CardanoForgeCluster's spec.

**Pod switchover** (``switchover --to-pod``) goes through the region's *local* Lease (the one the
pods of a StatefulSet compete for, ``LEASE_NAME``):

* The forge manager (``forge_manager/switchover.py`` in ``services/forge-manager``) writes
  :data:`CAPABILITIES_ANNOTATION` with :data:`POD_SWITCHOVER` on every acquire and renew of the
  Lease it holds. The CLI asks for a switchover only when the *current holder's* record carries
  it; otherwise it refuses, and writes nothing: an older forge manager takes any change of its
  Lease by someone else (a 409 on its next renew) as a lost Lease and demotes.
* The CLI writes :data:`REQUEST_ANNOTATION` (JSON, :class:`SwitchoverRequest`) with a JSON merge
  patch carrying the resourceVersion it read (a conflict: read again, at most a few times).
* The forge manager answers in :data:`RESULT_ANNOTATION` (JSON, :class:`SwitchoverResult`) with
  the request's ``id`` when it refuses or gives up, and removes the request when done or expired.
  The CLI's success criterion is the Lease's holder being the named pod (and, in a forging
  region, that pod forging); it prints a refusal's reason.

The full contract, including what the manager must do, is in the CLI's README ("Pod switchover:
the contract with the forge manager").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CAPABILITIES_ANNOTATION = "cardano.io/forge-manager-capabilities"
"""Comma-separated capabilities of the forge manager that wrote the Lease record."""
POD_SWITCHOVER = "pod-switchover/v1"
"""The capability: this holder honours :data:`REQUEST_ANNOTATION` as described above."""
REQUEST_ANNOTATION = "cardano.io/switchover-request"
READY_ANNOTATION = "cardano.io/switchover-ready"
"""The named pod's answer ``{"id", "pod"}``: it is eligible; the holder hands over after it."""
RESULT_ANNOTATION = "cardano.io/switchover-result"
PREFERRED_ANNOTATION = "cardano.io/preferred-holder"
"""Written by the holder's release: the pod the Lease was handed to (the others stand aside)."""
MAX_REQUEST_SECONDS = 300.0
"""A request lives at most this long (``expiresAt - requestedAt``); the managers' stand-aside
window is bounded by it."""

REPORTING_COMPONENT = "cardano-forge-cli"
"""``reportingComponent`` of the Events the CLI records for its own actions."""
MANAGER_COMPONENT = "cardano-forge-manager"
"""``reportingComponent`` (or ``source.component``) of the forge managers' Events."""
SWITCHOVER_REASON_PREFIX = "switchover to "
"""Overrides whose reason starts with this were written by ``switchover --to-region``; a later
switchover or ``resume`` may replace or remove them without asking."""


def capabilities(annotations: Mapping[str, str] | None) -> frozenset[str]:
    raw = (annotations or {}).get(CAPABILITIES_ANNOTATION, "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{field} is missing")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"{field} has no time zone")
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class SwitchoverRequest:
    """``{"to": pod, "id": ..., "requestedBy": ..., "requestedAt": ..., "expiresAt": ...}``."""

    to: str
    id: str
    requested_by: str
    requested_at: datetime
    expires_at: datetime

    def encode(self) -> str:
        return json.dumps(
            {
                "to": self.to,
                "id": self.id,
                "requestedBy": self.requested_by,
                "requestedAt": _time(self.requested_at),
                "expiresAt": _time(self.expires_at),
            },
            sort_keys=True,
        )

    @classmethod
    def decode(cls, text: str) -> SwitchoverRequest:
        """Raises ValueError on anything that is not a well-formed request."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        to, ident, who = data.get("to"), data.get("id"), data.get("requestedBy", "")
        if not isinstance(to, str) or not to or not isinstance(ident, str) or not ident:
            raise ValueError("'to' and 'id' must be non-empty strings")
        requested = _parse_time(data.get("requestedAt"), "requestedAt")
        expires = _parse_time(data.get("expiresAt"), "expiresAt")
        if not requested < expires:
            raise ValueError("expiresAt must be after requestedAt")
        return cls(to, ident, str(who), requested, expires)


@dataclass(frozen=True)
class SwitchoverResult:
    """``{"id": ..., "outcome": "done"|"refused"|"expired", "reason": ...}`` by the manager."""

    id: str
    outcome: str
    reason: str

    @classmethod
    def decode(cls, text: str) -> SwitchoverResult:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        ident, outcome = data.get("id"), data.get("outcome")
        if not isinstance(ident, str) or outcome not in ("done", "refused", "expired"):
            raise ValueError("'id' must be a string and 'outcome' done, refused or expired")
        return cls(ident, str(outcome), str(data.get("reason", "")))
