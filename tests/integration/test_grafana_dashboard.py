"""Every query of the Grafana dashboard returns data from a real Prometheus scraping real forge
managers and node exporters.

Two regions of two pods each (:class:`tests.harness.regions.Regions`: real forge managers and
node stand-ins under forge-guard on the real control plane) and a cardano-node exporter per
region (:class:`tests.harness.fake_exporters.FakeCardanoNode`, for the KES periods) are scraped
by a real Prometheus with the labels the chart's ServiceMonitor gives (job
``cardano-forge-manager``, ``pool``, ``namespace``, ``pod``, the managers' own ``pod`` and
``cluster`` kept). The pool then lives through what the panels show: east forges, west's health
checks fail and recover, forging moves to west, the API server is down for a moment (Lease API
failures). Each panel query, with the dashboard's variables filled in as Grafana would from
Prometheus' label values, must return at least one series.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.fake_exporters import FakeCardanoNode
from tests.harness.forge_pod import wait_for
from tests.harness.forging_log import overlaps, summary
from tests.harness.node_standin import now
from tests.harness.prometheus import PrometheusServer, static_job
from tests.harness.regions import Regions, install_crd

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "charts" / "cardano-forge" / "files" / "dashboards" / "cardano-forge.json"
POOL = "POOL1"
WAIT = 90.0
RATE_INTERVAL = "1m"
"""What Grafana puts for ``$__rate_interval`` at this zoom (at least 4 scrape intervals)."""


def forger_region(r: Regions) -> str | None:
    found = r.forgers()
    return r.region_of(found[0]) if len(found) == 1 else None


@pytest.fixture
def pool(
    control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> Iterator[tuple[Regions, PrometheusServer]]:
    install_crd(control_plane)
    r = Regions(
        control_plane, kube_namespace, tmp_path / "regions", {"east": 1, "west": 2}, via_proxy=False
    )
    exporters = {region: FakeCardanoNode().start() for region in ("east", "west")}
    prometheus: PrometheusServer | None = None
    try:
        r.start()
        jobs = [
            static_job(
                "cardano-forge-manager",
                [f"127.0.0.1:{p.port}"],
                {"pool": POOL, "namespace": kube_namespace, "pod": p.name},
                honor_labels=True,
                job_name=f"fm-{p.name}",
                relabel_configs=[{"target_label": "job", "replacement": "cardano-forge-manager"}],
            )
            for p in r.all_pods
        ] + [
            static_job(
                f"node-{region}",
                [e.target],
                {"pool": POOL, "namespace": kube_namespace, "pod": f"{region}-0"},
                relabel_configs=[{"target_label": "job", "replacement": "cardano-node"}],
            )
            for region, e in exporters.items()
        ]
        prometheus = PrometheusServer(tmp_path / "prometheus", jobs, scrape_interval="1s").start()
        yield r, prometheus
    finally:
        if prometheus is not None:
            prometheus.stop()
        r.stop()
        for e in exporters.values():
            e.stop()
        found = overlaps(r.spans(), until=now())
        assert not found, f"two nodes forged at once: {found}\n{summary(r.spans())}"


def label_values(prometheus: PrometheusServer, label: str, match: str) -> list[str]:
    query = urllib.parse.urlencode({"match[]": match})
    with urllib.request.urlopen(
        f"{prometheus.url}/api/v1/label/{label}/values?{query}", timeout=10
    ) as resp:
        return sorted(json.load(resp)["data"])


def fill(expr: str, variables: dict[str, str]) -> str:
    out = expr.replace("$__rate_interval", RATE_INTERVAL)
    for name, value in variables.items():
        out = out.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in out, f"an unfilled variable in {out}"
    return out


def variable_values(prometheus: PrometheusServer, dashboard: dict[str, Any]) -> dict[str, str]:
    """The dashboard's query variables, in order, filled as Grafana does: every value of a
    multi-value variable as a regex alternation."""
    filled: dict[str, str] = {}
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["query"]["query"])
        assert m, var["query"]["query"]
        values = label_values(prometheus, m.group(2), fill(m.group(1), filled))
        assert values, f"variable {var['name']}: no values for {var['query']['query']}"
        filled[var["name"]] = "|".join(values) if var.get("multi") else values[0]
    return filled


def test_every_panel_query_returns_data(pool: tuple[Regions, PrometheusServer]) -> None:
    r, prometheus = pool
    wait_for(lambda: forger_region(r) == "east", WAIT, "east to forge")

    # West's health checks fail for a while and recover.
    r.health["west"].status = 503
    prometheus.wait_for(
        'cardano_cluster_health_check_consecutive_failures{cluster="west"}',
        lambda v: bool(v) and max(v) >= 2,
        timeout=WAIT,
    )
    r.health["west"].status = 200

    # Forging moves to west (an operator's edit), leaving transitions and demotions behind.
    r.patch_spec("east", {"priority": 5})
    wait_for(lambda: forger_region(r) == "west", WAIT, "west to forge")

    # The API server goes away for a moment: Lease calls fail.
    r.cp.stop_apiserver()
    time.sleep(2.0)
    r.cp.start_apiserver()
    prometheus.wait_for(
        "sum(cardano_lease_api_errors_total)", lambda v: bool(v) and v[0] > 0, timeout=WAIT
    )
    wait_for(lambda: forger_region(r) is not None, WAIT, "a forger after the outage")
    prometheus.wait_for(
        'cardano_leadership_changes_total{pool="POOL1"}',
        lambda v: bool(v) and max(v) > 0,
        timeout=WAIT,
    )

    dashboard = json.loads(DASHBOARD.read_text())
    variables = variable_values(prometheus, dashboard)
    assert variables == {"pool": POOL, "cluster": "east|west"}
    empty: list[str] = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = fill(target["expr"], variables)
            try:
                prometheus.wait_for(expr, bool, timeout=30, what=f"{panel['title']}: {expr}")
            except Exception as exc:
                empty.append(f"{panel['title']} [{target['refId']}]: {exc}")
    assert not empty, "\n".join(empty)
