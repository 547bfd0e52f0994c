"""Pure evaluation: values in, statuses and sentences out."""

from __future__ import annotations

import math

import pytest
from health_endpoint.checks import (
    DEFAULT_RULES,
    Direction,
    HealthReport,
    NoData,
    QueryContext,
    QueryValue,
    Rule,
    Status,
    cluster_probe_query,
    evaluate,
    evaluate_rule,
    render_query,
    unknown_report,
    worst,
)
from health_endpoint.networks import MAINNET
from health_endpoint.units import Unit

NOW = 1_759_387_511.0  # 2025-10-02T06:45:11Z, the seed's example time
CTX = QueryContext(cluster="us-east-1-prod", cluster_label="cluster", node_job="cardano-node",
                   network=MAINNET)  # fmt: skip

LAG = Rule(
    check="cardano_node",
    name="sync_lag",
    query="lag",
    description="Cardano node sync lag",
    message="Cardano node sync lag: {value} behind",
    unit=Unit.SECONDS,
    degraded=180,
    unhealthy=600,
)
PEERS = Rule(
    check="networking",
    name="peers",
    query="peers",
    description="Peers",
    message="Few peers: {value}",
    unhealthy_message="No peers",
    direction=Direction.BELOW,
    degraded=1,
    unhealthy=0,
    no_data=Status.DEGRADED,
)
LATENCY = Rule(
    check="networking",
    name="latency",
    query="latency",
    description="Latency",
    unit=Unit.MILLISECONDS,
    metric="network_latency_ms",
)


@pytest.mark.parametrize(
    ("values", "status", "error"),
    [
        ([0.0], Status.HEALTHY, None),
        ([179.0], Status.HEALTHY, None),
        ([180.0], Status.DEGRADED, "Cardano node sync lag: 3 minutes behind"),  # inclusive
        ([300.0], Status.DEGRADED, "Cardano node sync lag: 5 minutes behind"),
        ([600.0], Status.UNHEALTHY, "Cardano node sync lag: 10 minutes behind"),
        ([5.0, 700.0], Status.UNHEALTHY, "Cardano node sync lag: 11 minutes behind"),  # worst
        ([math.nan, 20.0], Status.HEALTHY, None),  # NaN series ignored
    ],
)
def test_threshold_above(values: list[float], status: Status, error: str | None) -> None:
    result = evaluate_rule(LAG, values, MAINNET, "")
    assert (result.status, result.error) == (status, error)


@pytest.mark.parametrize(
    ("values", "status", "error"),
    [
        ([3.0], Status.HEALTHY, None),
        ([1.0], Status.DEGRADED, "Few peers: 1"),
        ([0.0, 5.0], Status.UNHEALTHY, "No peers"),  # the lowest series counts when below
    ],
)
def test_threshold_below(values: list[float], status: Status, error: str | None) -> None:
    result = evaluate_rule(PEERS, values, MAINNET, "")
    assert (result.status, result.error) == (status, error)


@pytest.mark.parametrize("outcome", [[], [math.nan], NoData()])
def test_no_data_is_said_with_the_rules_policy(outcome: QueryValue) -> None:
    lag = evaluate_rule(LAG, outcome, MAINNET, " for cluster x")
    peers = evaluate_rule(PEERS, outcome, MAINNET, "")
    assert (lag.status, lag.error) == (
        Status.UNHEALTHY,
        "Cardano node sync lag: no data in Prometheus for cluster x",
    )
    assert (peers.status, peers.error) == (Status.DEGRADED, "Peers: no data in Prometheus")


def test_a_rejected_query_is_said_too() -> None:
    result = evaluate_rule(LAG, NoData("Prometheus rejected the query: parse error"), MAINNET, "")
    assert result.status is Status.UNHEALTHY
    assert result.error == "Cardano node sync lag: Prometheus rejected the query: parse error"


def test_worst() -> None:
    assert worst([]) is Status.HEALTHY
    assert worst([Status.HEALTHY, Status.DEGRADED]) is Status.DEGRADED
    assert worst([Status.UNHEALTHY, Status.DEGRADED, Status.HEALTHY]) is Status.UNHEALTHY


def test_report_document_healthy_like_the_seed() -> None:
    report = evaluate(
        [LAG, PEERS, LATENCY],
        {
            "cardano_node/sync_lag": [12.0],
            "networking/peers": [3.0],
            "networking/latency": [12.2],
        },
        CTX,
        NOW,
        cluster_targets=[2.0],
    )
    assert report.http_status == 200
    assert report.document() == {
        "status": "healthy",
        "timestamp": "2025-10-02T06:45:11Z",
        "cluster": "us-east-1-prod",
        "checks": {"cardano_node": "healthy", "networking": "healthy"},
        "metrics": {"network_latency_ms": 12},
    }


def test_report_unhealthy_and_degraded() -> None:
    unhealthy = evaluate(
        [LAG, PEERS], {"cardano_node/sync_lag": [300.0], "networking/peers": [0.0]}, CTX, NOW
    )
    degraded = evaluate(
        [LAG, PEERS], {"cardano_node/sync_lag": [300.0], "networking/peers": [4.0]}, CTX, NOW
    )
    assert unhealthy.http_status == 503
    assert unhealthy.document()["status"] == "unhealthy"
    assert unhealthy.document()["checks"] == {"cardano_node": "degraded", "networking": "unhealthy"}
    assert unhealthy.document()["errors"] == ["Cardano node sync lag: 5 minutes behind", "No peers"]
    assert degraded.http_status == 200  # degraded alone is still 200
    assert degraded.document()["status"] == "degraded"


def test_metric_only_rule_never_adds_a_check_or_an_error() -> None:
    report = evaluate([LAG, LATENCY], {"cardano_node/sync_lag": [1.0]}, CTX, NOW)
    assert report.checks == {"cardano_node": Status.HEALTHY}
    assert report.metrics == {}
    assert report.errors == []


def test_unknown_cluster_when_it_has_no_targets() -> None:
    for targets in ([], [0.0], NoData()):
        report = evaluate([LAG], {"cardano_node/sync_lag": [1.0]}, CTX, NOW, targets)
        assert report.status is Status.UNKNOWN
        assert report.http_status == 503
        assert report.document() == {
            "status": "unknown",
            "timestamp": "2025-10-02T06:45:11Z",
            "cluster": "us-east-1-prod",
            "errors": [
                "Unknown cluster: Prometheus has no scrape targets labelled "
                'cluster="us-east-1-prod"'
            ],
        }


def test_unknown_report() -> None:
    report = unknown_report("c", "Cannot reach Prometheus: refused", NOW)
    assert isinstance(report, HealthReport)
    assert report.http_status == 503
    assert report.document()["errors"] == ["Cannot reach Prometheus: refused"]


def test_render_query_with_and_without_a_cluster_label() -> None:
    template = 'max(up{job="$node_job",$selector}) + $wallclock_slot * $slot_length_seconds'
    assert render_query(template, CTX) == (
        'max(up{job="cardano-node",cluster="us-east-1-prod"})'
        " + (4492800 + (time() - 1596059091) / 1) * 1"
    )
    off = QueryContext("any", None, "cardano-node", MAINNET)
    assert render_query('up{job="$node_job",$selector}', off) == 'up{job="cardano-node",}'
    assert cluster_probe_query(off) is None
    assert cluster_probe_query(CTX) == 'count(up{cluster="us-east-1-prod"})'


def test_render_query_escapes_label_values() -> None:
    ctx = QueryContext('we"ird\\', "cluster", "cardano-node", MAINNET)
    assert render_query("up{$selector}", ctx) == 'up{cluster="we\\"ird\\\\"}'


def test_default_rules_cover_the_documented_checks() -> None:
    checks = {rule.check for rule in DEFAULT_RULES}
    assert checks == {"cardano_node", "networking", "storage", "system"}
    assert "database" not in checks  # nothing to ask by default: left out, not "healthy"
    metrics = {rule.metric for rule in DEFAULT_RULES if rule.metric}
    assert metrics == {"cpu_usage", "memory_usage", "disk_usage"}
    for rule in DEFAULT_RULES:
        render_query(rule.query, CTX)  # every placeholder is known
