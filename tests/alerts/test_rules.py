"""The alert rules: promtool's own checks and unit tests, conventions, and the Alertmanager example.

``promtool test rules alerts/tests/*.yml`` holds the behaviour of every alert (fires at ``for``,
not one interval earlier, stays silent when it should); this module runs it, checks that every
alert is covered, and shows that those tests fail when a rule is broken on purpose.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERTS_DIR = REPO_ROOT / "alerts"
RULES_FILE = ALERTS_DIR / "cardano-forge.rules.yml"
RULE_TESTS = sorted((ALERTS_DIR / "tests").glob("*.yml"))
RUNBOOKS_DIR = REPO_ROOT / "docs" / "runbooks"
ALERTMANAGER_EXAMPLE = REPO_ROOT / "docs" / "alertmanager-example.yml"
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"

RUNBOOK_BASE_URL = "https://github.com/cardano-forge/cardano-forge/blob/main/docs/runbooks/"
SEVERITIES = {"critical", "warning", "info"}
RUNBOOK_SECTIONS = ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation")

# The seed's recommended alerts: expression, duration and severity are binding.
SEED_ALERTS = {
    "CardanoClusterHealthCheckDown": (
        "cardano_cluster_health_check_success == 0",
        "2m",
        "critical",
    ),
    "CardanoClusterHealthCheckSlow": (
        "cardano_cluster_health_check_duration_seconds > 5",
        "5m",
        "warning",
    ),
    "CardanoClusterFailover": ("changes(cardano_cluster_forge_enabled[10m]) > 0", "0m", "info"),
}
REQUIRED_ALERTS = {
    *SEED_ALERTS,
    "CardanoMultipleForgers",
    "CardanoNoNodeForging",
    "CardanoForgeManagerDown",
    "CardanoLeadershipFlapping",
    "CardanoKESKeyExpiring",
}


def find_tool(name: str) -> str | None:
    candidate = TOOLS_BIN / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def promtool() -> str:
    found = find_tool("promtool")
    if found is None:
        pytest.fail("promtool not found in .tools/bin or on PATH: run 'make tools'")
    return found


def run(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def load_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES_FILE.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for rule in load_rules() if "alert" in rule]


def test_promtool_check_rules() -> None:
    result = run(promtool(), "check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


def test_promtool_test_rules() -> None:
    assert RULE_TESTS, "no promtool unit tests in alerts/tests"
    result = run(promtool(), "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_required_alerts_exist() -> None:
    names = {rule["alert"] for rule in alerting_rules()}
    assert names >= REQUIRED_ALERTS, f"missing: {sorted(REQUIRED_ALERTS - names)}"


@pytest.mark.parametrize("name", sorted(SEED_ALERTS))
def test_seed_alerts_unchanged(name: str) -> None:
    expr, duration, severity = SEED_ALERTS[name]
    (rule,) = [rule for rule in alerting_rules() if rule["alert"] == name]
    assert (rule["expr"], rule["for"], rule["labels"]["severity"]) == (expr, duration, severity)


def test_multiple_forgers_is_critical_and_immediate_per_pool() -> None:
    (rule,) = [rule for rule in alerting_rules() if rule["alert"] == "CardanoMultipleForgers"]
    assert "max by (pool) (cardano_forging_since_timestamp_seconds)" in rule["expr"]
    assert "sum by (pool) (cardano_forging_enabled) > 1" in rule["expr"]
    assert rule["for"] == "0m"
    assert rule["labels"]["severity"] == "critical"


@pytest.mark.parametrize(
    "rule", alerting_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}"
)
def test_alert_conventions(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert re.fullmatch(r"Cardano(?:[A-Z][a-z0-9]*|[A-Z]+(?=[A-Z]|$))+", name), name
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert "{{" in annotations["description"], "description is not templated"
    assert annotations["runbook_url"] == f"{RUNBOOK_BASE_URL}{name}.md"
    runbook = RUNBOOKS_DIR / f"{name}.md"
    assert runbook.is_file(), f"no runbook {runbook.relative_to(REPO_ROOT)}"
    text = runbook.read_text()
    assert text.startswith(f"# {name}\n")
    positions = [text.find(section + "\n") for section in RUNBOOK_SECTIONS]
    assert -1 not in positions, f"{runbook.name} lacks one of {RUNBOOK_SECTIONS}"
    assert positions == sorted(positions), f"{runbook.name}: sections out of order"


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../cardano-forge.rules.yml"], path.name
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alerting_rules()}
    assert names - firing == set(), "alerts never seen firing in alerts/tests"
    assert names - silent == set(), "alerts never seen silent in alerts/tests"


def test_every_runbook_belongs_to_an_alert() -> None:
    names = {rule["alert"] for rule in alerting_rules()}
    assert {p.stem for p in RUNBOOKS_DIR.glob("*.md")} == names


# Deliberately broken rules: the unit tests must catch each one.
MUTATIONS = {
    "health-check-down-for": (
        "cardano_cluster_health_check_success == 0\n        for: 2m",
        "cardano_cluster_health_check_success == 0\n        for: 1m",
    ),
    "multiple-forgers-not-per-pool": (
        "sum by (pool) (cardano_forging_enabled) > 1",
        "sum(cardano_forging_enabled) > 1",
    ),
    "multiple-forgers-count-not-per-pool": ("count by (pool) (", "count ("),
    "multiple-forgers-ignores-scrape-time": (
        "(timestamp(cardano_forging_enabled) and cardano_forging_enabled == 1)",
        "(time() + 0 * cardano_forging_enabled and cardano_forging_enabled == 1)",
    ),
    "multiple-forgers-severity": (
        "          )\n        for: 0m\n        labels:\n          severity: critical",
        "          )\n        for: 0m\n        labels:\n          severity: warning",
    ),
    "no-forger-for": (
        "or absent(cardano_forging_enabled)\n        for: 2m",
        "or absent(cardano_forging_enabled)\n        for: 3m",
    ),
    "no-forger-without-absent": (" or absent(cardano_forging_enabled)", ""),
    "forge-manager-down-any-job": ('up{job="cardano-forge-manager"} == 0', "up == 0"),
    "flapping-not-per-region": ("sum by (pool, cluster, namespace)", "sum by (pool, namespace)"),
    "kes-min-instead-of-max": (
        "max by (pool) (cardano_node_metrics_remainingKESPeriods_int) <= 10",
        "min by (pool) (cardano_node_metrics_remainingKESPeriods_int) <= 10",
    ),
    "failover-window": ("[10m]) > 0", "[5m]) > 0"),
    "runbook-url": ("runbooks/CardanoForgeManagerDown.md", "runbooks/ForgeManagerDown.md"),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_unit_tests_catch_a_broken_rule(mutation: str, tmp_path: Path) -> None:
    old, new = MUTATIONS[mutation]
    text = RULES_FILE.read_text()
    assert text.count(old) == 1, f"mutation {mutation!r} no longer matches the rule file"
    shutil.copytree(ALERTS_DIR / "tests", tmp_path / "tests")
    (tmp_path / RULES_FILE.name).write_text(text.replace(old, new))
    tests = sorted(str(p) for p in (tmp_path / "tests").glob("*.yml"))
    check = run(promtool(), "check", "rules", str(tmp_path / RULES_FILE.name))
    assert check.returncode == 0, f"mutant is not even valid: {check.stdout}{check.stderr}"
    result = run(promtool(), "test", "rules", *tests)
    assert result.returncode != 0, f"unit tests did not notice {mutation!r}:\n{result.stdout}"


def amtool() -> str:
    found = find_tool("amtool")
    if found is None:
        pytest.skip("amtool not installed (Debian package prometheus-alertmanager)")
    return found


def test_alertmanager_example_is_valid() -> None:
    result = run(amtool(), "check-config", str(ALERTMANAGER_EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("severity", "receiver"),
    [("critical", "on-call-pager"), ("warning", "operators-chat"), ("info", "operators-log")],
)
def test_alertmanager_example_routes_by_severity(severity: str, receiver: str) -> None:
    result = run(
        amtool(),
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_EXAMPLE}",
        f"severity={severity}",
        "alertname=CardanoMultipleForgers",
        "pool=POOL1",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]


def test_alertmanager_example_inhibits_only_known_alerts() -> None:
    config = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
    names = {rule["alert"] for rule in alerting_rules()}
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            key, _, value = (part.strip() for part in matcher.partition("="))
            if key == "alertname":
                assert value.strip('"') in names, matcher
