"""Alertmanager, for real: two pods of one pool forging reach the on-call receiver as an alert.

The chain under test is the one an operator deploys, with nothing scripted in between:

* forge managers and cardano-node stand-ins (``ForgePod``) on the real control plane;
* a real Prometheus scraping them as the rules expect (job ``cardano-forge-manager``,
  ``honor_labels``, a ``pool`` target label: alerts/README.md), loading the shipped rule file
  ``alerts/cardano-forge.rules.yml`` and evaluating it every second;
* a real Alertmanager (Debian's ``prometheus-alertmanager``) with the shipped example route
  (``docs/alertmanager-example.yml``: routing by ``severity``, inhibitions), whose receivers are
  all replaced by webhooks into this test, and whose batching waits are shortened to a second.

The misconfiguration: two releases of one pool whose ``forgeManager.lease.name`` differ. Each
release's pod wins its own Lease, so two nodes forge. ``CardanoMultipleForgers`` must reach the
critical route's receiver with ``severity=critical``, the ``pool`` and the runbook link. With one
release (two pods, one Lease) the rule is evaluated, over several intervals, and stays silent.
"""

from __future__ import annotations

import copy
import json
import re
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.alertmanager import AlertmanagerServer, Notification, WebhookReceiver
from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import ForgePod, wait_for, write_pool_secret
from tests.harness.prometheus import PrometheusServer, ScrapeConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = REPO_ROOT / "alerts" / "cardano-forge.rules.yml"
ALERTMANAGER_EXAMPLE = REPO_ROOT / "docs" / "alertmanager-example.yml"
ALERT = "CardanoMultipleForgers"
POOL = "POOL1"
WAIT = 120.0  # upper bound for every wait below: behaviour is asserted, never speed
QUIET_EVALUATIONS = 5  # evaluations of the rule that must pass in silence (negative case)


# --------------------------------------------------------------------------- what is shipped


def shipped_rule(name: str) -> dict[str, Any]:
    for group in yaml.safe_load(RULES_FILE.read_text())["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                found: dict[str, Any] = rule
                return found
    raise AssertionError(f"{name} is not in {RULES_FILE.name}")


def manager_job() -> str:
    """The scrape job the rules select the forge managers by (CardanoForgeManagerDown's)."""
    match = re.search(r'job="([^"]+)"', shipped_rule("CardanoForgeManagerDown")["expr"])
    assert match, "CardanoForgeManagerDown no longer names the forge managers' job"
    return match.group(1)


def receiver_for(route: dict[str, Any], labels: dict[str, str]) -> str:
    """The receiver Alertmanager's routing tree picks for ``labels`` (equality matchers only)."""
    for child in route.get("routes", []):
        matchers = [re.fullmatch(r'\s*(\w+)\s*=\s*"?([^"]*)"?\s*', m) for m in child["matchers"]]
        assert all(matchers), f"only equality matchers are understood here: {child['matchers']}"
        if all(labels.get(m.group(1)) == m.group(2) for m in matchers if m):
            return receiver_for({"receiver": child.get("receiver", route["receiver"]), **child},
                                labels)  # fmt: skip
    return str(route["receiver"])


def alertmanager_config(receiver: WebhookReceiver) -> dict[str, Any]:
    """The shipped example, every receiver a webhook into this test, batching waits of 1 s."""
    config: dict[str, Any] = copy.deepcopy(yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text()))
    config["receivers"] = [
        {
            "name": r["name"],
            "webhook_configs": [{"url": receiver.url(r["name"]), "send_resolved": True}],
        }
        for r in config["receivers"]
    ]

    def shorten(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route:
                route[key] = "1s"
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    return config


# --------------------------------------------------------------------------- the test bed


@dataclass
class Bed:
    prometheus: PrometheusServer
    alertmanager: AlertmanagerServer
    receiver: WebhookReceiver
    pods: list[ForgePod]
    critical_receiver: str

    def notifications_of(self, alert: str) -> list[tuple[Notification, dict[str, Any]]]:
        return [
            (n, a)
            for n in self.receiver.notifications()
            for a in n.alerts()
            if a["labels"].get("alertname") == alert
        ]


@pytest.fixture
def alerting_bed(
    control_plane: ControlPlane,
    kube_namespace: str,
    prometheus_factory: Callable[..., PrometheusServer],
    tmp_path: Path,
) -> Iterator[Callable[[dict[str, str]], Bed]]:
    """``start({pod name: lease name})`` -> the running bed; everything stops at teardown."""
    secret = write_pool_secret(tmp_path / "pool-secret")
    started: list[ForgePod] = []
    servers: list[AlertmanagerServer | WebhookReceiver] = []

    def start(pods_and_leases: dict[str, str]) -> Bed:
        receiver = WebhookReceiver().start()
        servers.append(receiver)
        config = alertmanager_config(receiver)
        alertmanager = AlertmanagerServer(tmp_path / "alertmanager", config).start()
        servers.append(alertmanager)
        pods = []
        run = uuid.uuid4().hex[:6]  # process names unique on the host: managers find nodes by name
        for i, (name, lease) in enumerate(pods_and_leases.items()):
            pod = ForgePod(name, tmp_path / "pods", control_plane.kubeconfig, kube_namespace,
                           secret, lease_name=lease, node_name=f"cn-{run}-{i}")  # fmt: skip
            started.append(pod)
            pod.start()
            pods.append(pod)
        # One static config per release (its Lease), as a ServiceMonitor per release would give.
        releases: dict[str, list[str]] = {}
        for pod in pods:
            releases.setdefault(pod.lease_name, []).append(f"127.0.0.1:{pod.port}")
        job: ScrapeConfig = {
            "job_name": manager_job(),
            "honor_labels": True,  # keep the managers' own pod and cluster labels
            "static_configs": [
                {
                    "targets": targets,
                    "labels": {"pool": POOL, "namespace": kube_namespace, "lease": lease},
                }
                for lease, targets in releases.items()
            ],
        }
        prometheus = prometheus_factory(
            [job],
            scrape_interval="1s",
            evaluation_interval="1s",
            rule_files=[RULES_FILE],
            alertmanagers=[alertmanager.target],
        )
        critical = receiver_for(config["route"], {"severity": "critical", "alertname": ALERT})
        return Bed(prometheus, alertmanager, receiver, pods, critical)

    try:
        yield start
    finally:
        for pod in started:
            pod.stop()
        for server in reversed(servers):
            server.stop()


def rule_state(prometheus: PrometheusServer, name: str) -> dict[str, Any]:
    """The rule's entry in Prometheus' rules API (state, health, lastEvaluation)."""
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/rules?type=alert", timeout=10) as resp:
        groups = json.load(resp)["data"]["groups"]
    for group in groups:
        for rule in group["rules"]:
            if rule["name"] == name:
                found: dict[str, Any] = rule
                return found
    raise AssertionError(f"Prometheus has not loaded {name}: groups {[g['name'] for g in groups]}")


# --------------------------------------------------------------------------- the tests


def test_two_releases_with_different_leases_page_as_multiple_forgers(
    alerting_bed: Callable[[dict[str, str]], Bed],
) -> None:
    bed = alerting_bed({"east-a-0": "cardano-node-leader", "east-b-0": "cardano-node-leader-b"})

    # The misconfiguration is real: each release's pod won its own Lease and forges.
    wait_for(lambda: all(p.forging() for p in bed.pods), WAIT, "both pods to forge")
    bed.prometheus.wait_for(
        f'sum by (pool) (cardano_forging_enabled{{pool="{POOL}"}})',
        lambda v: v == [2.0],
        timeout=WAIT,
        what="Prometheus to see two forgers of the pool",
    )

    # Prometheus fires the shipped rule and Alertmanager routes it to the critical receiver.
    try:
        wait_for(lambda: bool(bed.notifications_of(ALERT)), WAIT, f"{ALERT} at the receiver")
    except AssertionError as exc:
        held = bed.alertmanager.alerts()
        raise AssertionError(
            f"{exc}\nAlertmanager holds {held}\n{bed.alertmanager.log_tail()}"
        ) from None
    received = bed.notifications_of(ALERT)
    receivers = {n.receiver for n, _ in received}
    assert receivers == {bed.critical_receiver}, f"routed to {receivers}"
    assert {n.path for n, _ in received} == {f"/{bed.critical_receiver}"}
    notification, alert = received[0]
    assert notification.body["status"] == "firing"
    assert alert["status"] == "firing"
    assert alert["labels"] == {"alertname": ALERT, "pool": POOL, "severity": "critical"}
    rule = shipped_rule(ALERT)
    annotations = alert["annotations"]
    assert annotations["runbook_url"] == rule["annotations"]["runbook_url"]
    runbook = REPO_ROOT / annotations["runbook_url"].split("/blob/main/", 1)[1]
    assert runbook.is_file(), f"the runbook link points at a missing file: {runbook}"
    assert annotations["summary"] == f"More than one node is forging for pool {POOL}"
    assert annotations["description"].startswith(f"2 forge managers of pool {POOL} ")
    # Grouped as the example route says: one group per alert name and pool.
    assert notification.body["groupLabels"] == {"alertname": ALERT, "pool": POOL}


def test_one_release_stays_silent(alerting_bed: Callable[[dict[str, str]], Bed]) -> None:
    bed = alerting_bed({"east-a-0": "cardano-node-leader", "east-a-1": "cardano-node-leader"})

    wait_for(lambda: sum(p.forging() for p in bed.pods) == 1, WAIT, "one forging pod")
    # Prometheus sees both managers of the pool, and exactly one forger among them.
    bed.prometheus.wait_for(
        f'count by (pool) (cardano_forging_enabled{{pool="{POOL}"}})',
        lambda v: v == [2.0],
        timeout=WAIT,
        what="Prometheus to scrape both forge managers",
    )
    bed.prometheus.wait_for(
        f'sum by (pool) (cardano_forging_enabled{{pool="{POOL}"}})',
        lambda v: v == [1.0],
        timeout=WAIT,
        what="Prometheus to see one forger",
    )

    # The rule is evaluated on that data several times, and stays silent every time.
    evaluations: list[str] = []

    def evaluated_quietly() -> bool:
        state = rule_state(bed.prometheus, ALERT)
        assert state["health"] == "ok", state
        assert state["state"] == "inactive", state
        assert not bed.prometheus.query(f'ALERTS{{alertname="{ALERT}"}}')
        if not evaluations or evaluations[-1] != state["lastEvaluation"]:
            evaluations.append(state["lastEvaluation"])
        return len(evaluations) > QUIET_EVALUATIONS

    wait_for(evaluated_quietly, WAIT, f"{QUIET_EVALUATIONS} evaluations of {ALERT}", 0.3)
    assert sum(p.forging() for p in bed.pods) == 1
    assert not bed.notifications_of(ALERT)
    assert not [a for a in bed.alertmanager.alerts() if a["labels"]["alertname"] == ALERT]
    # The chain is live: Prometheus has Alertmanager as a target, so silence is not deafness.
    with urllib.request.urlopen(f"{bed.prometheus.url}/api/v1/alertmanagers", timeout=10) as r:
        active = json.load(r)["data"]["activeAlertmanagers"]
    assert [a["url"] for a in active] == [f"{bed.alertmanager.url}/api/v2/alerts"]


def test_receiver_for_follows_the_example_route() -> None:
    """The little router above agrees with the example's intent (critical pages, info logs)."""
    route = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())["route"]
    assert receiver_for(route, {"severity": "critical"}) == "on-call-pager"
    assert receiver_for(route, {"severity": "warning"}) == "operators-chat"
    assert receiver_for(route, {"severity": "info"}) == "operators-log"
    assert receiver_for(route, {}) == route["receiver"]
