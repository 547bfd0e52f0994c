"""Pod switchover: handing local leadership to a named pod at an operator's request.

The request travels on the local Lease itself (the CLI's ``switchover --to-pod``; the contract is
in ``services/cli/README.md``). Everything here is pure: annotations and facts in, a step and a
reason out; :mod:`forge_manager.manager` performs the writes.

* The **holder** advertises :data:`CAPABILITIES` on every acquire and renew. It hands over only
  after the named pod answered :data:`READY_ANNOTATION` for the request's ``id`` (the target
  judged itself eligible: credentials usable, node up and synced), by the usual demotion
  (credentials removed, node signalled, confirmed, the node given its budget to act) and a
  release naming the target in :data:`PREFERRED_ANNOTATION`.
* The **target** answers ready while it is eligible, or refuses (with its reason) when it is not;
  it acquires a release naming it at once, and its acquire writes the result ``done`` and removes
  the request.
* **Other pods stand aside**: a release naming another pod is taken only as an unchanged record
  is (a lease duration in their own observation), so the named pod wins, and a target that died
  meanwhile costs one lease duration, as a crashed leader does.
* A request past its ``expiresAt`` is answered ``expired`` and removed by whoever writes next.

Writes by the CLI or a follower change the Lease's resourceVersion, so the holder's next renew
gets 409. The manager reads the record again and, when it is still the holder's own write (its
name and the renewTime it wrote: only annotations changed), renews against the new version with
its deadline unchanged; followers see a change and wait longer, never shorter.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

# The contract with the CLI (which takes these names from here: services/cli, contract.py).
CAPABILITIES_ANNOTATION = "cardano.io/forge-manager-capabilities"
"""Comma-separated capabilities of the forge manager that wrote the Lease record."""
POD_SWITCHOVER = "pod-switchover/v1"
"""The capability: this holder honours :data:`REQUEST_ANNOTATION` as described above."""
CAPABILITIES = POD_SWITCHOVER
REQUEST_ANNOTATION = "cardano.io/switchover-request"
READY_ANNOTATION = "cardano.io/switchover-ready"
"""The named pod's answer ``{"id", "pod"}``: it is eligible; the holder hands over after it."""
RESULT_ANNOTATION = "cardano.io/switchover-result"
PREFERRED_ANNOTATION = "cardano.io/preferred-holder"
"""Written by the holder's release: the pod the Lease was handed to (the others stand aside)."""
MAX_REQUEST_SECONDS = 300.0
"""Longest request honoured (``expiresAt - requestedAt``); a longer one is refused. The managers'
stand-aside window is bounded by it."""
FAST_POLL_S = 0.2
"""How often a target that answered ready reads the Lease, so it takes the release at once."""

Edits = dict[str, str | None]
"""Annotation changes for a write: a value sets, None removes."""


@dataclass(frozen=True)
class Request:
    to: str
    id: str
    requested_by: str
    requested_at: float
    """Wall-clock seconds."""
    expires_at: float


def request_time(value: object, field: str) -> datetime:
    """A request's ``requestedAt`` or ``expiresAt`` (RFC 3339 with a time zone) in UTC; raises
    ValueError (one line naming ``field``) on anything else."""
    if not isinstance(value, str):
        raise ValueError(f"{field} is missing")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"{field} has no time zone")
    return parsed.astimezone(UTC)


def parse_request(raw: str) -> Request:
    """Raises ValueError (one line) on anything that is not a well-formed request."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    to, ident = data.get("to"), data.get("id")
    if not isinstance(to, str) or not to or not isinstance(ident, str) or not ident:
        raise ValueError("'to' and 'id' must be non-empty strings")
    requested = request_time(data.get("requestedAt"), "requestedAt").timestamp()
    expires = request_time(data.get("expiresAt"), "expiresAt").timestamp()
    if not requested < expires:
        raise ValueError("expiresAt must be after requestedAt")
    if expires - requested > MAX_REQUEST_SECONDS + 1:
        raise ValueError(f"a request may last at most {MAX_REQUEST_SECONDS:g} s")
    return Request(to, ident, str(data.get("requestedBy", "")), requested, expires)


def result(request_id: str, outcome: str, reason: str) -> str:
    return json.dumps({"id": request_id, "outcome": outcome, "reason": reason}, sort_keys=True)


def ready_answer(request_id: str, pod: str) -> str:
    return json.dumps({"id": request_id, "pod": pod}, sort_keys=True)


def _ready_for(annotations: Mapping[str, str], req: Request) -> bool:
    try:
        data = json.loads(annotations.get(READY_ANNOTATION) or "null")
    except json.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("id") == req.id and data.get("pod") == req.to


def _closing(request_id: str, outcome: str, reason: str) -> Edits:
    return {
        RESULT_ANNOTATION: result(request_id, outcome, reason),
        REQUEST_ANNOTATION: None,
        READY_ANNOTATION: None,
    }


class Step(enum.Enum):
    NONE = "none"
    WRITE = "write"
    """Write ``edits`` (the holder: with its next renew; a follower: by itself)."""
    HAND_OVER = "hand_over"
    """The holder: demote, confirm, release naming ``to``."""


@dataclass(frozen=True)
class Plan:
    step: Step
    reason: str
    edits: Edits
    to: str | None = None
    waiting: bool = False
    """A live request names this pod and it answered ready: read the Lease often."""


NOTHING = Plan(Step.NONE, "", {})


def _request(annotations: Mapping[str, str]) -> tuple[Request | None, str]:
    raw = annotations.get(REQUEST_ANNOTATION)
    if not raw:
        return None, ""
    try:
        return parse_request(raw), ""
    except ValueError as exc:
        return None, str(exc)


def _raw_id(annotations: Mapping[str, str]) -> str:
    try:
        data = json.loads(annotations.get(REQUEST_ANNOTATION) or "null")
    except json.JSONDecodeError:
        return ""
    return str(data.get("id", "")) if isinstance(data, dict) else ""


def plan_holder(annotations: Mapping[str, str], identity: str, now_wall: float) -> Plan:
    """What the holder of the local Lease does about a request on its record."""
    req, problem = _request(annotations)
    if req is None:
        if problem:
            return Plan(
                Step.WRITE,
                f"switchover request refused: {problem}",
                _closing(_raw_id(annotations), "refused", f"malformed request: {problem}"),
            )
        return NOTHING
    if now_wall >= req.expires_at:
        return Plan(
            Step.WRITE,
            f"switchover request {req.id} to {req.to} expired",
            _closing(req.id, "expired", f"{req.to} did not become the leader in time"),
        )
    if req.to == identity:
        return Plan(
            Step.WRITE,
            f"switchover request {req.id}: {identity} already leads",
            _closing(req.id, "done", f"{identity} leads"),
        )
    if _ready_for(annotations, req):
        return Plan(
            Step.HAND_OVER,
            f"handing over to {req.to} at the request of {req.requested_by or 'an operator'} "
            f"({req.id}): it answered ready",
            {},
            to=req.to,
        )
    return Plan(Step.NONE, f"switchover to {req.to} requested; waiting for it to answer", {})


def plan_follower(
    annotations: Mapping[str, str],
    identity: str,
    now_wall: float,
    *,
    held: bool,
    unable: str,
) -> Plan:
    """What a pod that does not hold the Lease does about a request naming it. ``unable``: why
    this pod may not lead now (empty when it may); ``held``: the record has a holder."""
    req, _ = _request(annotations)
    if req is None or req.to != identity or now_wall >= req.expires_at:
        return NOTHING
    if unable:
        return Plan(
            Step.WRITE,
            f"switchover request {req.id} refused: {unable}",
            _closing(req.id, "refused", f"{identity}: {unable}"),
        )
    if _ready_for(annotations, req):
        return Plan(Step.NONE, f"ready to take over ({req.id})", {}, waiting=True)
    if not held:
        return Plan(Step.NONE, f"switchover request {req.id} waits for a holder", {})
    return Plan(
        Step.WRITE,
        f"switchover request {req.id}: ready to take over",
        {READY_ANNOTATION: ready_answer(req.id, identity)},
        waiting=True,
    )


def acquire_edits(annotations: Mapping[str, str], identity: str, now_wall: float) -> Edits:
    """Annotation changes an acquire makes: the preference is spent; a request naming this pod
    is done, an expired or malformed one is closed."""
    edits: Edits = {PREFERRED_ANNOTATION: None, CAPABILITIES_ANNOTATION: CAPABILITIES}
    req, problem = _request(annotations)
    if req is not None and req.to == identity:
        edits.update(_closing(req.id, "done", f"{identity} leads"))
    elif req is not None and now_wall >= req.expires_at:
        edits.update(_closing(req.id, "expired", f"{req.to} did not become the leader in time"))
    elif problem:
        edits.update(_closing(_raw_id(annotations), "refused", f"malformed request: {problem}"))
    return edits


def stands_aside(annotations: Mapping[str, str], identity: str) -> str | None:
    """The pod a released record was handed to, when it is not this one (None otherwise)."""
    preferred = annotations.get(PREFERRED_ANNOTATION) or None
    return preferred if preferred is not None and preferred != identity else None
