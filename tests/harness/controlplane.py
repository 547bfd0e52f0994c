"""A real Kubernetes control plane on loopback: etcd + kube-apiserver, nothing mocked.

Used three ways:

* ``make cluster-up`` / ``make cluster-down`` (``python -m tests.harness.controlplane up|down``),
  which keep their state in ``.cluster/`` and leave the processes running in the background;
* the session-scoped pytest fixture ``control_plane`` (``tests/conftest.py``), which starts a
  private instance on free ports in a temporary directory and stops it at the end;
* the demo and the fault-injection suite, which stop and restart the API server on purpose.

Security is the real thing in miniature: TLS with a throwaway CA, an admin client certificate in
``system:masters``, RBAC authorization (not AlwaysAllow) and service-account tokens signed by a key
of the control plane, so the TokenRequest API works and a test can act as a ServiceAccount.
There is no controller manager, scheduler or kubelet: objects are stored and validated, nothing
runs them (namespaces that are deleted stay ``Terminating``, pods are never scheduled). A real
node is added on top by ``tests/harness/node.py`` (``make node-up``), which also starts a second
kube-apiserver on the node's bridge address (``start_bridge_apiserver``) so pods reach the API.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.96.0.0/24"
KUBERNETES_SERVICE_IP = "10.96.0.1"
BRIDGE_APISERVER = "kube-apiserver-bridge"
STOP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 90.0


class ControlPlaneError(RuntimeError):
    """A one-line explanation of what is wrong and what to run."""


def tool(name: str) -> str:
    """Path of a test-bed tool: ``.tools/bin`` first, then PATH."""
    candidate = TOOLS_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ControlPlaneError(f"{name} not found in .tools/bin or on PATH: run 'make tools'")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_port_free(port: int, what: str, variable: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ControlPlaneError(
                    f"port {port} ({what}) is already in use on 127.0.0.1: stop what listens "
                    f"there or choose another port, e.g. 'make cluster-up {variable}={port + 1}'"
                ) from None
            raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as dead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _binary_of(name: str) -> str:
    """The executable a recorded process name runs (the bridge API server is a kube-apiserver)."""
    return "kube-apiserver" if name == BRIDGE_APISERVER else name


def mounts_below(path: Path) -> list[str]:
    """Mount points at or below ``path`` (a tree with mounts must not be removed recursively)."""
    prefix = str(path.resolve())
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def remove_tree(path: Path) -> None:
    """``rm -rf path``, refused when something is still mounted below it (it would delete the
    mounted files): the node's mounts are released by ``make node-down``."""
    mounted = mounts_below(path)
    if mounted:
        raise ControlPlaneError(
            f"{path} still has {len(mounted)} mount(s) below it (first {mounted[0]}): "
            "run 'make node-down' first"
        )
    shutil.rmtree(path, ignore_errors=True)


def _pid_is(pid: int, binary: str) -> bool:
    """True when ``pid`` still runs ``binary`` (guards against PID reuse)."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except OSError:
        return False
    return Path(argv0).name == Path(binary).name


def _terminate(
    pid: int,
    binary: str,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = STOP_TIMEOUT_S,
) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; reaps through ``proc`` when we are the parent."""
    if proc is not None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return
    if not _pid_alive(pid) or not _pid_is(pid, binary):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(pki: Path) -> None:
    """A throwaway CA, the API server's serving certificate, an admin client certificate and
    the service-account signing key."""
    if shutil.which("openssl") is None:
        raise ControlPlaneError("openssl not found: run 'apt-get install openssl'")
    pki.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
             "-subj", "/CN=cardano-forge-test-ca", cwd=pki)  # fmt: skip
    leaf = {
        "apiserver": (
            "/CN=kube-apiserver",
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
            "extendedKeyUsage=serverAuth\n",
        ),
        "admin": ("/O=system:masters/CN=cardano-forge-admin", "extendedKeyUsage=clientAuth\n"),
    }
    for name, (subject, ext) in leaf.items():
        sign_leaf(pki, name, subject, ext)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for key in pki.glob("*.key"):
        key.chmod(0o600)


def sign_leaf(
    pki: Path, name: str, subject: str, extensions: str, out_dir: Path | None = None
) -> None:
    """``NAME.crt`` and ``NAME.key`` in ``out_dir`` (default ``pki``): an EC key and a
    certificate signed by the CA in ``pki``, with the subject and X.509 extensions (openssl
    ``-extfile`` lines) given."""
    pki = pki.resolve()
    out = (out_dir or pki).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (out / f"{name}.ext").write_text(extensions)
    _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject,
             cwd=out)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(pki / "ca.crt"),
             "-CAkey", str(pki / "ca.key"), "-CAserial", str(out / "ca.srl"), "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "365", "-extfile", f"{name}.ext",
             cwd=out)  # fmt: skip
    (out / f"{name}.key").chmod(0o600)


def b64_file(path: Path) -> str:
    """A file's bytes as base64 text (kubeconfig ``*-data`` fields)."""
    return base64.b64encode(path.read_bytes()).decode()


@dataclass
class ControlPlane:
    """etcd + kube-apiserver rooted in ``root``; ports 0 mean 'pick a free one'."""

    root: Path
    apiserver_port: int = 0
    etcd_port: int = 0
    etcd_peer_port: int = 0
    #: Set by ``start_bridge_apiserver``: the second API server's address (same port number).
    bridge_address: str | None = None
    pids: dict[str, int] = field(default_factory=dict)
    _children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    # ---- paths -------------------------------------------------------------------------------
    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    def log(self, component: str) -> Path:
        return self.root / f"{component}.log"

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start etcd and kube-apiserver and wait until ``/readyz`` answers ok.

        On failure nothing is left running and the error carries the component's log tail."""
        if self.apiserver_port:
            check_port_free(self.apiserver_port, "kube-apiserver", "APISERVER_PORT")
        if self.etcd_port:
            check_port_free(self.etcd_port, "etcd client", "ETCD_PORT")
        if self.etcd_peer_port:
            check_port_free(self.etcd_peer_port, "etcd peer", "ETCD_PEER_PORT")
        self.apiserver_port = self.apiserver_port or free_port()
        self.etcd_port = self.etcd_port or free_port()
        self.etcd_peer_port = self.etcd_peer_port or free_port()
        etcd_bin, apiserver_bin = tool("etcd"), tool("kube-apiserver")
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.pki / "sa.pub").exists():
            make_pki(self.pki)
        try:
            self._spawn("etcd", etcd_bin, self._etcd_args())
            self._wait_etcd()
            self.start_apiserver(apiserver_bin)
        except BaseException:
            self.stop(remove=False)
            raise
        self._write_kubeconfig()
        self.save_state()

    def _etcd_args(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        return [
            "--name=default",
            f"--data-dir={self.root / 'etcd-data'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--log-level=warn",
            # Test bed only: state is thrown away after each run, so skip fsync for speed.
            "--unsafe-no-fsync",
        ]

    def _apiserver_args(self, bridge: bool = False) -> list[str]:
        pki = self.pki
        if bridge:
            # The second API server: its lease reconciler makes its address the endpoint of the
            # kubernetes Service, and its certificate names that Service, so pods reach the API.
            address, cert, certs_dir = (
                self.bridge_address,
                "apiserver-bridge",
                "apiserver-bridge-certs",
            )
            reconciler = "lease"
        else:
            # No Endpoints for the kubernetes Service from this one: nothing outside a pod dials it.
            address, cert, certs_dir, reconciler = (
                "127.0.0.1",
                "apiserver",
                "apiserver-certs",
                "none",
            )
        return [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--bind-address={address}",
            f"--advertise-address={address}",
            f"--endpoint-reconciler-type={reconciler}",
            f"--secure-port={self.apiserver_port}",
            f"--tls-cert-file={pki / f'{cert}.crt'}",
            f"--tls-private-key-file={pki / f'{cert}.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--api-audiences={SERVICE_ACCOUNT_ISSUER}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--profiling=false",
            f"--cert-dir={self.root / certs_dir}",
            "--v=1",
        ]

    def _spawn(self, name: str, binary: str, args: list[str]) -> None:
        logf = self.log(name).open("ab")
        proc = subprocess.Popen(
            [binary, *args],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        logf.close()
        self._children[name] = proc
        self.pids[name] = proc.pid

    def _wait_etcd(self) -> None:
        deadline = time.monotonic() + 30
        url = f"http://127.0.0.1:{self.etcd_port}/health"
        while time.monotonic() < deadline:
            self._check_alive("etcd")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=2) as resp,
            ):
                if json.load(resp).get("health") == "true":
                    return
            time.sleep(0.2)
        raise ControlPlaneError(
            f"etcd did not become healthy within 30 s; its log ends:\n{_tail(self.log('etcd'))}"
        )

    def _check_alive(self, name: str) -> None:
        pid = self.pids.get(name)
        if pid is None or not _pid_alive(pid):
            raise ControlPlaneError(
                f"{name} exited during start-up; its log ends:\n{_tail(self.log(name))}"
            )

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def is_ready(self, timeout: float = 2.0, url: str | None = None) -> bool:
        try:
            with urllib.request.urlopen(
                f"{url or self.url}/readyz", timeout=timeout, context=self.ssl_context()
            ) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError, ssl.SSLError):
            return False

    def start_apiserver(self, binary: str | None = None) -> None:
        """(Re)start kube-apiserver against the running etcd and wait for ``/readyz``; the
        bridge API server too when one was started before (``start_bridge_apiserver``)."""
        binary = binary or tool("kube-apiserver")
        self._spawn("kube-apiserver", binary, self._apiserver_args())
        self._wait_ready("kube-apiserver", self.url)
        if self.bridge_address is not None and BRIDGE_APISERVER not in self.pids:
            self._spawn(BRIDGE_APISERVER, binary, self._apiserver_args(bridge=True))
            self._wait_ready(BRIDGE_APISERVER, self.bridge_url)
        self.save_state()

    def _wait_ready(self, name: str, url: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive(name)
            if self.is_ready(url=url):
                return
            time.sleep(0.25)
        raise ControlPlaneError(
            f"{name} not ready within {READY_TIMEOUT_S:.0f} s; its log ends:\n"
            f"{_tail(self.log(name))}"
        )

    @property
    def bridge_url(self) -> str:
        return f"https://{self.bridge_address}:{self.apiserver_port}"

    def start_bridge_apiserver(self, address: str) -> None:
        """Start a second kube-apiserver on ``address`` (a bridge address pods can route to),
        with the same port number, etcd, CA, service-account keys and issuer.

        Its lease endpoint reconciler makes ``address:port`` the endpoint of the ``kubernetes``
        Service (ClusterIP 10.96.0.1), and its serving certificate carries that IP and the
        Service's DNS names, so in-cluster clients (``KUBERNETES_SERVICE_HOST``) work. It stops
        and restarts with the first one (``stop_apiserver``/``start_apiserver``): an API outage
        is an outage for pods too."""
        if BRIDGE_APISERVER in self.pids and _pid_alive(self.pids[BRIDGE_APISERVER]):
            return
        self.bridge_address = address
        names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local", "localhost"]  # fmt: skip
        sans = ",".join([f"IP:{address}", f"IP:{KUBERNETES_SERVICE_IP}", "IP:127.0.0.1"]
                        + [f"DNS:{n}" for n in names])  # fmt: skip
        if not (self.pki / "apiserver-bridge.crt").exists():
            sign_leaf(self.pki, "apiserver-bridge", "/CN=kube-apiserver",
                      f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n")  # fmt: skip
        try:
            self._spawn(BRIDGE_APISERVER, tool("kube-apiserver"), self._apiserver_args(bridge=True))
            self._wait_ready(BRIDGE_APISERVER, self.bridge_url)
        except BaseException:
            self.stop_bridge_apiserver()
            raise
        self.save_state()

    def stop_bridge_apiserver(self) -> None:
        """Stop the second API server and forget it (``start_apiserver`` no longer restarts it)."""
        pid = self.pids.pop(BRIDGE_APISERVER, None)
        if pid is not None:
            _terminate(pid, "kube-apiserver", self._children.pop(BRIDGE_APISERVER, None))
        self.bridge_address = None
        if self.state_file.exists():
            self.save_state()

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver (and the bridge one) only; etcd keeps the state: an API outage."""
        for name in ("kube-apiserver", BRIDGE_APISERVER):
            pid = self.pids.pop(name, None)
            if pid is not None:
                _terminate(pid, "kube-apiserver", self._children.pop(name, None))
        self.save_state()

    def stop(self, *, remove: bool = True) -> None:
        for name in (BRIDGE_APISERVER, "kube-apiserver", "etcd"):
            pid = self.pids.pop(name, None)
            if pid is not None:
                _terminate(pid, _binary_of(name), self._children.pop(name, None))
        if remove:
            remove_tree(self.root)

    # ---- clients -----------------------------------------------------------------------------
    def _write_kubeconfig(self) -> None:
        self.write_kubeconfig(
            self.kubeconfig,
            user={
                "client-certificate-data": b64_file(self.pki / "admin.crt"),
                "client-key-data": b64_file(self.pki / "admin.key"),
            },
            user_name="admin",
        )

    def write_kubeconfig(
        self,
        path: Path,
        *,
        user: dict[str, str],
        user_name: str,
        namespace: str = "default",
        server: str | None = None,
    ) -> Path:
        """Write a kubeconfig for this control plane with the given credentials.

        ``server`` overrides the URL (a test routing through a loopback proxy)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "cardano-forge-test",
                    "cluster": {
                        "server": server or self.url,
                        "certificate-authority-data": b64_file(self.pki / "ca.crt"),
                    },
                }
            ],
            "users": [{"name": user_name, "user": user}],
            "contexts": [
                {
                    "name": user_name,
                    "context": {
                        "cluster": "cardano-forge-test",
                        "user": user_name,
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": user_name,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
        path.chmod(0o600)
        return path

    def token_kubeconfig(self, path: Path, token: str, namespace: str = "default") -> Path:
        """A kubeconfig that authenticates with a bearer token (e.g. a ServiceAccount's)."""
        return self.write_kubeconfig(
            path, user={"token": token}, user_name="token-user", namespace=namespace
        )

    def api_client(self, kubeconfig: Path | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` for the admin (or the given kubeconfig)."""
        from kubernetes import config  # noqa: PLC0415 (the CLI works without the client)

        return config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig or self.kubeconfig)
        )

    def apply_crd(self, body: dict[str, Any], timeout: float = 30.0) -> None:
        """Create (or replace) a CustomResourceDefinition and wait until it is Established and
        its resources are served (discovery catches up a moment after Established)."""
        from kubernetes import client  # noqa: PLC0415 (the CLI works without the client)
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        name = body["metadata"]["name"]
        spec = body["spec"]
        version = next(v["name"] for v in spec["versions"] if v.get("served", True))
        deadline = time.monotonic() + timeout
        with self.api_client() as api:
            ext: Any = client.ApiextensionsV1Api(api)  # takes the manifest as a dict
            try:
                ext.create_custom_resource_definition(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                current = ext.read_custom_resource_definition(name)
                replacement = json.loads(json.dumps(body))
                replacement["metadata"]["resourceVersion"] = current.metadata.resource_version
                ext.replace_custom_resource_definition(name, replacement)
            objects = client.CustomObjectsApi(api)
            while True:
                crd = ext.read_custom_resource_definition(name)
                conditions = {c.type: c.status for c in (crd.status.conditions or [])}
                if conditions.get("Established") == "True":
                    try:
                        objects.list_cluster_custom_object(
                            spec["group"], version, spec["names"]["plural"]
                        )
                        return
                    except ApiException as exc:
                        if exc.status != 404:
                            raise
                if time.monotonic() > deadline:
                    raise ControlPlaneError(f"CRD {name} not served within {timeout:g} s")
                time.sleep(0.2)

    # ---- state for the CLI ---------------------------------------------------------------------
    def save_state(self) -> None:
        state = {
            "apiserver_port": self.apiserver_port,
            "etcd_port": self.etcd_port,
            "etcd_peer_port": self.etcd_peer_port,
            "bridge_address": self.bridge_address,
            "pids": self.pids,
        }
        self.state_file.write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, root: Path) -> ControlPlane:
        state = json.loads((root / "state.json").read_text())
        return cls(
            root=root,
            apiserver_port=state["apiserver_port"],
            etcd_port=state["etcd_port"],
            etcd_peer_port=state["etcd_peer_port"],
            bridge_address=state.get("bridge_address"),
            pids={k: int(v) for k, v in state["pids"].items()},
        )

    def running(self) -> bool:
        return all(
            name in self.pids and _pid_alive(self.pids[name]) and _pid_is(self.pids[name], name)
            for name in ("etcd", "kube-apiserver")
        )


def _cmd_up(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if (root / "state.json").exists():
        existing = ControlPlane.load(root)
        if existing.running() and existing.is_ready():
            print(f"control plane already running at {existing.url}; kubeconfig: {root}/kubeconfig")
            return 0
        raise ControlPlaneError(
            f"stale {root}/ state from a control plane that is no longer running: "
            "run 'make cluster-down' and then 'make cluster-up'"
        )
    if root.exists() and any(root.iterdir()):
        raise ControlPlaneError(
            f"{root}/ exists without a state file (an interrupted start?): "
            "run 'make cluster-down' and then 'make cluster-up'"
        )
    cp = ControlPlane(
        root=root,
        apiserver_port=args.apiserver_port,
        etcd_port=args.etcd_port,
        etcd_peer_port=args.etcd_peer_port,
    )
    started = time.monotonic()
    try:
        cp.start()
    except BaseException:
        remove_tree(root)
        raise
    print(
        f"control plane ready at {cp.url} in {time.monotonic() - started:.1f} s "
        f"(etcd 127.0.0.1:{cp.etcd_port}); "
        f"export KUBECONFIG={root}/kubeconfig"
    )
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if (root / "state.json").exists():
        ControlPlane.load(root).stop(remove=True)
        print(f"control plane stopped; {root}/ removed")
    elif root.exists():
        remove_tree(root)
        print(f"no running control plane; {root}/ removed")
    else:
        print("no control plane state; nothing to stop")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if not (root / "state.json").exists():
        print("not running")
        return 1
    cp = ControlPlane.load(root)
    ok = cp.running() and cp.is_ready()
    print(f"{'ready' if ok else 'NOT ready'} at {cp.url}; pids {cp.pids}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="controlplane", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start etcd + kube-apiserver on loopback")
    up.add_argument("--apiserver-port", type=int, default=int(os.environ.get("APISERVER_PORT", 0)))
    up.add_argument("--etcd-port", type=int, default=int(os.environ.get("ETCD_PORT", 0)))
    up.add_argument("--etcd-peer-port", type=int, default=int(os.environ.get("ETCD_PEER_PORT", 0)))
    for p in (up, sub.add_parser("down", help="stop it"), sub.add_parser("status")):
        p.add_argument("--dir", default=".cluster")
    args = parser.parse_args(argv)
    handler = {"up": _cmd_up, "down": _cmd_down, "status": _cmd_status}[args.command]
    try:
        return handler(args)
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
