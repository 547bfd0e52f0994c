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

# The manager's own names and parsing: the two sides of the contract cannot drift apart.
from forge_manager.events import COMPONENT as MANAGER_COMPONENT
from forge_manager.switchover import (
    CAPABILITIES_ANNOTATION,
    MAX_REQUEST_SECONDS,
    POD_SWITCHOVER,
    PREFERRED_ANNOTATION,
    READY_ANNOTATION,
    REQUEST_ANNOTATION,
    RESULT_ANNOTATION,
    request_time,
)

__all__ = [
    "CAPABILITIES_ANNOTATION",
    "MANAGER_COMPONENT",
    "MAX_REQUEST_SECONDS",
    "POD_SWITCHOVER",
    "PREFERRED_ANNOTATION",
    "READY_ANNOTATION",
    "REPORTING_COMPONENT",
    "REQUEST_ANNOTATION",
    "RESULT_ANNOTATION",
    "SWITCHOVER_REASON_PREFIX",
    "SwitchoverRequest",
    "SwitchoverResult",
    "capabilities",
]

REPORTING_COMPONENT = "cardano-forge-cli"
"""``reportingComponent`` of the Events the CLI records for its own actions."""
SWITCHOVER_REASON_PREFIX = "switchover to "
"""Overrides whose reason starts with this were written by ``switchover --to-region``; a later
switchover or ``resume`` may replace or remove them without asking."""


def capabilities(annotations: Mapping[str, str] | None) -> frozenset[str]:
    raw = (annotations or {}).get(CAPABILITIES_ANNOTATION, "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        requested = request_time(data.get("requestedAt"), "requestedAt")
        expires = request_time(data.get("expiresAt"), "expiresAt")
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
