"""Three (or more) simulated regions coordinating through an etcd quorum, on loopback.

Each region has its own etcd member (:class:`~tests.harness.etcd_quorum.EtcdQuorum`), its own
forge pods (forge manager with ``COORDINATION_ETCD_ENDPOINTS`` and a cardano-node stand-in under
``forge-guard``), its own health endpoint, its own copy of the pool's Secret, and its own
"Kubernetes cluster" for its local Lease and its CardanoForgeCluster: a namespace of its own on
the test's control plane. (Nothing crosses regions through that API: each region only ever reads
and writes its own namespace there, as it would its own cluster; so losing a region needs no API
server of its own to be killed, and a partitioned region keeps reaching its local API, as it
would.) Everything that crosses regions — etcd peer traffic and managers' calls to other regions'
members — goes through the breakable links of a :class:`~tests.harness.regionnet.RegionNet`.

Faults: :meth:`QuorumRegions.kill_region` (its etcd member and pods SIGKILLed: the region lost as
a whole), :meth:`QuorumRegions.restore_region`, :meth:`QuorumRegions.partition` /
:meth:`QuorumRegions.heal`, :meth:`QuorumRegions.slow` (one-way latency on a region's links), and
the quorum's own (:meth:`EtcdQuorum.kill`, :meth:`EtcdQuorum.move_leader`...).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from forge_manager.cluster.etcd_client import Etcd, EtcdError
from forge_manager.cluster.etcd_settings import EtcdSettings
from forge_manager.cluster.etcd_store import Keys, lease_record

from tests.harness.controlplane import ControlPlane
from tests.harness.etcd_quorum import EtcdQuorum
from tests.harness.forge_pod import ForgePod
from tests.harness.forging_log import summary
from tests.harness.regionnet import RegionNet
from tests.harness.regions import POOL_LEASE, RegionPods, create_namespace, read_cfc


class QuorumRegions(RegionPods):
    def __init__(
        self,
        cp: ControlPlane,
        root: Path,
        priorities: Mapping[str, int],
        *,
        pods_per_region: int = 1,
        guard: bool = True,
        timing: Mapping[str, str] | None = None,
        cluster_timing: Mapping[str, str] | None = None,
        endpoint_order: Mapping[str, Sequence[str]] | None = None,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
    ) -> None:
        super().__init__(cp, root, priorities, pods_per_region, guard, timing, cluster_timing)
        self.prefix = f"/cf-{self.token}"
        self.net = RegionNet()
        self.quorum = EtcdQuorum(
            root, list(priorities), self.net, heartbeat_ms=heartbeat_ms, election_ms=election_ms
        )
        self.endpoint_order = dict(endpoint_order or {})
        self.namespaces = {region: f"q{self.token}-{region}" for region in priorities}
        for namespace in self.namespaces.values():
            create_namespace(cp, namespace)
        self.pods = {
            region: [self._new_pod(region, i) for i in range(pods_per_region)]
            for region in priorities
        }
        self._reader = Etcd(
            EtcdSettings(
                tuple(m.client_url for m in self.quorum.members.values()),
                None,
                None,
                None,
                self.prefix,
            ),
            timeout=1.0,
        )
        self.keys = Keys(self.prefix, POOL_LEASE)

    def _new_pod(self, region: str, index: int) -> ForgePod:
        self.generation += 1
        order = self.endpoint_order.get(region)
        env = {
            **self._region_env(region),
            "COORDINATION_ETCD_ENDPOINTS": ",".join(self.quorum.endpoints(region, order)),
            "COORDINATION_ETCD_PREFIX": self.prefix,
            **self.cluster_timing,
        }
        return self._forge_pod(
            region,
            index,
            kubeconfig=self.cp.kubeconfig,
            namespace=self.namespaces[region],
            node_name=f"q{self.token}{region[:2]}{index}g{self.generation}"[:15],
            env=env,
        )

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.quorum.start()
        for pod in self.all_pods:
            pod.start()

    def kill_region(self, region: str) -> None:
        """The region lost as a whole: its etcd member and every pod SIGKILLed at once."""
        self.quorum.kill(region)
        for pod in self.pods[region]:
            pod.kill9()

    def restore_region(self, region: str) -> None:
        """The region comes back: its member restarts on its data (rejoins), its pods are
        recreated (fresh emptyDirs, as after a node loss)."""
        self.quorum.start_member(region)
        for pod in list(self.pods[region]):
            self.replace(pod)

    def partition(self, region: str) -> None:
        self.net.partition(region)

    def heal(self, region: str | None = None) -> None:
        self.net.heal(region)

    def slow(self, region: str, seconds: float) -> None:
        """One-way latency on every link of ``region`` (0: none)."""
        self.net.set_delay(region, seconds)

    def stop(self) -> None:
        for pod in self.all_pods:
            pod.stop()
        for server in self.health.values():
            server.stop()
        self.quorum.stop()
        self.net.stop()

    # ---- observation -----------------------------------------------------------------------------
    def forging_regions(self) -> list[str]:
        return sorted({self.region_of(p) for p in self.forgers()})

    def holder(self) -> str | None:
        """The pool lock's holder (``region/pod``) as a linearizable read finds it; None when
        vacant or unreadable."""
        with contextlib.suppress(EtcdError):
            for _ in range(len(self.quorum.members)):
                try:
                    kv = self._reader.get(self.keys.lease)
                except EtcdError:
                    continue
                return None if kv is None else lease_record(kv).holder
        return None

    def cfc(self, region: str) -> dict[str, Any]:
        return read_cfc(self.cp, self.namespaces[region], region)

    def diagnose(self, lines: int = 15) -> str:
        logs = "\n".join(f"--- {p.name}\n{p.log_tail(lines)}" for p in self.all_pods)
        return (
            f"forgers now: {[p.name for p in self.forgers()]}; holder {self.holder()}; "
            f"etcd leader {self.quorum.leader()}\n{summary(self.spans())}\n{logs}"
        )
