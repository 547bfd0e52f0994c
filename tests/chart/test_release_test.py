"""The chart's ``helm test`` script (``files/release-test.py``) passes and fails when it should.

It runs here as the test hook runs it (``python3 -c <script>``), against forge managers made of
small HTTP servers on loopback addresses (one per "pod") and, with cluster management, a real
pool-wide Lease on the session's API server. The real-pod tier runs it through ``helm test``.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.harness.controlplane import ControlPlane, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = (REPO_ROOT / "charts" / "cardano-forge" / "files" / "release-test.py").read_text()
PODS = ("127.0.0.2", "127.0.0.3")


class Manager:
    """What a forge manager answers on /health, /startup-status and /metrics."""

    def __init__(self, address: str, port: int) -> None:
        self.forging = False
        self.health = 200
        manager = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    status = 200
                    body = f'cardano_forging_enabled{{pod="p"}} {float(manager.forging)}\n'
                elif self.path == "/health":
                    status, body = manager.health, "{}"
                elif self.path == "/startup-status":
                    status, body = 200, '{"status": "ready"}'
                else:
                    status, body = 404, ""
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((address, port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def managers() -> Iterator[dict[str, Manager]]:
    port = free_port()
    started = {pod: Manager(pod, port) for pod in PODS}
    yield started
    for manager in started.values():
        manager.stop()


def run(managers: dict[str, Manager], **env: str) -> subprocess.CompletedProcess[str]:
    port = next(iter(managers.values())).server.server_address[1]
    environment = {
        "PATH": os.environ["PATH"],
        "PODS": ",".join(PODS),
        "MANAGER_PORT": str(port),
        "REGION": "east",
        "RELEASE_TEST_TIMEOUT": "2",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env=environment, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def test_one_forger_and_every_manager_answering_passes(managers: dict[str, Manager]) -> None:
    managers[PODS[1]].forging = True

    result = run(managers)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"forging: {PODS[1]}" in result.stdout


def test_two_forgers_fail_at_once(managers: dict[str, Manager]) -> None:
    for manager in managers.values():
        manager.forging = True

    result = run(managers, RELEASE_TEST_TIMEOUT="60")

    assert result.returncode == 1
    assert "FAIL: 2 pods of this release forge at once" in result.stdout


@pytest.mark.parametrize(
    "break_it, expected",
    [
        (lambda m: setattr(m[PODS[0]], "health", 503), f"{PODS[0]}/health answered 503"),
        (lambda m: m[PODS[1]].stop(), f"{PODS[1]}/health answered nothing"),
        (lambda m: setattr(m[PODS[0]], "forging", False), "no pod of this release forges"),
    ],
)
def test_a_silent_manager_or_no_forger_fails_after_the_timeout(
    managers: dict[str, Manager], break_it: Callable[[dict[str, Manager]], None], expected: str
) -> None:
    managers[PODS[0]].forging = True
    break_it(managers)

    result = run(managers)

    assert result.returncode == 1
    assert "FAIL after 2 s" in result.stdout and expected in result.stdout


@pytest.mark.integration
@pytest.mark.parametrize(
    ("holder", "forging", "passes"),
    [
        (f"east/{PODS[0]}", PODS[0], True),
        (f"east/{PODS[0]}", PODS[1], False),  # this region holds it, the wrong pod forges
        ("west/west-0", None, True),  # another region holds it: none of ours forges
        ("west/west-0", PODS[0], False),
        ("", None, True),  # vacant: nobody forges
    ],
)
def test_with_cluster_management_the_pool_lease_says_who_forges(
    managers: dict[str, Manager],
    control_plane: ControlPlane,
    kube_namespace: str,
    holder: str,
    forging: str | None,
    passes: bool,
) -> None:
    with control_plane.api_client() as api:
        client.CoordinationV1Api(api).create_namespaced_lease(
            kube_namespace,
            client.V1Lease(
                metadata=client.V1ObjectMeta(name="cardano-forge-pool"),
                spec=client.V1LeaseSpec(holder_identity=holder or None),
            ),
        )
    if forging:
        managers[forging].forging = True

    result = run(
        managers,
        COORDINATION_NAMESPACE=kube_namespace,
        POOL_LEASE_NAME="cardano-forge-pool",
        COORDINATION_KUBECONFIG=str(control_plane.kubeconfig),
    )

    assert (result.returncode == 0) is passes, result.stdout + result.stderr
    if not passes:
        assert f"pool-wide Lease held by {holder}" in result.stdout
