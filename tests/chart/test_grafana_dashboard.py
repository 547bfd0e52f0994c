"""The Grafana dashboard: the JSON the chart ships and the ConfigMap that carries it.

The dashboard is ``charts/cardano-forge/files/dashboards/cardano-forge.json``; the chart embeds it
with ``.Files.Get``, so the tested text is the shipped text. That its queries return data from a
real Prometheus scraping real forge managers is ``tests/integration/test_grafana_dashboard.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.test_chart import BASE, KUBE_VERSION, merged, only, refusal, render

pytestmark = pytest.mark.chart

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_FILE = (
    REPO_ROOT / "charts" / "cardano-forge" / "files" / "dashboards" / "cardano-forge.json"
)
RULES_FILE = REPO_ROOT / "alerts" / "cardano-forge.rules.yml"


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD_FILE.read_text())
    assert isinstance(data, dict)
    return data


def panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in d["panels"] if p["type"] != "row"]


def panel(d: dict[str, Any], title_start: str) -> dict[str, Any]:
    (found,) = [p for p in panels(d) if p["title"].startswith(title_start)]
    return found


def test_the_json_is_a_grafana_dashboard() -> None:
    d = dashboard()
    assert d["uid"] == "cardano-forge" and re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", d["uid"])
    assert d["title"] == "Cardano forge"
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("pool", "cluster"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels(d):
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"][
            "w"
        ] <= 24
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"], p["title"]
            assert t["datasource"]["uid"] == "${datasource}"
    titles = " | ".join(p["title"] for p in panels(d))
    for needed in (
        "Forging pod over time",
        "Forging region over time",
        "Local leader per pod",
        "Leadership transitions",
        "Lease renew latency",
        "Lease API failures",
        "Health checks per region",
        "KES periods left",
        "CardanoMultipleForgers",
        "CardanoNoNodeForging",
    ):
        assert needed in titles


def _alert_expr(name: str) -> str:
    rules = yaml.safe_load(RULES_FILE.read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == name]
    return str(exprs[0])


def _normal(text: str) -> str:
    return " ".join(text.replace("(", " ( ").replace(")", " ) ").split())


def test_two_forgers_and_no_forger_panels_are_the_alerts_expressions() -> None:
    """The panels show the alerts' own expressions without their final comparison, so a
    change of the alert that is not carried to the dashboard fails here."""
    d = dashboard()
    multiple = _alert_expr("CardanoMultipleForgers")
    comparison = re.compile(r"\s+>\s+1(?=\s|\)|$)")
    assert len(comparison.findall(multiple)) == 2  # both branches compare with 1
    without = comparison.sub("", multiple)
    (target,) = panel(d, "Forging nodes seen (CardanoMultipleForgers")["targets"]
    assert _normal(target["expr"]) == _normal(without)

    none = _alert_expr("CardanoNoNodeForging")
    first = none.split(" == 0", 1)[0]
    assert first == "sum by (pool) (cardano_forging_enabled)"
    (target,) = panel(d, "Nodes forging (CardanoNoNodeForging")["targets"]
    assert _normal(target["expr"]) == _normal(first)
    steps = panel(d, "Nodes forging")["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["color"] for s in steps] == ["red", "green", "red"] and steps[1]["value"] == 1

    kes = panel(d, "KES periods left")["fieldConfig"]["defaults"]["thresholds"]["steps"]
    warning = yaml.safe_load(RULES_FILE.read_text())
    limits = sorted(
        int(r["expr"].rsplit("<=", 1)[1])
        for g in warning["groups"]
        for r in g["rules"]
        if r.get("alert") == "CardanoKESKeyExpiring"
    )
    assert limits == [2, 10]
    assert [s["value"] for s in kes[1:]] == [
        limits[0] + 1,
        limits[1] + 1,
    ]  # red <= 2 < orange <= 10


def test_off_by_default(tmp_path: Path) -> None:
    docs = render(BASE, tmp_path)
    assert not [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")
    ]


def test_the_configmap_carries_the_file_and_the_sidecar_label(tmp_path: Path) -> None:
    docs = render(merged(BASE, {"grafanaDashboard": {"enabled": True}}), tmp_path)
    cm = only(docs, "ConfigMap", "-dashboard")
    kubernetes_validate.validate(cm, KUBE_VERSION.rsplit(".", 1)[0], strict=True)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["labels"]["app.kubernetes.io/component"] == "dashboard"
    assert cm["metadata"]["namespace"] == "cardano"
    assert json.loads(cm["data"]["cardano-forge.json"]) == dashboard()
    assert cm["data"]["cardano-forge.json"] == DASHBOARD_FILE.read_text().rstrip("\n")


def test_label_namespace_and_annotations_follow_the_values(tmp_path: Path) -> None:
    values = {
        "grafanaDashboard": {
            "enabled": True,
            "label": "grafana.example.com/dashboard",
            "labelValue": "yes",
            "namespace": "monitoring",
            "labels": {"team": "pool-ops"},
            "annotations": {"grafana_folder": "Cardano"},
        }
    }
    cm = only(render(merged(BASE, values), tmp_path), "ConfigMap", "-dashboard")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana.example.com/dashboard"] == "yes"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["labels"]["team"] == "pool-ops"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Cardano"}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"enabled": True, "labelvalue": "1"}, "labelvalue"),
        ({"enabled": "yes"}, "enabled"),
        ({"label": "has space"}, "label"),
        ({"labelValue": "no spaces allowed"}, "labelValue"),
        ({"namespace": "Monitoring"}, "namespace"),
    ],
)
def test_the_schema_refuses_typos_and_bad_labels(
    values: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    assert expected in refusal(merged(BASE, {"grafanaDashboard": values}), tmp_path)
