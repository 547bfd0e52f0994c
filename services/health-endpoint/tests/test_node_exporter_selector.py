"""Which node_exporter series the disk, CPU and memory rules read (``NODE_EXPORTER_SELECTOR``).

In a Prometheus of one region the node_exporter series carry no cluster label (external labels
are only added on the way out, to a global view): selecting them by the cluster label finds
nothing there. The cardano-node series keep the cluster selector (the chart's ServiceMonitor adds
the label); the node_exporter series get their own matchers.
"""

from __future__ import annotations

import pytest
from health_endpoint.checks import DEFAULT_RULES, QueryContext, render_query
from health_endpoint.config import ConfigError, load_config, load_settings
from health_endpoint.networks import MAINNET

HOST_RULES = {"storage/disk_usage", "system/cpu_usage", "system/memory_usage"}
ENV = {"PROMETHEUS_URL": "http://prometheus:9090"}


def queries(node_exporter_selector: str | None) -> dict[str, str]:
    ctx = QueryContext(
        cluster="east",
        cluster_label="cluster",
        node_job="cardano-node",
        network=MAINNET,
        node_exporter_selector=node_exporter_selector,
    )
    return {rule.rule_id: render_query(rule.query, ctx) for rule in DEFAULT_RULES}


def test_unset_keeps_the_cluster_selector_everywhere() -> None:
    for rule_id, query in queries(None).items():
        assert 'cluster="east"' in query, rule_id


def test_per_region_matchers_leave_the_cluster_label_out_of_host_rules_only() -> None:
    rendered = queries('job="node-exporter"')
    for rule_id, query in rendered.items():
        if rule_id in HOST_RULES:
            assert 'cluster="east"' not in query, rule_id
            assert 'job="node-exporter"' in query, rule_id
        else:
            assert 'cluster="east"' in query, rule_id
            assert "node-exporter" not in query, rule_id


def test_global_matchers_can_add_the_cluster_selector() -> None:
    for rule_id in HOST_RULES:
        query = queries('job="node-exporter",$selector')[rule_id]
        assert 'job="node-exporter",cluster="east"' in query


def test_empty_selects_every_node_exporter_series() -> None:
    for rule_id in HOST_RULES:
        query = queries("")[rule_id]
        assert "cluster=" not in query and "job=" not in query


def test_cpu_rule_divides_by_all_cpu_time_over_the_same_window() -> None:
    query = queries('job="node-exporter"')["system/cpu_usage"]
    idle = 'rate(node_cpu_seconds_total{mode="idle",job="node-exporter"}[5m])'
    total = 'rate(node_cpu_seconds_total{job="node-exporter"}[5m])'
    assert f"sum by (instance) ({idle}) / sum by (instance) ({total})" in query


def test_environment() -> None:
    assert load_settings(ENV).node_exporter_selector is None
    settings = load_settings({**ENV, "NODE_EXPORTER_SELECTOR": ' job="node-exporter" '})
    assert settings.node_exporter_selector == 'job="node-exporter"'
    assert load_settings({**ENV, "NODE_EXPORTER_SELECTOR": ""}).node_exporter_selector == ""
    config = load_config({**ENV, "NODE_EXPORTER_SELECTOR": 'job=~"node.*",$selector'})
    assert config.settings.node_exporter_selector == 'job=~"node.*",$selector'


@pytest.mark.parametrize("bad", ["node-exporter", 'job="a" or up', "job=", '{job="a"}'])
def test_bad_selector_is_one_clear_line(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"NODE_EXPORTER_SELECTOR=.* is not a list of label"):
        load_settings({**ENV, "NODE_EXPORTER_SELECTOR": bad})
