"""Environment validation and the YAML check file."""

from __future__ import annotations

from pathlib import Path

import pytest
from health_endpoint.checks import Direction, Status
from health_endpoint.config import ConfigError, load_config, load_settings
from health_endpoint.units import Unit

URL = {"PROMETHEUS_URL": "http://prometheus:9090/"}


def test_defaults() -> None:
    config = load_config(URL)
    settings = config.settings
    assert settings.prometheus_url == "http://prometheus:9090"
    assert settings.prometheus_timeout_seconds == 3.0
    assert settings.prometheus_client_timeout_seconds == 4.0
    assert settings.cluster_label == "cluster"
    assert settings.cache_ttl_seconds == 5.0
    assert settings.auth_token_file is None
    assert config.network.name == "mainnet"
    assert config.node_job == "cardano-node"
    assert {r.rule_id for r in config.rules} >= {"cardano_node/up", "cardano_node/sync_lag"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "PROMETHEUS_URL is not set: give the Prometheus base URL"),
        ({"PROMETHEUS_URL": "prometheus:9090"}, "PROMETHEUS_URL='prometheus:9090' is not an http"),
        ({**URL, "PROMETHEUS_TIMEOUT_SECONDS": "soon"}, "PROMETHEUS_TIMEOUT_SECONDS='soon' is not"),
        ({**URL, "PROMETHEUS_TIMEOUT_SECONDS": "0"}, "must be greater than 0"),
        (
            {**URL, "PROMETHEUS_TIMEOUT_SECONDS": "5", "PROMETHEUS_CLIENT_TIMEOUT_SECONDS": "5"},
            "PROMETHEUS_CLIENT_TIMEOUT_SECONDS (5) must exceed PROMETHEUS_TIMEOUT_SECONDS (5)",
        ),
        ({**URL, "CLUSTER_LABEL": "bad-label"}, "CLUSTER_LABEL='bad-label' is not a Prometheus"),
        ({**URL, "CACHE_TTL_SECONDS": "-1"}, "CACHE_TTL_SECONDS='-1' must be at least 0"),
        ({**URL, "AUTH_TOKEN_FILE": "/nonexistent/token"}, "AUTH_TOKEN_FILE='/nonexistent/token'"),
        ({**URL, "QUERY_CONCURRENCY": "2.5"}, "QUERY_CONCURRENCY=2.5 must be a whole number"),
        ({**URL, "CARDANO_NETWORK": "testnet"}, "CARDANO_NETWORK='testnet' is not one of"),
    ],
)
def test_bad_environment_is_one_clear_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"CACHE_TTL_SECONDS": "x", "CLUSTER_LABEL": "1x"})
    text = str(caught.value)
    assert "PROMETHEUS_URL" in text and "CACHE_TTL_SECONDS" in text and "CLUSTER_LABEL" in text


def test_cluster_label_can_be_switched_off_and_network_chosen() -> None:
    config = load_config({**URL, "CLUSTER_LABEL": "", "CARDANO_NETWORK": "Preprod"})
    assert config.settings.cluster_label is None
    assert config.network.name == "preprod"


def test_empty_token_file_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_config({**URL, "AUTH_TOKEN_FILE": str(token)})


def write(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "health.yaml"
    path.write_text(text, encoding="utf-8")
    return {**URL, "HEALTH_CONFIG_FILE": str(path)}


def test_yaml_overrides_removes_and_adds(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
cardano_node_job: relay-and-bp
rate_window: 2m
checks:
  cardano_node:
    sync_lag: {degraded: 60, unhealthy: null}
    kes_periods_remaining: null
  storage: null
  database:
    postgres:
      query: 'min(pg_up{$selector})'
      direction: below
      unhealthy: 0
      no_data: degraded
""",
        )
    )
    rules = {r.rule_id: r for r in config.rules}
    assert config.node_job == "relay-and-bp"
    assert config.rate_window == "2m"
    assert rules["cardano_node/sync_lag"].degraded == 60
    assert rules["cardano_node/sync_lag"].unhealthy is None
    assert rules["cardano_node/sync_lag"].unit is Unit.SECONDS  # untouched fields kept
    assert "cardano_node/kes_periods_remaining" not in rules
    assert not any(r.check == "storage" for r in config.rules)
    postgres = rules["database/postgres"]
    assert postgres.direction is Direction.BELOW
    assert postgres.no_data is Status.DEGRADED
    assert postgres.description == "Postgres"


def test_defaults_can_be_dropped(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, "defaults: false\nchecks: {x: {y: {query: 'up', unhealthy: 0}}}\n")
    )
    assert [r.rule_id for r in config.rules] == ["x/y"]


def test_custom_network(tmp_path: Path) -> None:
    env = write(
        tmp_path,
        """
networks:
  sanchonet:
    shelley_start_slot: 0
    shelley_start_time: 2023-06-15T00:00:00Z
""",
    )
    config = load_config({**env, "CARDANO_NETWORK": "sanchonet"})
    assert config.network.shelley_start_time == 1_686_787_200
    assert config.network.wallclock_slot(1_686_787_260) == 60


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("checks: [1]\n", "checks: expected a mapping, got list"),
        ("chekcs: {}\n", "the file: unknown field 'chekcs'"),
        ("checks: {system: {cpu_usage: {degrade: 5}}}\n", "checks.system.cpu_usage: unknown field"),
        ("checks: {system: {cpu_usage: {degraded: high}}}\n", "degraded: must be a number"),
        ("checks: {system: {new_rule: {unhealthy: 1}}}\n", "a new rule needs a query"),
        ("checks: {system: {r: {query: up}}}\n", "needs a threshold (degraded/unhealthy) or a"),
        ("checks: {system: {r: {query: 'up{$clstr}', unhealthy: 1}}}\n", "bad placeholder"),
        ("checks: {system: {r: {query: up, unhealthy: 1, unit: parsecs}}}\n", "'parsecs' is not"),
        ("checks: {system: {r: {query: up, unhealthy: 1, no_data: unknown}}}\n", "must be healthy"),
        (
            "checks: {system: {cpu_usage: {degraded: 90, unhealthy: 80}}}\n",
            "unhealthy (80) is less severe than degraded (90)",
        ),
        ("checks: {x: {r: {query: up, metric: cpu_usage}}}\n", "'cpu_usage' is also set by"),
        ("defaults: false\n", "no check is configured"),
        ("rate_window: 5 minutes\n", "rate_window: '5 minutes' is not a Prometheus duration"),
        ("checks: {Bad: null}\n", "checks.Bad: check names are lower_snake_case"),
        ("checks: {\n", "HEALTH_CONFIG_FILE="),
    ],
)
def test_bad_yaml_names_the_path(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert message in str(caught.value)
    assert str(caught.value).startswith("HEALTH_CONFIG_FILE=")
    assert "\n" not in str(caught.value)
