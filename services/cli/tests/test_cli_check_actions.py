"""check's pure parts (environment, values, permissions, URLs) and the hand-over gap."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cardano_forge_cli.actions import ForgerTrace, apply_change, handover_gap
from cardano_forge_cli.check import (
    FAIL,
    OK,
    SKIP,
    check_values,
    env_findings,
    env_from_values,
    manager_env_from_manifests,
    required_permissions,
    service_proxy,
)
from cardano_forge_cli.contract import SwitchoverRequest, SwitchoverResult, capabilities
from cardano_forge_cli.errors import CliError
from cardano_forge_cli.kube import Conflict
from cardano_forge_cli.model import PodFacts
from cardano_forge_cli.plan import OverrideChange
from cli_builders import pod


def chart_env(**values: object) -> dict[str, str]:
    return env_from_values(values, release="bp", namespace="cardano")


def test_default_values_pass_the_timing_check_with_the_figures() -> None:
    findings = env_findings(chart_env())
    assert [(f.status, f.check) for f in findings] == [(OK, "timing"), (OK, "config")]
    assert findings[0].message == (
        "retry period 2 + renew deadline 10 + request timeout 1 + demotion 0.5 + margin 1 = "
        "14.5 s <= lease duration 15 s"
    )


def test_unsafe_timing_names_the_value_to_change_once() -> None:
    env = chart_env(forgeManager={"lease": {"durationSeconds": 14}})
    findings = env_findings(env)
    assert [(f.status, f.check) for f in findings] == [(FAIL, "timing")]
    assert "raise LEASE_DURATION to at least 14.5" in findings[0].message
    env = chart_env(forgeManager={"extraEnv": [{"name": "KUBE_REQUEST_TIMEOUT", "value": "3"}]})
    assert "KUBE_REQUEST_TIMEOUT=3 exceeds LEASE_RETRY_PERIOD=2" in env_findings(env)[0].message


def test_cluster_settings_are_checked_too() -> None:
    env = chart_env(
        forgeManager={
            "clusterManagement": {
                "enabled": True,
                "clusterName": "east",
                "priority": 1,
                "healthCheck": {
                    "enabled": True,
                    "endpoint": "http://h/health",
                    "interval": 10,
                    "timeout": 10,
                },
            }
        }
    )
    findings = env_findings(env)
    assert (
        findings[-1].status == FAIL
        and "HEALTH_CHECK_TIMEOUT=10 must be less" in findings[-1].message
    )
    env = chart_env(forgeManager={"clusterManagement": {"enabled": True, "clusterName": "east"}})
    assert env_findings(env)[-1].message == "region east, priority 1, pool Lease cardano-forge-pool"


def test_values_without_helm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no helm, even where `make` put one on PATH
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"forgeManager": {"lease": {"renewDeadlineSeconds": 12}}}))
    findings = check_values([values], chart=None, helm="", release="bp", namespace="n")
    assert findings[0].status == SKIP
    assert findings[1].status == FAIL and "LEASE_RENEW_DEADLINE" in findings[1].message


def test_values_files_that_are_not_values(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [")
    with pytest.raises(CliError, match="is not valid YAML"):
        check_values([bad], chart=None, helm="", release="bp", namespace="n")
    bad.write_text("- 1\n")
    with pytest.raises(CliError, match="must hold a mapping at the top, not list"):
        check_values([bad], chart=None, helm="", release="bp", namespace="n")
    with pytest.raises(CliError, match="cannot read values file"):
        check_values([tmp_path / "missing.yaml"], chart=None, helm="", release="bp", namespace="n")


def test_env_from_rendered_manifests() -> None:
    text = yaml.safe_dump_all(
        [
            {"kind": "Service", "metadata": {"name": "x"}},
            {
                "kind": "StatefulSet",
                "metadata": {"name": "bp", "namespace": "n"},
                "spec": {
                    "replicas": 2,
                    "template": {
                        "spec": {
                            "initContainers": [
                                {
                                    "name": "forge-manager",
                                    "env": [
                                        {
                                            "name": "POD_NAME",
                                            "valueFrom": {
                                                "fieldRef": {"fieldPath": "metadata.name"}
                                            },
                                        },
                                        {"name": "LEASE_DURATION", "value": "20"},
                                    ],
                                }
                            ]
                        }
                    },
                },
            },
        ]
    )
    ((name, env),) = manager_env_from_manifests(text, namespace="n")
    assert (name, env["POD_NAME"], env["LEASE_DURATION"], env["NAMESPACE"]) == (
        "bp",
        "bp-0",
        "20",
        "n",
    )


def test_required_permissions_follow_the_environment() -> None:
    local, coord = required_permissions({"NAMESPACE": "east", "LEASE_NAME": "l"})
    assert [p.describe() for p in local] == [
        "get leases.coordination.k8s.io l in east",
        "update leases.coordination.k8s.io l in east",
        "create leases.coordination.k8s.io in east",
    ]
    assert coord == []
    _, coord = required_permissions(
        {
            "NAMESPACE": "east",
            "ENABLE_CLUSTER_MANAGEMENT": "true",
            "CLUSTER_NAME": "us-east",
            "COORDINATION_NAMESPACE": "pool",
            "POOL_LEASE_NAME": "p",
        }
    )
    described = [p.describe() for p in coord]
    assert "update leases.coordination.k8s.io p-us-east in pool" in described
    assert "update cardanoforgeclusters/status.cardano.io us-east in pool" in described
    review = coord[-1].review()["spec"]["resourceAttributes"]
    assert review == {
        "verb": "update",
        "group": "cardano.io",
        "resource": "cardanoforgeclusters",
        "namespace": "pool",
        "name": "us-east",
        "subresource": "status",
    }


def test_service_urls_go_through_the_service_proxy() -> None:
    assert service_proxy("http://bp-health.east.svc:8080/api/v1/health/cluster/east") == (
        "east",
        "http:bp-health:8080",
        "api/v1/health/cluster/east",
        "bp-health.east.svc",
    )
    assert service_proxy("https://h.ns.svc.cluster.local/x?y=1") == (
        "ns",
        "https:h:443",
        "x?y=1",
        "h.ns.svc.cluster.local",
    )
    assert service_proxy("https://health.example.com/health") is None


# ---- the hand-over gap -----------------------------------------------------------------------
def test_gap_bounds_from_sampled_metrics() -> None:
    old = ForgerTrace(pod("east-0", "east"))
    forging, stopped = (
        PodFacts(True, forging=True, forging_since=50.0),
        PodFacts(True, forging=False),
    )
    old.observe(forging, 100.0)
    old.observe(forging, 100.2)
    old.observe(stopped, 100.4)
    old.observe(PodFacts.unknown("timeout"), 100.6)  # an unreadable sample changes nothing
    old.observe(stopped, 100.8)
    assert (old.last_forging, old.first_stopped, old.since) == (100.2, 100.4, 50.0)
    gap = handover_gap(old, 101.5)
    assert gap.at_most == pytest.approx(1.3) and gap.at_least == pytest.approx(1.1)
    assert not gap.overlap
    assert handover_gap(old, 100.1).overlap  # started before a sample in which the old still forged
    assert handover_gap(old, None) == handover_gap(None, 5.0)


def test_contract_encodings() -> None:
    assert capabilities({"cardano.io/forge-manager-capabilities": " a/v1 ,pod-switchover/v1,"}) == {
        "a/v1",
        "pod-switchover/v1",
    }
    assert capabilities(None) == frozenset()
    for bad in (
        "[]",
        '{"to": "x"}',
        '{"to": "x", "id": "1", "requestedAt": "2026-01-01T00:00:00Z", '
        '"expiresAt": "2025-01-01T00:00:00Z"}',
    ):
        with pytest.raises(ValueError):
            SwitchoverRequest.decode(bad)
    result = SwitchoverResult.decode('{"id": "a", "outcome": "refused", "reason": "not synced"}')
    assert (result.outcome, result.reason) == ("refused", "not synced")
    with pytest.raises(ValueError):
        SwitchoverResult.decode('{"id": "a", "outcome": "maybe"}')


class ScriptedKube:
    """The two calls apply_change makes, answered from a script (the project's seam: Kube)."""

    def __init__(self, conflicts: int, override_now: dict[str, object] | None) -> None:
        self.conflicts = conflicts
        self.override_now = override_now
        self.patches: list[dict[str, object]] = []

    def merge_patch(self, what: str, path: str, body: dict[str, object]) -> None:
        self.patches.append(body)
        if len(self.patches) <= self.conflicts:
            raise Conflict(f"cannot {what}: it changed since it was read")

    def get(self, what: str, path: str) -> dict[str, object]:
        rv = str(100 + len(self.patches))
        return {"metadata": {"resourceVersion": rv}, "spec": {"override": self.override_now}}


def test_a_status_write_in_between_is_retried_against_the_new_version() -> None:
    previous = {"priority": 2, "reason": "old", "expiresAt": "2026-01-01T00:00:00Z"}
    change = OverrideChange("west", "100", {"priority": 1}, previous, "why")
    kube = ScriptedKube(conflicts=2, override_now=previous)  # only the status changed
    apply_change(kube, "ns", change)  # type: ignore[arg-type]
    versions = [p["metadata"]["resourceVersion"] for p in kube.patches]  # type: ignore[index]
    assert versions == ["100", "101", "102"]
    assert all(p["spec"] == {"override": {"priority": 1}} for p in kube.patches)


def test_an_override_changed_by_someone_else_is_not_overwritten() -> None:
    previous = {"priority": 2, "reason": "old", "expiresAt": "2026-01-01T00:00:00Z"}
    change = OverrideChange("west", "100", {"priority": 1}, previous, "why")
    kube = ScriptedKube(conflicts=1, override_now={"forgeState": "Disabled", "reason": "bob"})
    with pytest.raises(Conflict):
        apply_change(kube, "ns", change)  # type: ignore[arg-type]
    assert len(kube.patches) == 1


class RenewingLease:
    """A Lease whose holder renews between every read and write of the CLI (``renews`` times),
    then holds still: the seam Kube's get and merge_patch."""

    def __init__(self, renews: int, holder: str = "east-0") -> None:
        self.renews = renews
        self.version = 100
        self.holder = holder
        self.annotations = {"cardano.io/forge-manager-capabilities": "pod-switchover/v1"}
        self.writes: list[str] = []

    def get(self, what: str, path: str) -> dict[str, object]:
        return {
            "metadata": {
                "name": "east-leader",
                "resourceVersion": str(self.version),
                "annotations": dict(self.annotations),
            },
            "spec": {"holderIdentity": self.holder},
        }

    def merge_patch(self, what: str, path: str, body: dict[str, Any]) -> None:
        self.writes.append(body["metadata"]["resourceVersion"])
        if self.renews > 0:
            self.renews -= 1
            self.version += 1
            raise Conflict(f"cannot {what}: it changed since it was read")
        self.annotations.update(body["metadata"]["annotations"])
        self.version += 1


def _request_write(kube: RenewingLease) -> None:
    from types import SimpleNamespace  # noqa: PLC0415

    from cardano_forge_cli.main import _write_request  # noqa: PLC0415
    from cardano_forge_cli.model import LeaseInfo  # noqa: PLC0415

    planned = LeaseInfo.from_api(kube.get("", ""))
    request = SwitchoverRequest(
        "east-1", "r1", "alice", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    )
    _write_request(SimpleNamespace(kube=kube), pod("east-1", "east"), planned, request)  # type: ignore[arg-type]


def test_a_pod_switchover_request_is_written_against_the_holders_latest_renew() -> None:
    kube = RenewingLease(renews=3)
    _request_write(kube)
    assert kube.writes == ["100", "101", "102", "103"]
    assert "cardano.io/switchover-request" in kube.annotations


def test_a_pod_switchover_request_is_not_written_when_the_holder_changed() -> None:
    kube = RenewingLease(renews=1)
    original = kube.merge_patch

    def conflict_then_new_holder(what: str, path: str, body: dict[str, Any]) -> None:
        kube.holder = "east-2"
        original(what, path, body)

    kube.merge_patch = conflict_then_new_holder  # type: ignore[method-assign]
    with pytest.raises(CliError, match="changed hands while the request was prepared"):
        _request_write(kube)
    assert "cardano.io/switchover-request" not in kube.annotations
