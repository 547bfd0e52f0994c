"""KES rotation as the runbook describes it (docs/runbooks/CardanoKESKeyExpiring.md), end to end.

Three pods of one pool on the real control plane (real forge managers, node stand-ins under
forge-guard) read their credentials from a Secret volume laid out as the kubelet lays it out
(:class:`tests.harness.secret_volume.SecretVolume`: ``..data`` swapped atomically). The operator
updates the Secret with a new KES key and operational certificate together. Then:

* the forging node picks them up without a restart: same process, forging without a break, and
  the stand-in logs a reload with the new key and certificate (the manager installed the changed
  files and sent SIGHUP, ``cardano_sighup_signals_total{reason="credentials_updated"}``);
* the node never ran a new KES key with an old certificate, or the reverse;
* the standbys never get any credentials (sampled every 50 ms throughout);
* no two nodes forge at once, and a standby that takes over later forges with the new pair.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.forge_pod import ForgePod, all_events, wait_for
from tests.harness.forging_log import intervals, overlaps, summary
from tests.harness.node_standin import now
from tests.harness.secret_volume import SecretVolume

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

WAIT = 60.0
KINDS = {
    "kes.skey": "KesSigningKey_ed25519_kes_2^6",
    "vrf.skey": "VrfSigningKey_PraosVRF",
    "node.cert": "NodeOperationalCertificate",
}


def envelopes(kes: str, cert: str) -> dict[str, bytes]:
    """Text envelopes as cardano-cli writes them; the VRF key never changes."""
    body = {
        "kes.skey": "5820" + kes * 32,
        "vrf.skey": "5820" + "ab" * 32,
        "node.cert": "8282" + cert * 40,
    }
    return {
        name: (
            json.dumps({"type": KINDS[name], "description": "test", "cborHex": hex_}) + "\n"
        ).encode()
        for name, hex_ in body.items()
    }


def digests(files: dict[str, bytes]) -> tuple[str, str]:
    return (
        hashlib.sha256(files["kes.skey"]).hexdigest()[:12],
        hashlib.sha256(files["node.cert"]).hexdigest()[:12],
    )


@pytest.fixture
def pods(
    control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> Iterator[tuple[list[ForgePod], SecretVolume]]:
    volume = SecretVolume(tmp_path / "credentials-source", envelopes("01", "01"))
    group = [
        ForgePod(
            f"bp-{i}", tmp_path, control_plane.kubeconfig, kube_namespace, volume.root, guard=True
        )
        for i in range(3)
    ]
    try:
        for pod in group:
            pod.start()
        yield group, volume
    finally:
        for pod in group:
            pod.stop()
        spans = intervals(all_events(group))
        found = overlaps(spans, until=now())
        assert not found, f"two nodes forged at once: {found}\n{summary(spans)}"


def forgers(group: list[ForgePod]) -> list[ForgePod]:
    return [p for p in group if p.forging()]


def keys_used(pod: ForgePod) -> list[tuple[str, str]]:
    """(kes, cert) of every credential set the pod's nodes forged with."""
    return [
        (e["keys"]["kes"], e["keys"]["cert"])
        for e in pod.events()
        if e["event"] in ("forging_started", "credentials_reloaded")
    ]


def sighups(pod: ForgePod, reason: str) -> float:
    code, body = pod.get("/metrics")
    assert code == 200
    for line in body.splitlines():
        if line.startswith("cardano_sighup_signals_total{") and f'reason="{reason}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class StandbyWatch:
    """Samples every 50 ms that no standby holds any credential file."""

    def __init__(self, standbys: list[ForgePod]) -> None:
        self.standbys = standbys
        self.seen: list[tuple[float, str, list[str]]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples += 1
            for pod in self.standbys:
                present = [t.name for t in pod.targets if t.exists()]
                if present:
                    self.seen.append((now(), pod.name, present))

    def __enter__(self) -> StandbyWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)


def test_rotating_the_kes_key_reaches_the_forger_without_a_restart(
    pods: tuple[list[ForgePod], SecretVolume],
) -> None:
    group, volume = pods
    old, new = envelopes("01", "01"), envelopes("02", "02")
    wait_for(lambda: len(forgers(group)) == 1, WAIT, "one forger")
    (forger,) = forgers(group)
    standbys = [p for p in group if p is not forger]
    wait_for(
        lambda: not any(p.credentials_present() for p in standbys),
        WAIT,
        "the standbys' start-up credentials to be removed",
    )
    pid = forger.node_pid()
    assert pid is not None and keys_used(forger) == [digests(old)]
    before = sighups(forger, "credentials_updated")
    rotated_at = now()

    with StandbyWatch(standbys) as watch:
        volume.update(new)  # the operator's one update of the Secret: KES key and certificate
        wait_for(
            lambda: digests(new) in keys_used(forger), WAIT, "the forger to reload the new pair"
        )
        wait_for(lambda: watch.samples > 20, 10, "a few more samples")

    # Picked up without a restart: the same node process forged throughout.
    assert forger.node_pid() == pid
    spans = [s for s in forger.intervals() if s.node.endswith(f"/{pid}")]
    assert len(spans) == 1 and spans[0].start < rotated_at and spans[0].end is None, summary(spans)
    assert not [
        e
        for e in forger.events()
        if e["t"] > rotated_at and e["event"] in ("exited", "killed", "started", "forging_stopped")
    ]
    assert sighups(forger, "credentials_updated") > before
    assert [t.read_bytes() for t in forger.targets] == [
        new["kes.skey"],
        new["vrf.skey"],
        new["node.cert"],
    ]
    # Never a new KES key with an old certificate (or the reverse).
    assert set(keys_used(forger)) <= {digests(old), digests(new)}, keys_used(forger)

    # The standbys never got credentials, old or new.
    assert watch.samples > 20 and not watch.seen, watch.seen[:5]
    assert all(keys_used(p) == [] for p in standbys)

    # A standby that takes over later forges with the new pair.
    forger.kill9()
    wait_for(lambda: len(forgers(group)) == 1, WAIT, "a standby to take over")
    (successor,) = forgers(group)
    assert successor in standbys and keys_used(successor) == [digests(new)]
