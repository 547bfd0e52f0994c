"""The etcd client of the coordination backend against real etcd: TLS with client certificates,
linearizable reads on a member cut off from the quorum, and the pool lock's compare-and-swap
between two regions' clients."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from forge_manager.cluster.etcd_client import Etcd, EtcdError
from forge_manager.cluster.etcd_settings import EtcdSettings
from forge_manager.cluster.etcd_store import EtcdPoolLease, Keys, watched_record
from forge_manager.cluster.etcd_watch import EtcdWatchSource, HttpWatchTransport, key_name
from forge_manager.lease import LeaseLost
from forge_manager.watch import WatchedLease

from tests.harness.controlplane import ControlPlane, free_port, make_pki, sign_leaf, tool
from tests.harness.etcd_quorum import EtcdQuorum
from tests.harness.regionnet import RegionNet

pytestmark = [pytest.mark.integration]

MEMBER_MANIFEST = (
    Path(__file__).resolve().parents[2] / "services/forge-manager/docs/etcd-member.yaml"
)


@pytest.fixture
def tls_etcd(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """One etcd member serving TLS and requiring client certificates of the test CA."""
    pki = tmp_path / "pki"
    make_pki(pki)
    # etcd's gateway dials etcd's own gRPC port with the serving certificate as its client
    # certificate: without clientAuth it cannot (x509: incompatible key usage).
    sign_leaf(
        pki,
        "etcd",
        "/CN=etcd-east",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    sign_leaf(pki, "client", "/CN=forge-east", "extendedKeyUsage=clientAuth\n")
    port, peer = free_port(), free_port()
    url = f"https://127.0.0.1:{port}"
    with (tmp_path / "etcd.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                tool("etcd"),
                f"--data-dir={tmp_path / 'data'}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                f"--cert-file={pki / 'etcd.crt'}",
                f"--key-file={pki / 'etcd.key'}",
                f"--trusted-ca-file={pki / 'ca.crt'}",
                "--client-cert-auth",
                "--log-level=warn",
                "--unsafe-no-fsync",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        settings = EtcdSettings(
            (url,), pki / "ca.crt", pki / "client.crt", pki / "client.key", "/t"
        )
        client = Etcd(settings, timeout=2.0)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.get("/t/ready")
                break
            except EtcdError:
                assert proc.poll() is None, (tmp_path / "etcd.log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "etcd.log").read_text()
                time.sleep(0.2)
        yield url, pki
    finally:
        proc.terminate()
        proc.wait(15)


def test_tls_with_a_client_certificate(tls_etcd: tuple[str, Path]) -> None:
    url, pki = tls_etcd
    good = Etcd(
        EtcdSettings((url,), pki / "ca.crt", pki / "client.crt", pki / "client.key", "/t"),
        timeout=2.0,
    )
    lock = EtcdPoolLease(good, key="/t/pool/lease", identity="east/bp-0", lease_duration=15)
    lock.create_vacant()
    record = lock.read()
    assert record is not None and record.holder is None
    assert lock.acquire(record, lock.new_renew_stamp()).holder == "east/bp-0"
    without_cert = Etcd(EtcdSettings((url,), pki / "ca.crt", None, None, "/t"), timeout=2.0)
    with pytest.raises(EtcdError):
        without_cert.get("/t/pool/lease")
    untrusted = Etcd(
        EtcdSettings((url,), None, pki / "client.crt", pki / "client.key", "/t"), timeout=2.0
    )
    with pytest.raises(EtcdError, match=r"SSL|certificate"):
        untrusted.get("/t/pool/lease")


@pytest.fixture
def quorum(tmp_path: Path) -> Iterator[EtcdQuorum]:
    net = RegionNet()
    q = EtcdQuorum(tmp_path, ["east", "west", "witness"], net)
    try:
        q.start()
        yield q
    finally:
        q.stop()
        net.stop()


def _serializable_read(url: str, key: str) -> bytes | None:
    body = json.dumps({"key": base64.b64encode(key.encode()).decode(), "serializable": True})
    req = urllib.request.Request(
        f"{url}/v3/kv/range", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=2) as resp:
        kvs = json.load(resp).get("kvs") or []
    return base64.b64decode(kvs[0]["value"]) if kvs else None


def test_a_member_cut_off_from_the_quorum_answers_no_read_that_decides(quorum: EtcdQuorum) -> None:
    """What a cut-off member still holds is stale: a serializable read would return it; the
    backend's reads are linearizable and fail instead (which ends in "not forging")."""
    keys = Keys("/t", "pool")

    def client(region: str) -> Etcd:
        urls = (quorum.members[region].client_url,)
        return Etcd(EtcdSettings(urls, None, None, None, "/t"), timeout=1.0)

    east, west = client("east"), client("west")
    east.put(keys.lease, b"old")
    quorum.net.partition("east")
    deadline = time.monotonic() + 30
    while True:
        try:
            west.put(keys.lease, b"new")
            break
        except EtcdError:
            assert time.monotonic() < deadline, "the majority side never accepted a write"
            time.sleep(0.2)
    assert _serializable_read(quorum.members["east"].client_url, keys.lease) == b"old"
    with pytest.raises(EtcdError):
        east.get(keys.lease)
    quorum.net.heal("east")
    deadline = time.monotonic() + 30
    while True:
        try:
            kv = east.get(keys.lease)
            break
        except EtcdError:
            assert time.monotonic() < deadline, "the healed member never caught up"
            time.sleep(0.2)
    assert kv is not None and kv.value == b"new"


def test_two_regions_race_for_the_lock_one_wins(quorum: EtcdQuorum) -> None:
    keys = Keys("/t", "pool")
    locks = {}
    for region in ("east", "west"):
        urls = tuple(quorum.endpoints(region))
        etcd = Etcd(EtcdSettings(urls, None, None, None, "/t"), timeout=1.0)
        locks[region] = EtcdPoolLease(
            etcd, key=keys.lease, identity=f"{region}/bp-0", lease_duration=15
        )
    locks["east"].create_vacant()
    vacant = locks["west"].read()
    assert vacant is not None and vacant.holder is None
    won = locks["east"].acquire(vacant, locks["east"].new_renew_stamp())
    with pytest.raises(LeaseLost):
        locks["west"].acquire(vacant, locks["west"].new_renew_stamp())
    seen = locks["west"].read()
    assert seen == won


def test_the_reference_member_manifest_is_accepted_and_its_flags_known(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """The operator guide's etcd member: the API server accepts the manifest (server-side dry
    run), and every flag it passes is one the etcd this project tests against knows."""
    namespace = "cardano-forge-etcd"
    kubectl = [tool("kubectl"), f"--kubeconfig={control_plane.kubeconfig}"]
    subprocess.run(
        [*kubectl, "create", "namespace", namespace], capture_output=True, timeout=60
    )  # already there on a rerun against the same control plane
    applied = subprocess.run(
        [*kubectl, "apply", "--dry-run=server", "-f", str(MEMBER_MANIFEST)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stderr
    assert "statefulset.apps/etcd-east created (server dry run)" in applied.stdout
    flags = set(re.findall(r"^\s*- (--[a-z-]+)=", MEMBER_MANIFEST.read_text(), re.MULTILINE))
    assert len(flags) > 20
    known = subprocess.run([tool("etcd"), "--help"], capture_output=True, text=True, timeout=30)
    text = known.stdout + known.stderr
    unknown = sorted(f for f in flags if not re.search(re.escape(f) + r"(?![a-z-])", text))
    assert not unknown, f"flags etcd does not know: {unknown}"


def _until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_watch_follows_the_lock_through_deletion_compaction_and_a_lost_member(
    quorum: EtcdQuorum,
) -> None:
    """The gateway's watch stream as the followers use it: events for writes and a deletion,
    410 for a compacted revision, and with the lost member first in the order the watch and
    the calls move on when its member is killed."""
    keys = Keys("/t", "pool")
    order = ["east", "west", "witness"]
    settings = EtcdSettings(tuple(quorum.endpoints("west", order)), None, None, None, "/t")
    calls = Etcd(settings, timeout=1.0)
    writer = EtcdPoolLease(
        Etcd(EtcdSettings(tuple(quorum.endpoints("witness")), None, None, None, "/t"), timeout=1.0),
        key=keys.lease,
        identity="witness/bp-0",
        lease_duration=15,
    )
    source = EtcdWatchSource(
        Etcd(settings, timeout=1.0),
        HttpWatchTransport(settings, request_timeout=1.0),
        key=keys.lease,
        range_end=None,
        name_of=key_name(keys.lease),
        clock=time.monotonic,
        calls=calls,
    )
    watched = WatchedLease(
        source,
        keys.lease,
        what="pool lock",
        clock=time.monotonic,
        retry_period=0.2,
        record=watched_record,
    )
    watched.start()
    try:
        _until(lambda: watched.observed() is not None, "the watch live")
        observed = watched.observed()
        assert observed is not None and observed.record is None  # not written yet
        writer.create_vacant()
        rec = writer.acquire(writer.read(), writer.new_renew_stamp())
        _until(
            lambda: (
                (o := watched.observed()) is not None
                and o.record is not None
                and o.record.holder == "witness/bp-0"
            ),
            "the acquisition seen",
        )
        observed = watched.observed()
        assert observed is not None and observed.record == rec
        assert source.opened == [0]
        Etcd(settings, timeout=1.0)._post(
            "/kv/deleterange", {"key": base64.b64encode(keys.lease.encode()).decode()}
        )
        _until(lambda: (o := watched.observed()) is not None and o.record is None, "the delete")
        deleted_at = int(watched.observed().version)  # type: ignore[union-attr]
        # A compacted revision: a watch from before it is told so (410 for the watcher).
        writer.create_vacant()
        head = writer.read()
        assert head is not None
        Etcd(settings, timeout=1.0)._post("/kv/compaction", {"revision": head.resource_version})
        stream = source.watch(str(deleted_at - 2), 60)
        try:
            first = next(iter(stream))
        finally:
            stream.close()
        assert first["type"] == "ERROR" and first["object"]["code"] == 410
        # The lost member first: east killed, the watch and the calls move on.
        opened = len(source.opened)
        quorum.kill("east")
        _until(lambda: len(source.opened) > opened and source.opened[-1] != 0, "a new watch")
        assert calls.current == settings.endpoints[1]
        rec = writer.acquire(writer.read(), writer.new_renew_stamp())
        _until(
            lambda: (o := watched.observed()) is not None and o.version == rec.resource_version,
            "the acquisition seen after the loss",
        )
    finally:
        watched.stop()
