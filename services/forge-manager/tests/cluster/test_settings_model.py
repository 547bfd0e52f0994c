"""Environment parsing and CardanoForgeCluster parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from forge_manager.cluster.liveness import LivenessTracker
from forge_manager.cluster.model import (
    ForgeState,
    ParseError,
    effective,
    holder_identity,
    holder_region,
    parse_duration,
    parse_region,
)
from forge_manager.cluster.settings import ClusterConfigError, load_cluster_settings

BASE = {
    "ENABLE_CLUSTER_MANAGEMENT": "true",
    "CLUSTER_NAME": "us-east-1-prod",
    "NAMESPACE": "cardano",
}


def test_defaults() -> None:
    s = load_cluster_settings(BASE)
    assert s.enabled
    assert (s.crd_group, s.crd_version, s.crd_plural) == (
        "cardano.io",
        "v1",
        "cardanoforgeclusters",
    )
    assert s.crd_name == "us-east-1-prod"
    assert s.coordination_namespace == "cardano"
    assert s.coordination_kubeconfig is None
    assert s.pool_lease_name == "cardano-forge-pool"
    assert s.priority == 1
    hc = s.health_check
    assert (hc.enabled, hc.interval, hc.timeout, hc.failure_threshold) == (False, 30.0, 10.0, 3)


def test_disabled_by_default() -> None:
    assert not load_cluster_settings({}).enabled


def test_seed_example_environment() -> None:
    s = load_cluster_settings(
        {
            **BASE,
            "CLUSTER_PRIORITY": "2",
            "HEALTH_CHECK_ENDPOINT": "https://monitoring.example.com/api/v1/health/cluster/x",
            "HEALTH_CHECK_INTERVAL": "30",
            "HEALTH_CHECK_TIMEOUT": "5s",
            "HEALTH_CHECK_FAILURE_THRESHOLD": "4",
            "CLUSTER_CRD_NAME": "us-east-1",
            "COORDINATION_KUBECONFIG": "/etc/coordination/kubeconfig",
            "POOL_LEASE_NAME": "pool-abc",
        }
    )
    assert s.priority == 2 and s.crd_name == "us-east-1" and s.pool_lease_name == "pool-abc"
    assert s.health_check.enabled and s.health_check.timeout == 5.0
    assert s.coordination_kubeconfig == Path("/etc/coordination/kubeconfig")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ENABLE_CLUSTER_MANAGEMENT": "maybe"}, "ENABLE_CLUSTER_MANAGEMENT='maybe' is not valid"),
        ({"CLUSTER_NAME": ""}, "CLUSTER_NAME is not set"),
        ({"CLUSTER_NAME": "US_East"}, "CLUSTER_NAME='US_East' is not valid"),
        ({"CLUSTER_PRIORITY": "high"}, "CLUSTER_PRIORITY='high' is not valid"),
        ({"CLUSTER_PRIORITY": "0"}, "CLUSTER_PRIORITY='0' is not valid"),
        ({"CLUSTER_PRIORITY": "100"}, "CLUSTER_PRIORITY='100' is not valid"),
        ({"HEALTH_CHECK_ENDPOINT": "ftp://x"}, "HEALTH_CHECK_ENDPOINT='ftp://x' is not valid"),
        ({"HEALTH_CHECK_INTERVAL": "soon"}, "HEALTH_CHECK_INTERVAL='soon' is not valid"),
        ({"HEALTH_CHECK_TIMEOUT": "0"}, "HEALTH_CHECK_TIMEOUT='0' is not valid"),
        (
            {"HEALTH_CHECK_TIMEOUT": "40"},
            "HEALTH_CHECK_TIMEOUT=40 must be less than HEALTH_CHECK_INTERVAL",
        ),
        ({"HEALTH_CHECK_FAILURE_THRESHOLD": "0"}, "HEALTH_CHECK_FAILURE_THRESHOLD='0'"),
        ({"HEALTH_CHECK_TOKEN_FILE": "token"}, "HEALTH_CHECK_TOKEN_FILE='token' is not valid"),
        ({"CLUSTER_CRD_GROUP": "Cardano.IO"}, "CLUSTER_CRD_GROUP='Cardano.IO' is not valid"),
        ({"COORDINATION_KUBECONFIG": "rel/kc"}, "COORDINATION_KUBECONFIG='rel/kc' is not valid"),
        ({"POOL_LEASE_NAME": "Pool"}, "POOL_LEASE_NAME='Pool' is not valid"),
        ({"POOL_LEASE_NAME": "p" * 64}, "POOL_LEASE_NAME='ppp"),
        ({"CLUSTER_STALE_AFTER": "9"}, "CLUSTER_STALE_AFTER=9 must exceed twice"),
    ],
)
def test_errors_are_one_line_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ClusterConfigError) as err:
        load_cluster_settings({**BASE, **env})
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


# ---- model ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("30s", 30.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("2.5s", 2.5),
        (7, 7.0),
        ("10", 10.0),
    ],
)
def test_durations(raw: Any, seconds: float) -> None:
    assert parse_duration(raw, "x") == seconds


@pytest.mark.parametrize("raw", ["", "s", "10 parsecs", "-1s", "0s", True, None, "1m-3s"])
def test_bad_durations(raw: Any) -> None:
    with pytest.raises(ParseError):
        parse_duration(raw, "x")


def obj(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "east", "generation": 3, "resourceVersion": "42"},
        "spec": {"region": "east", "priority": 1, "forgeState": "Priority-based", **spec},
    }


def test_parse_full_object() -> None:
    rec = parse_region(
        {
            **obj(
                healthCheck={
                    "enabled": True,
                    "endpoint": "https://h/x",
                    "interval": "1m",
                    "timeout": "15s",
                    "failureThreshold": 5,
                },
                override={
                    "forgeState": "Disabled",
                    "reason": "upgrade",
                    "expiresAt": "2030-01-01T06:00:00Z",
                },
            ),
            "status": {
                "effectiveState": "Disabled",
                "effectivePriority": 1,
                "observedGeneration": 3,
                "healthStatus": {"healthy": True, "consecutiveFailures": 0},
            },
        }
    )
    assert rec.spec is not None and rec.spec_error is None
    assert rec.spec.health_check is not None and rec.spec.health_check.interval == 60.0
    assert rec.spec.override is not None
    assert rec.spec.override.expires_at == datetime(2030, 1, 1, 6, tzinfo=UTC)
    assert rec.status is not None and rec.status.effective_state is ForgeState.DISABLED
    assert rec.status_current and rec.resource_version == "42"


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"priority": True}, "spec.priority must be an integer, got True"),
        ({"forgeState": "On"}, "spec.forgeState must be one of"),
        ({"healthCheck": {"endpoint": "gopher://x"}}, "spec.healthCheck.endpoint must be"),
        ({"healthCheck": {"interval": "often"}}, "spec.healthCheck.interval must be a duration"),
        (
            {"override": {"forgeState": "Disabled", "expiresAt": "tomorrow"}},
            "spec.override.expiresAt",
        ),
        (
            {"override": {"priority": 1, "expiresAt": "2030-01-01T00:00:00"}},
            "spec.override.expiresAt",
        ),
    ],
)
def test_parse_errors_are_recorded_not_raised(spec: dict[str, Any], error: str) -> None:
    rec = parse_region(obj(**spec))
    assert rec.spec is None
    assert rec.spec_error is not None and rec.spec_error.startswith(error)


def test_missing_spec() -> None:
    rec = parse_region({"metadata": {"name": "east"}})
    assert rec.spec is None and rec.spec_error == "spec is missing"


def test_effective_priority_penalty_and_override() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    rec = parse_region(
        obj(override={"priority": 7, "reason": "r", "expiresAt": "2026-01-02T00:00:00Z"})
    )
    assert rec.spec is not None
    e = effective(rec.spec, demoted=True, now_wall=now)
    assert (e.state, e.priority, e.demoted) == (ForgeState.PRIORITY_BASED, 107, True)
    later = effective(rec.spec, demoted=False, now_wall=datetime(2026, 1, 3, tzinfo=UTC))
    assert later.priority == 1


def test_holder_identity_round_trip() -> None:
    assert holder_region(holder_identity("east", "bp-0")) == "east"
    assert holder_region("no-separator") is None
    assert holder_region(None) is None


# ---- liveness ------------------------------------------------------------------------------------
def test_liveness_is_judged_by_when_we_saw_the_heartbeat_change() -> None:
    t = LivenessTracker()
    west = parse_region({**obj(), "metadata": {"name": "west"}})
    (v,) = t.observe([west], {"west": "1"}, now=100.0)
    assert (v.changed_at, v.confirmed) == (100.0, False)
    (v,) = t.observe([west], {"west": "1"}, now=105.0)
    assert (v.changed_at, v.confirmed) == (100.0, False)
    (v,) = t.observe([west], {"west": "2"}, now=107.0)
    assert (v.changed_at, v.confirmed) == (107.0, True)
    (v,) = t.observe([west], {}, now=108.0)
    assert v.changed_at == float("-inf") and not v.confirmed
    (v,) = t.observe([west], {"west": "2"}, now=109.0)
    assert (v.changed_at, v.confirmed) == (109.0, False)  # forgotten: starts over


def test_a_watched_heartbeat_change_is_timed_from_when_the_watch_saw_it() -> None:
    t = LivenessTracker()
    west = parse_region({**obj(), "metadata": {"name": "west"}})
    (v,) = t.observe([west], {"west": "1"}, now=100.0, seen_at={"west": 40.0})
    assert (v.changed_at, v.confirmed) == (100.0, False)  # first sight: possibly alive from now
    (v,) = t.observe([west], {"west": "2"}, now=110.0, seen_at={"west": 103.5})
    assert (v.changed_at, v.confirmed) == (103.5, True)  # not when this cycle looked
    (v,) = t.observe([west], {"west": "3"}, now=111.0, seen_at={"west": 90.0})
    assert v.changed_at == 103.5  # never earlier than a change already seen
    (v,) = t.observe([west], {"west": "4"}, now=112.0, seen_at={"west": 500.0})
    assert v.changed_at == 112.0  # never later than now
