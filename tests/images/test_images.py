"""The built images (``make images``): what the chart expects of them, checked on the archives in
``.images/``, and each run briefly with runc the way the chart runs it (UID/GID 10001, read-only
root filesystem, no capabilities, no new privileges).

Nothing is built here. Without ``.images/images.json`` (or without root and runc) the tests skip,
unless ``CARDANO_FORGE_REQUIRE_IMAGES=1`` (``make test`` sets it after ``make images``): then
they fail.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import signal
import ssl
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from forge_manager import clock

from tests.harness import oci
from tests.harness.forge_pod import write_pool_secret
from tests.harness.forging_log import read_events
from tests.harness.node_standin import now

pytestmark = pytest.mark.images

CHART = oci.REPO_ROOT / "charts" / "cardano-forge"
FORGE_MANAGER = "ghcr.io/cardano-forge/forge-manager"
HEALTH_ENDPOINT = "ghcr.io/cardano-forge/health-endpoint"
NODE_STANDIN = "localhost/cardano-forge/node-standin"
SECRETS = "/opt/cardano/secrets"
CREDENTIALS = [f"{SECRETS}/kes.skey", f"{SECRETS}/vrf.skey", f"{SECRETS}/node.cert"]

# Files of this tree and where each image has them: an image built from another tree is stale.
SITE = "opt/venv/lib/python3.*/site-packages"
SOURCES = {
    FORGE_MANAGER: ("services/forge-manager/src/forge_manager", f"{SITE}/forge_manager"),
    HEALTH_ENDPOINT: ("services/health-endpoint/src/health_endpoint", f"{SITE}/health_endpoint"),
    NODE_STANDIN: ("tests/harness/node_standin.py", "usr/local/lib/node-standin/node_standin.py"),
}


def unavailable(need_runc: bool) -> None:
    reason = None
    if not (oci.IMAGES_DIR / "images.json").is_file():
        reason = "no .images/images.json: run 'make images'"
    elif need_runc:
        reason = oci.runc_available()
    if reason is None:
        return
    if os.environ.get("CARDANO_FORGE_REQUIRE_IMAGES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def images() -> dict[str, oci.Image]:
    unavailable(need_runc=False)
    return {i.repository: i for i in oci.manifest()}


@pytest.fixture(scope="module")
def rootfs(
    images: dict[str, oci.Image], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Path]]:
    """Each image unpacked once for the module (root filesystems, owned as in the image)."""
    unavailable(need_runc=True)
    base = tmp_path_factory.mktemp("rootfs")
    out = {}
    for repository, image in images.items():
        out[repository] = base / repository.rsplit("/", 1)[1]
        oci.unpack(image.archive, out[repository])
    yield out
    shutil.rmtree(base)  # a few hundred MiB: not left for pytest's retention of old runs


def container(
    images: dict[str, oci.Image], rootfs: dict[str, Path], repository: str, tmp: Path, **kw: object
) -> oci.Container:
    config = oci.image_config(images[repository].archive)
    return oci.Container(rootfs[repository], tmp, config, **kw)  # type: ignore[arg-type]


def shared_dir(path: Path, mode: int = 0o777) -> Path:
    """A host directory as an emptyDir: writable by the pod's UID."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


# ---- the archives -----------------------------------------------------------------------------


def test_manifest_names_the_charts_default_images(images: dict[str, oci.Image]) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    app = chart["appVersion"]
    assert values["forgeManager"]["image"]["repository"] == FORGE_MANAGER
    assert values["healthEndpoint"]["image"]["repository"] == HEALTH_ENDPOINT
    assert images[FORGE_MANAGER].name == f"{FORGE_MANAGER}:{app}"
    assert images[HEALTH_ENDPOINT].name == f"{HEALTH_ENDPOINT}:{app}"
    # The stand-in is a test image: never named like the real node's image.
    assert set(images) == {FORGE_MANAGER, HEALTH_ENDPOINT, NODE_STANDIN}
    assert values["node"]["image"]["repository"] not in images
    for image in images.values():
        assert image.archive.parent == oci.IMAGES_DIR and image.archive.suffix == ".tar"
        assert image.archive.stat().st_size == image.bytes
        assert oci.archive_manifest(image.archive)["RepoTags"] == [image.name]


@pytest.mark.parametrize(
    ("repository", "entrypoint"),
    [
        (FORGE_MANAGER, ["forge-manager"]),
        (HEALTH_ENDPOINT, ["python", "-m", "health_endpoint"]),
        (NODE_STANDIN, ["cardano-node"]),
    ],
)
def test_config_runs_as_the_charts_user_without_volumes(
    images: dict[str, oci.Image], repository: str, entrypoint: list[str]
) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    user = values["podSecurityContext"]
    config = oci.image_config(images[repository].archive)["config"]
    assert config["User"] == f"{user['runAsUser']}:{user['runAsGroup']}"
    assert config["Entrypoint"] == entrypoint
    # A VOLUME would be a writable place the chart does not mount; the root is read-only.
    assert not config.get("Volumes")
    assert "PYTHONDONTWRITEBYTECODE=1" in config["Env"]


def pem_certificates(data: bytes) -> set[bytes]:
    """The certificates of a PEM file, as DER."""
    blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.S)
    return {ssl.PEM_cert_to_DER_cert(b.decode("ascii")) for b in blocks}


def test_ca_bundle_is_debians_and_no_build_leftovers(images: dict[str, oci.Image]) -> None:
    """The build machine's CA bundle (a build secret of pip's step), pip's cache and the build
    stages' files stay out. The only CA bundle is the runtime base's, which Debian's
    ca-certificates package made from the certificates it ships (its version is in
    tools/images/python.lock): no layer the Dockerfiles add has one."""
    bundle = "etc/ssl/certs/ca-certificates.crt"
    for image in images.values():
        layers = oci.layer_names(image.archive)
        assert bundle not in set().union(*layers[1:]), image.name
        names = set().union(*layers)
        assert not [n for n in names if n.startswith(("root/.cache", "src/", "out/"))], image.name
    files = oci.read_files(
        images[FORGE_MANAGER].archive,
        lambda n: n == bundle or fnmatch.fnmatch(n, "usr/share/ca-certificates/mozilla/*.crt"),
    )
    in_bundle = pem_certificates(files.pop(bundle))
    shipped = set().union(*(pem_certificates(data) for data in files.values()))
    assert len(in_bundle) >= 100 and in_bundle == shipped


def pyc_of(source: str) -> str:
    """Where CPython looks for a module's .pyc: ``opt/venv/lib/python3.11/x/y.py`` ->
    ``opt/venv/lib/python3.11/x/__pycache__/y.cpython-311.pyc``."""
    version = re.search(r"/python3\.(\d+)/", source)
    assert version, source
    head, _, name = source.rpartition("/")
    return f"{head}/__pycache__/{name[:-3]}.cpython-3{version[1]}.pyc"


def test_python_images_have_no_installer_and_the_project_last(
    images: dict[str, oci.Image],
) -> None:
    """pip (and the build backend, unless a dependency requires it) stay in the build stages, and
    the asyncio halves of the clients out; the dependencies are a layer of their
    own and the project is the last, thin layer, so a change to its sources rebuilds and ships
    only that; every module has its .pyc beside it (compiled at build, hash-checked)."""
    for repository, package in (
        (FORGE_MANAGER, "forge_manager"),
        (HEALTH_ENDPOINT, "health_endpoint"),
    ):
        layers = oci.layer_names(images[repository].archive)
        names = set().union(*layers)
        # setuptools stays where a kept distribution requires it: pbr (etcd3gw's) does.
        absent = ["pip", "aiohttp"]
        if repository == FORGE_MANAGER:
            absent += ["kubernetes/aio", "prometheus_client/aiohttp"]
        else:
            absent += ["setuptools", "pkg_resources"]
        for tool in absent:
            assert not fnmatch.filter(names, f"{SITE}/{tool}/*"), (repository, tool)
        assert not fnmatch.filter(names, "opt/venv/bin/pip*"), repository
        # The last layer: the package, its metadata, its console script and their directories.
        last = layers[-1]
        assert fnmatch.filter(last, f"{SITE}/{package}/__init__.py"), repository
        parents = {n.rsplit("/", i)[0] for n in last for i in range(1, n.count("/") + 1)}
        outside = sorted(
            n
            for n in last - parents
            if not fnmatch.fnmatch(n, f"{SITE}/{package}/*")
            and not fnmatch.fnmatch(n, f"{SITE}/cardano_*.dist-info/*")
            and n != f"opt/venv/bin/{package.replace('_', '-')}"
        )
        assert outside == [], repository
        deps = [i for i, layer in enumerate(layers) if fnmatch.filter(layer, f"{SITE}/requests/*")]
        assert deps and deps[0] < len(layers) - 1, repository
        sources = {n for n in names if fnmatch.fnmatch(n, "opt/venv/lib/*.py")}
        missing = [n for n in sources if pyc_of(n) not in names]
        assert len(sources) > 100 and missing == [], (repository, missing[:5])


def test_images_are_built_from_this_tree(images: dict[str, oci.Image]) -> None:
    """The Python sources in each image are this tree's (else: run 'make images')."""
    for repository, (source, target) in SOURCES.items():
        here = oci.REPO_ROOT / source
        files = oci.read_files(
            images[repository].archive,
            lambda n, t=target: fnmatch.fnmatch(n, t) or fnmatch.fnmatch(n, f"{t}/*"),  # type: ignore[misc]
        )
        if here.is_file():
            assert list(files.values()) == [here.read_bytes()], f"{repository}: run 'make images'"
            continue
        expected = {
            str(p.relative_to(here)): p.read_bytes()
            for p in here.rglob("*.py")
            if "__pycache__" not in p.parts
        }
        inside = {
            n.partition(f"/{here.name}/")[2]: content
            for n, content in files.items()
            if n.endswith(".py")
        }
        differ = sorted(
            set(expected) ^ set(inside) | {k for k in expected if inside.get(k) != expected[k]}
        )
        assert not differ, f"{repository} is older than {source} ({differ}): run 'make images'"


# ---- the images, run --------------------------------------------------------------------------


def test_health_endpoint_serves_read_only_as_10001_without_warnings(
    images: dict[str, oci.Image], rootfs: dict[str, Path], tmp_path: Path
) -> None:
    """Its own network namespace; asked from inside (runc exec) as the container's user."""
    c = container(
        images, rootfs, HEALTH_ENDPOINT, tmp_path, env={"PROMETHEUS_URL": "http://127.0.0.1:9"}
    )
    ask = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/healthz').status)"
    c.start()
    try:
        oci.wait_until(lambda: c.exec("python", "-c", ask).stdout.strip() == "200", 60, "/healthz")
        assert c.exec("id", "-u").stdout.strip() == "10001"
        touch = c.exec("touch", "/opt/venv/x")
        assert touch.returncode != 0 and "Read-only file system" in touch.stderr
        status = c.exec("grep", "-E", "^(CapEff|NoNewPrivs)", "/proc/1/status").stdout.split()
        assert status == ["CapEff:", "0000000000000000", "NoNewPrivs:", "1"]
    finally:
        c.remove()
    log = c.output()
    assert "Booting worker" in log
    problems = [line for line in log.splitlines() if "[WARNING]" in line or "[ERROR]" in line]
    assert not problems, log


def test_forge_manager_starts_read_only_and_answers(
    images: dict[str, oci.Image], rootfs: dict[str, Path], tmp_path: Path
) -> None:
    """The chart's environment and mounts, an API server that does not answer: it keeps trying
    and serves its endpoints; nothing it does needs a writable root."""
    source = write_pool_secret(tmp_path / "source")
    kubeconfig = tmp_path / "kube" / "kubeconfig"
    kubeconfig.parent.mkdir()
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1",
                                              "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))  # fmt: skip
    env = {
        "POD_NAME": "pool-0", "NAMESPACE": "east", "LEASE_NAME": "pool-forge",
        "METRICS_PORT": "8000", "KUBECONFIG": "/var/run/kube/kubeconfig",
        "SOURCE_KES_KEY": "/var/run/cardano-forge/source/kes.skey",
        "SOURCE_VRF_KEY": "/var/run/cardano-forge/source/vrf.skey",
        "SOURCE_OP_CERT": "/var/run/cardano-forge/source/node.cert",
        "TARGET_KES_KEY": CREDENTIALS[0], "TARGET_VRF_KEY": CREDENTIALS[1],
        "TARGET_OP_CERT": CREDENTIALS[2], "NODE_SOCKET": "/ipc/node.socket",
        "CARDANO_NODE_PROCESS_NAME": "cardano-node", "FORGE_PERMIT_FILE": "/run/forge/permit",
        "CLUSTER_NAME": "test", "ENABLE_CLUSTER_MANAGEMENT": "false", "LOG_FORMAT": "text",
    }  # fmt: skip
    c = container(
        images, rootfs, FORGE_MANAGER, tmp_path, env=env,
        binds={SECRETS: shared_dir(tmp_path / "secrets"), "/ipc": shared_dir(tmp_path / "ipc"),
               "/run/forge": shared_dir(tmp_path / "run")},
        readonly_binds={"/var/run/cardano-forge/source": source,
                        "/var/run/kube": kubeconfig.parent},
        tmpfs=["/tmp"],
    )  # fmt: skip
    ask = (
        "import urllib.request as u, urllib.error as e\n"
        "try: print(u.urlopen('http://127.0.0.1:8000/health', timeout=2).status)\n"
        "except e.HTTPError as x: print(x.code)"
    )
    c.start()
    try:
        oci.wait_until(lambda: c.exec("python", "-c", ask).stdout.strip().isdigit(), 60, "/health")
        time.sleep(2)  # a few election attempts against the silent API server
        assert c.pid() is not None, c.output()
    finally:
        c.remove()
    log = c.output()
    assert "started as pool-0" in log, log
    for bad in ("Traceback", "Read-only file system", "Permission denied"):
        assert bad not in log, log
    # The credentials for the node's boot (it refuses to start without them), written as the
    # pod's user, readable by it alone.
    for name in ("kes.skey", "vrf.skey", "node.cert"):
        installed = (tmp_path / "secrets" / name).stat()
        assert (installed.st_uid, installed.st_gid) == (oci.UID, oci.GID)
        assert stat.S_IMODE(installed.st_mode) == 0o600


# What the genesis init container's HTTPS uses: Python's default TLS context (what urlopen takes
# without --ca-bundle), and how many CA certificates it verifies servers against.
DEFAULT_CA_STORE = """
import ssl, forge_manager.bootstrap
print(len(ssl.create_default_context().get_ca_certs()))
"""


def test_forge_manager_verifies_https_for_the_genesis_download(
    images: dict[str, oci.Image], rootfs: dict[str, Path], tmp_path: Path
) -> None:
    """The chart's default genesis init container runs ``python -m forge_manager.bootstrap`` in
    this image and fetches the networks' published files over HTTPS with Python's default TLS
    context: the image must have a CA store for it, or every fetch fails verification."""
    c = container(
        images, rootfs, FORGE_MANAGER, tmp_path, args=["python", "-c", DEFAULT_CA_STORE],
        tmpfs=["/tmp"],
    )  # fmt: skip
    assert c.run() == 0, c.output()
    count = c.output().split()[-1]
    assert count.isdigit() and int(count) >= 100, c.output()  # Mozilla's list: about 140


@pytest.mark.parametrize(
    ("repository", "modules"),
    [
        (FORGE_MANAGER, "forge_manager.__main__, forge_manager.bootstrap"),
        (HEALTH_ENDPOINT, "health_endpoint.__main__, gunicorn.app.base"),
    ],
)
def test_modules_load_from_their_pyc_on_a_read_only_root(
    images: dict[str, oci.Image],
    rootfs: dict[str, Path],
    tmp_path: Path,
    repository: str,
    modules: str,
) -> None:
    """Nothing the service imports from its virtualenv is compiled at start (the root is
    read-only, so it would be compiled again at every start): each comes from its .pyc."""
    c = container(
        images, rootfs, repository, tmp_path, args=["python", "-v", "-c", f"import {modules}"],
        tmpfs=["/tmp"],
    )  # fmt: skip
    assert c.run() == 0, c.output()[-3000:]
    log = c.output().splitlines()
    compiled = [x for x in log if re.fullmatch(r"# code object from /opt/venv/\S+\.py", x)]
    loaded = [x for x in log if re.fullmatch(r"# code object from '/opt/venv/\S+\.pyc'", x)]
    assert compiled == [], compiled[:5]
    assert len(loaded) > 50, log[-20:]


def test_node_standin_under_forge_guard_as_the_chart_runs_it(
    images: dict[str, oci.Image], rootfs: dict[str, Path], tmp_path: Path
) -> None:
    """install-forge-guard copies the guard out of the forge-manager image; the node container
    runs it with the chart's command line in the stand-in image. The guard forwards SIGHUP and
    revokes an expired permit (credentials removed, node signalled) without writing the permit;
    events carry t from the host-wide CLOCK_BOOTTIME, the clock of the permit."""
    forge_bin = shared_dir(tmp_path / "forge-bin")
    install = container(
        images, rootfs, FORGE_MANAGER, tmp_path,
        args=["cp", "/usr/local/bin/forge-guard", "/forge-bin/forge-guard"],
        binds={"/forge-bin": forge_bin},
    )  # fmt: skip
    assert install.run() == 0, install.output()
    assert (forge_bin / "forge-guard").stat().st_mode & stat.S_IXUSR

    config = shared_dir(tmp_path / "config", 0o755)
    (config / "config.json").write_text("{}\n")
    (config / "topology.json").write_text("{}\n")
    secrets = shared_dir(tmp_path / "secrets")
    source = write_pool_secret(tmp_path / "source")
    for path in CREDENTIALS:  # as the forge manager installs them: 0600, the pod's UID
        target = secrets / Path(path).name
        target.write_bytes((source / target.name).read_bytes())
        target.chmod(0o600)
        os.chown(target, oci.UID, oci.GID)
    ipc, run, data = (shared_dir(tmp_path / d) for d in ("ipc", "run", "data"))
    permit = run / "permit"
    args = [
        "/forge-bin/forge-guard", "--permit-file", "/run/forge/permit",
        "--credentials", ",".join(CREDENTIALS), "--socket", "/ipc/node.socket", "--",
        "cardano-node", "run", "--config", "/opt/cardano/config/config.json",
        "--topology", "/opt/cardano/config/topology.json", "--database-path", "/data/db",
        "--socket-path", "/ipc/node.socket", "--host-addr", "0.0.0.0", "--port", "3001",
        "--shelley-kes-key", CREDENTIALS[0], "--shelley-vrf-key", CREDENTIALS[1],
        "--shelley-operational-certificate", CREDENTIALS[2], "--start-as-non-producing-node",
        "--startup-delay", "0.5",
    ]  # fmt: skip
    node = container(
        images, rootfs, NODE_STANDIN, tmp_path, args=args,
        env={"STANDIN_EVENT_LOG": "/ipc/events.jsonl"},
        binds={SECRETS: secrets, "/ipc": ipc, "/run/forge": run, "/data": data},
        readonly_binds={"/opt/cardano/config": config, "/forge-bin": forge_bin},
        tmpfs=["/tmp"],
    )  # fmt: skip

    def events() -> list[str]:
        return [e["event"] for e in read_events([ipc / "events.jsonl"])]

    def write_permit(deadline_ns: int) -> None:
        line = f"boottime {deadline_ns} {clock.boot_id()}\n"  # as forge_manager.permit_file
        (run / "permit.tmp").write_text(line)
        os.chown(run / "permit.tmp", oci.UID, oci.GID)
        (run / "permit.tmp").replace(permit)

    node.start()
    try:
        oci.wait_until(lambda: "socket_up" in events(), 60, f"socket_up: {node.output()}")
        guard = node.pid()
        assert guard is not None
        tasks = Path(f"/proc/{guard}/task").iterdir()  # Go forks from any of its threads
        children = [c for t in tasks for c in (t / "children").read_text().split()]
        assert [Path(f"/proc/{p}/comm").read_text().strip() for p in children] == ["cardano-node"]
        ids = {
            line.split()[0]: set(line.split()[1:])
            for line in Path(f"/proc/{children[0]}/status").read_text().splitlines()
            if line.startswith(("Uid:", "Gid:"))
        }
        assert ids == {"Uid:": {str(oci.UID)}, "Gid:": {str(oci.GID)}}
        write_permit(time.clock_gettime_ns(time.CLOCK_BOOTTIME) + 60 * 10**9)
        node.kill(signal.SIGHUP)  # to forge-guard, which forwards it to the node
        oci.wait_until(lambda: "forging_started" in events(), 30, "forging_started")
        expired = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - 1
        write_permit(expired)
        oci.wait_until(lambda: "forging_stopped" in events(), 30, "revocation by forge-guard")
        assert not [p for p in secrets.iterdir() if p.name in {"kes.skey", "vrf.skey", "node.cert"}]
        assert permit.read_text().split()[:2] == ["boottime", str(expired)]  # never rewritten
        node.kill(signal.SIGTERM)
        assert node.process is not None
        assert node.process.wait(timeout=30) == 0, node.output()
    finally:
        node.remove()
    logged = read_events([ipc / "events.jsonl"])
    assert [e["event"] for e in logged] == [
        "started", "socket_up", "forging_started", "forging_stopped", "exited",
    ]  # fmt: skip
    assert {e["name"] for e in logged} == {"cardano-node"}
    assert {e["host"] for e in logged} == {node.name}
    assert 0 < now() - logged[-1]["t"] < 60  # the host's CLOCK_BOOTTIME, as the harness reads it
    on_stdout = [json.loads(x) for x in node.output().splitlines() if x.startswith('{"t"')]
    assert on_stdout == logged
    assert "Traceback" not in node.output()
