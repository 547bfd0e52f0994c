"""``check``: a values file before ``helm install``, or a running release.

For a values file: the chart is rendered with ``helm template`` when helm and the chart are at
hand (its own ``fail`` checks run then), and the forge manager's environment is checked with the
forge manager's own code: :func:`forge_manager.timing.check_timing` (the timing inequality),
:func:`forge_manager.config.load_settings` and, with cluster management,
:func:`forge_manager.cluster.settings.load_cluster_settings`. Without helm, the same checks run on
the environment the chart would derive from the values.

For a running release: the same on its StatefulSet's environment, then RBAC as the release's
ServiceAccount (SelfSubjectAccessReview while impersonating it, which is ``kubectl auth can-i
--as``), the CardanoForgeCluster CRD, the coordination API's answer time against
``KUBE_REQUEST_TIMEOUT``, the health endpoint, and each forge manager's ``/health``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from forge_manager.cluster.settings import ClusterConfigError, load_cluster_settings
from forge_manager.config import ConfigError, load_settings
from forge_manager.timing import (
    DEMOTION_BUDGET_S,
    SAFETY_MARGIN_S,
    Timing,
    TimingError,
    check_timing,
)

from cardano_forge_cli.errors import CliError
from cardano_forge_cli.kube import (
    CFC_CRD,
    CFC_GROUP,
    CFC_PLURAL,
    Kube,
    NotFound,
    Target,
    core_path,
    group_path,
    region_path,
)
from cardano_forge_cli.model import (
    BLOCK_PRODUCER_SELECTOR,
    DEFAULT_POOL_LEASE,
    MANAGER_CONTAINER,
    container_env,
    workload_from_pod,
    workloads_from_statefulset,
)
from cardano_forge_cli.table import render_table

OK, FAIL, WARN, SKIP = "ok", "FAIL", "warn", "skip"
HELM_TIMEOUT_S = 120.0
DEFAULT_KUBE_VERSION = "1.34.0"
"""What ``helm template`` renders for by default (the chart needs 1.29 or later)."""

# What the chart derives from its values when helm is not at hand (templates/statefulset.yaml).
CHART_FIXED_ENV = {
    "SOURCE_KES_KEY": "/var/run/cardano-forge/source/kes.skey",
    "SOURCE_VRF_KEY": "/var/run/cardano-forge/source/vrf.skey",
    "SOURCE_OP_CERT": "/var/run/cardano-forge/source/node.cert",
    "TARGET_KES_KEY": "/opt/cardano/secrets/kes.skey",
    "TARGET_VRF_KEY": "/opt/cardano/secrets/vrf.skey",
    "TARGET_OP_CERT": "/opt/cardano/secrets/node.cert",
    "NODE_SOCKET": "/ipc/node.socket",
}


@dataclass(frozen=True)
class Finding:
    status: str
    check: str
    message: str

    def document(self) -> dict[str, str]:
        return {"status": self.status, "check": self.check, "message": self.message}


def failed(findings: Sequence[Finding]) -> bool:
    return any(f.status == FAIL for f in findings)


def render_findings(findings: Sequence[Finding]) -> str:
    return render_table(
        ["status", "check", "detail"], [[f.status, f.check, f.message] for f in findings], gap=2
    )


# ---- the forge manager's environment (pure) ---------------------------------------------------
def _seconds(env: Mapping[str, str], name: str, default: str) -> float:
    raw = env.get(name) or default
    try:
        return float(raw)
    except ValueError:
        raise TimingError(f"{name}={raw!r} is not a number of seconds") from None


def timing_finding(env: Mapping[str, str]) -> Finding:
    try:
        t = Timing(
            lease_duration=_seconds(env, "LEASE_DURATION", "15"),
            renew_deadline=_seconds(env, "LEASE_RENEW_DEADLINE", "10"),
            retry_period=_seconds(env, "LEASE_RETRY_PERIOD", "2"),
            request_timeout=_seconds(env, "KUBE_REQUEST_TIMEOUT", "1"),
        )
        check_timing(t)
    except TimingError as exc:
        return Finding(FAIL, "timing", str(exc))
    return Finding(
        OK,
        "timing",
        f"retry period {t.retry_period:g} + renew deadline {t.renew_deadline:g} + request "
        f"timeout {t.request_timeout:g} + demotion {DEMOTION_BUDGET_S:g} + margin "
        f"{SAFETY_MARGIN_S:g} = {t.worst_case_demotion:g} s <= lease duration "
        f"{t.lease_duration:g} s",
    )


def env_findings(env: Mapping[str, str]) -> list[Finding]:
    """The timing inequality, then the rest of the forge manager's configuration."""
    timing = timing_finding(env)
    out = [timing]
    try:
        load_settings(env)
    except ConfigError as exc:
        if timing.status == OK or str(exc) != timing.message:
            out.append(Finding(FAIL, "config", str(exc)))
    else:
        out.append(Finding(OK, "config", "forge-manager environment valid"))
    if env.get("ENABLE_CLUSTER_MANAGEMENT", "").strip().lower() == "true":
        try:
            s = load_cluster_settings(env)
        except ClusterConfigError as exc:
            out.append(Finding(FAIL, "cluster-config", str(exc)))
        else:
            out.append(
                Finding(
                    OK,
                    "cluster-config",
                    f"region {s.crd_name}, priority {s.priority}, pool Lease {s.pool_lease_name}",
                )
            )
    return out


def _get(values: Mapping[str, Any], *path: str, default: Any = None) -> Any:
    node: Any = values
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


def env_from_values(values: Mapping[str, Any], *, release: str, namespace: str) -> dict[str, str]:
    """The forge manager's environment as the chart would render it (no helm)."""
    fm = _get(values, "forgeManager", default={}) or {}
    env = {
        "POD_NAME": f"{release}-cardano-forge-0",
        "NAMESPACE": namespace,
        "LEASE_NAME": str(_get(fm, "lease", "name", default="cardano-node-leader")),
        "LEASE_DURATION": str(_get(fm, "lease", "durationSeconds", default=15)),
        "LEASE_RENEW_DEADLINE": str(_get(fm, "lease", "renewDeadlineSeconds", default=10)),
        "LEASE_RETRY_PERIOD": str(_get(fm, "lease", "retryPeriodSeconds", default=2)),
        "METRICS_PORT": str(_get(fm, "port", default=8000)),
        "LOG_LEVEL": str(_get(fm, "logLevel", default="INFO")),
        "LOG_FORMAT": str(_get(fm, "logFormat", default="json")),
        **CHART_FIXED_ENV,
    }
    cm = _get(fm, "clusterManagement", default={}) or {}
    cluster_name = str(_get(cm, "clusterName", default="") or namespace)
    env["CLUSTER_NAME"] = cluster_name
    env["ENABLE_CLUSTER_MANAGEMENT"] = "true" if _get(cm, "enabled", default=False) else "false"
    if env["ENABLE_CLUSTER_MANAGEMENT"] == "true":
        env["CLUSTER_PRIORITY"] = str(_get(cm, "priority", default=1))
        env["CLUSTER_CRD_NAME"] = cluster_name
        env["POOL_LEASE_NAME"] = str(
            _get(cm, "coordination", "poolLeaseName", default=DEFAULT_POOL_LEASE)
        )
        env["COORDINATION_NAMESPACE"] = str(
            _get(cm, "coordination", "namespace", default="") or namespace
        )
        hc = _get(cm, "healthCheck", default={}) or {}
        if _get(hc, "enabled", default=False):
            env["HEALTH_CHECK_ENDPOINT"] = str(_get(hc, "endpoint", default="") or "")
            env["HEALTH_CHECK_INTERVAL"] = str(_get(hc, "interval", default=30))
            env["HEALTH_CHECK_TIMEOUT"] = str(_get(hc, "timeout", default=10))
            env["HEALTH_CHECK_FAILURE_THRESHOLD"] = str(_get(hc, "failureThreshold", default=3))
    for item in _get(fm, "extraEnv", default=[]) or []:
        if isinstance(item, Mapping) and "name" in item and "value" in item:
            env[str(item["name"])] = str(item["value"])
    return env


def manager_env_from_manifests(text: str, *, namespace: str) -> list[tuple[str, dict[str, str]]]:
    """``(statefulset, env)`` of every block-producer StatefulSet in rendered manifests."""
    out = []
    for doc in yaml.safe_load_all(text):
        if not isinstance(doc, dict) or doc.get("kind") != "StatefulSet":
            continue
        for w in workloads_from_statefulset(doc)[:1]:
            out.append(
                (
                    str(doc["metadata"]["name"]),
                    dict(w.env) | {"NAMESPACE": w.namespace or namespace},
                )
            )
    return out


# ---- values files ------------------------------------------------------------------------------
def check_values(
    files: Sequence[Path],
    *,
    chart: str | None,
    helm: str | None,
    release: str,
    namespace: str,
    kube_version: str = DEFAULT_KUBE_VERSION,
) -> list[Finding]:
    values: dict[str, Any] = {}
    for path in files:
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise CliError(f"cannot read values file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise CliError(
                f"values file {path} is not valid YAML: {str(exc).splitlines()[0]}"
            ) from None
        if loaded is None:
            continue
        if not isinstance(loaded, dict):
            raise CliError(
                f"values file {path} must hold a mapping at the top, not {type(loaded).__name__}"
            )
        _merge(values, loaded)
    findings: list[Finding] = []
    helm_bin = helm or shutil.which("helm")
    chart_ref = chart or _default_chart()
    if helm_bin and chart_ref:
        args = [
            helm_bin,
            "template",
            release,
            chart_ref,
            "--namespace",
            namespace,
            "--kube-version",
            kube_version,
        ]
        for path in files:
            args += ["-f", str(path)]
        try:
            done = subprocess.run(
                args, capture_output=True, text=True, timeout=HELM_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CliError(f"cannot run {helm_bin}: {exc}") from None
        if done.returncode != 0:
            return [Finding(FAIL, "helm", helm_error(done.stderr))]
        findings.append(Finding(OK, "helm", f"helm template {chart_ref} rendered"))
        rendered = manager_env_from_manifests(done.stdout, namespace=namespace)
        if not rendered:
            findings.append(
                Finding(FAIL, "helm", f"no StatefulSet labelled {BLOCK_PRODUCER_SELECTOR} rendered")
            )
        for _, env in rendered:
            findings += env_findings(env)
        return findings
    why = "helm not found on PATH" if not helm_bin else "no chart (pass --chart PATH)"
    findings.append(
        Finding(
            SKIP,
            "helm",
            f"{why}: checked the forge manager's environment "
            "derived from the values, without the chart's own checks",
        )
    )
    return findings + env_findings(env_from_values(values, release=release, namespace=namespace))


def helm_error(stderr: str) -> str:
    """The line of helm's output that says what is wrong (its ``Error:`` line)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    return ((errors or lines or ["helm template failed"])[0])[:500]


def _default_chart() -> str | None:
    candidate = Path("charts/cardano-forge")
    return str(candidate) if (candidate / "Chart.yaml").exists() else None


def _merge(dst: dict[str, Any], src: Mapping[str, Any]) -> None:
    for key, value in src.items():
        if isinstance(value, Mapping) and isinstance(dst.get(key), dict):
            _merge(dst[key], value)
        else:
            dst[key] = value


# ---- a running release -------------------------------------------------------------------------
@dataclass(frozen=True)
class Permission:
    verb: str
    group: str
    resource: str
    namespace: str
    name: str = ""
    subresource: str = ""

    def describe(self) -> str:
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        group = f".{self.group}" if self.group else ""
        name = f" {self.name}" if self.name else ""
        return f"{self.verb} {res}{group}{name} in {self.namespace}"

    def review(self) -> dict[str, Any]:
        attrs = {
            "verb": self.verb,
            "group": self.group,
            "resource": self.resource,
            "namespace": self.namespace,
        }
        if self.name:
            attrs["name"] = self.name
        if self.subresource:
            attrs["subresource"] = self.subresource
        return {"spec": {"resourceAttributes": attrs}}


def required_permissions(env: Mapping[str, str]) -> tuple[list[Permission], list[Permission]]:
    """(in the release's own API, in the coordination API) — what the forge manager calls."""
    ns = env.get("NAMESPACE", "default")
    lease = env.get("LEASE_NAME") or "cardano-node-leader"
    coord_g = "coordination.k8s.io"
    local = [
        Permission("get", coord_g, "leases", ns, lease),
        Permission("update", coord_g, "leases", ns, lease),
        Permission("create", coord_g, "leases", ns),
    ]
    if env.get("ENABLE_CLUSTER_MANAGEMENT", "").lower() != "true":
        return local, []
    cns = env.get("COORDINATION_NAMESPACE") or ns
    pool = env.get("POOL_LEASE_NAME") or DEFAULT_POOL_LEASE
    region = env.get("CLUSTER_CRD_NAME") or env.get("CLUSTER_NAME") or ns
    coordination = [
        Permission("create", coord_g, "leases", cns),
        Permission("list", coord_g, "leases", cns),
        Permission("get", coord_g, "leases", cns, pool),
        Permission("update", coord_g, "leases", cns, pool),
        Permission("get", coord_g, "leases", cns, f"{pool}-{region}"),
        Permission("update", coord_g, "leases", cns, f"{pool}-{region}"),
        Permission("list", CFC_GROUP, CFC_PLURAL, cns),
        Permission("get", CFC_GROUP, CFC_PLURAL, cns, region),
        Permission("create", CFC_GROUP, CFC_PLURAL, cns),
        Permission("update", CFC_GROUP, CFC_PLURAL, cns, region, "status"),
    ]
    return local, coordination


def _can(kube: Kube, perms: Sequence[Permission], who: str) -> list[Finding]:
    out: list[Finding] = []
    for perm in perms:
        try:
            review = kube.create(
                f"review access as {who}",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                perm.review(),
            )
        except CliError as exc:
            return [*out, Finding(FAIL, "rbac", f"cannot check RBAC as {who}: {exc.message}")]
        status = review.get("status") or {}
        if status.get("allowed"):
            out.append(Finding(OK, "rbac", f"{who} can {perm.describe()}"))
        else:
            extra = f" ({status.get('reason')})" if status.get("reason") else ""
            out.append(Finding(FAIL, "rbac", f"{who} cannot {perm.describe()}{extra}"))
    return out


def release_statefulsets(kube: Kube, namespace: str, release: str | None) -> list[dict[str, Any]]:
    selector = BLOCK_PRODUCER_SELECTOR + (
        f",app.kubernetes.io/instance={release}" if release else ""
    )
    found = kube.items(
        f"list statefulsets in namespace {namespace}",
        group_path("apps/v1", namespace, "statefulsets"),
        labelSelector=selector,
    )
    if not found:
        what = f"release {release}" if release else "any cardano-forge release"
        raise CliError(
            f"no StatefulSet of {what} in namespace {namespace} "
            f"(label {selector}): pass --release or -n"
        )
    return found


def check_release(
    kube: Kube,
    coordination: Kube | None,
    namespace: str,
    release: str | None,
    *,
    http_timeout: float = 5.0,
) -> list[Finding]:
    findings: list[Finding] = []
    for sts in release_statefulsets(kube, namespace, release):
        name = str(sts["metadata"]["name"])
        pods = workloads_from_statefulset(sts)
        spec = sts.get("spec", {}).get("template", {}).get("spec", {})
        manager = next(
            (
                c
                for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
                if c.get("name") == MANAGER_CONTAINER
            ),
            None,
        )
        if manager is None:
            findings.append(
                Finding(FAIL, "statefulset", f"{name} has no {MANAGER_CONTAINER} container")
            )
            continue
        env = container_env(manager, pod_name=f"{name}-0", namespace=namespace)
        findings.append(Finding(OK, "statefulset", f"{namespace}/{name}"))
        findings += env_findings(env)
        sa = str(spec.get("serviceAccountName") or "default")
        who = f"system:serviceaccount:{namespace}:{sa}"
        local, coord_perms = required_permissions(env)
        remote = bool(env.get("COORDINATION_KUBECONFIG"))
        with Kube(kube.target, timeout=kube.timeout, impersonate=who) as as_sa:
            findings += _can(as_sa, local, who)
            if coord_perms and not remote:
                findings += _can(as_sa, coord_perms, who)
        if coord_perms and remote:
            findings.append(
                Finding(
                    SKIP,
                    "rbac",
                    "the coordination API is another API server "
                    "(COORDINATION_KUBECONFIG): its RBAC is the kubeconfig's user's",
                )
            )
        if coord_perms:
            coord = coordination if remote else kube
            findings += _coordination_findings(kube, coord, env, remote)
            findings += _health_endpoint_findings(kube, coord, env, http_timeout)
        findings += _manager_findings(kube, [p.name for p in pods], namespace, env, http_timeout)
    return findings


def _coordination_findings(
    kube: Kube, coord: Kube | None, env: Mapping[str, str], remote: bool
) -> list[Finding]:
    if coord is None:
        return [
            Finding(
                SKIP,
                "coordination",
                "the regions meet in another API server "
                "(COORDINATION_KUBECONFIG): pass --coordination-kubeconfig to check it",
            )
        ]
    out = []
    try:
        coord.get(
            f"read CustomResourceDefinition {CFC_CRD}",
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CFC_CRD}",
        )
        out.append(Finding(OK, "crd", f"{CFC_CRD} installed"))
    except NotFound:
        out.append(
            Finding(
                FAIL,
                "crd",
                f"{CFC_CRD} is not installed: kubectl apply -f "
                "crds/cardanoforgeclusters.cardano.io.yaml",
            )
        )
    except CliError as exc:
        out.append(Finding(WARN, "crd", f"cannot read CRDs ({exc.message}); see the next line"))
    ns = env.get("COORDINATION_NAMESPACE") or env.get("NAMESPACE", "default")
    limit = float(env.get("KUBE_REQUEST_TIMEOUT") or 1)
    started = time.monotonic()
    try:
        coord.items(f"list CardanoForgeClusters in namespace {ns}", region_path(ns))
    except NotFound:
        return [
            *out,
            Finding(FAIL, "coordination", f"CardanoForgeClusters are not served in {coord.host}"),
        ]
    except CliError as exc:
        return [*out, Finding(FAIL, "coordination", exc.message)]
    took = time.monotonic() - started
    where = "the coordination API" if remote else "the coordination API (this cluster's)"
    verdict = OK if took <= limit else FAIL
    return [
        *out,
        Finding(
            verdict,
            "coordination",
            f"{where} answered in {took * 1000:.0f} ms (KUBE_REQUEST_TIMEOUT {limit:g} s)",
        ),
    ]


def _health_endpoint_findings(
    kube: Kube, coord: Kube | None, env: Mapping[str, str], timeout: float
) -> list[Finding]:
    endpoint = env.get("HEALTH_CHECK_ENDPOINT", "")
    region = env.get("CLUSTER_CRD_NAME") or env.get("CLUSTER_NAME", "")
    ns = env.get("COORDINATION_NAMESPACE") or env.get("NAMESPACE", "default")
    if coord is not None and region:
        try:
            obj = coord.get(f"read CardanoForgeCluster {region}", region_path(ns, region))
            hc = (obj.get("spec") or {}).get("healthCheck") or {}
            if hc.get("enabled") and hc.get("endpoint"):
                endpoint = str(hc["endpoint"])  # the resource's spec wins over the environment
            elif hc and not hc.get("enabled"):
                endpoint = ""
        except CliError:
            pass
    if not endpoint:
        return [Finding(SKIP, "health-endpoint", f"region {region} has no health check configured")]
    code, detail = get_endpoint(kube, endpoint, timeout)
    if code == 200:
        return [Finding(OK, "health-endpoint", f"{endpoint} answered 200 ({detail})")]
    return [Finding(FAIL, "health-endpoint", f"{endpoint}: {detail}")]


def service_proxy(url: str) -> tuple[str, str, str, str] | None:
    """``(namespace, scheme:service:port, path, host)`` for a cluster-internal Service URL."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    parts = host.split(".")
    if len(parts) >= 3 and parts[2] == "svc":
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        path = parsed.path.lstrip("/") + (f"?{parsed.query}" if parsed.query else "")
        return parts[1], f"{parsed.scheme}:{parts[0]}:{port}", path, host
    return None


def get_endpoint(kube: Kube, url: str, timeout: float) -> tuple[int, str]:
    """GET ``url``: through the API server's service proxy for a ``*.svc`` URL, else directly."""
    started = time.monotonic()
    proxied = service_proxy(url)
    if proxied is not None:
        ns, name, path, _ = proxied
        where = f"/api/v1/namespaces/{ns}/services/{name}/proxy/{path}"
        try:
            kube.request(f"get {url} through the service proxy", "GET", where, timeout=timeout,
                         text=True)  # fmt: skip
        except CliError as exc:
            found = re.search(r"HTTP (\d{3})", exc.message)
            return (int(found.group(1)) if found else 0), exc.message[:300]
        return 200, f"{(time.monotonic() - started) * 1000:.0f} ms, through the service proxy"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (the configured endpoint)
            code = int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code), f"answered HTTP {exc.code}"
    except (OSError, urllib.error.URLError) as exc:
        return 0, f"unreachable from here ({getattr(exc, 'reason', exc)})"
    return code, f"{(time.monotonic() - started) * 1000:.0f} ms"


def _manager_findings(
    kube: Kube, pods: Sequence[str], namespace: str, env: Mapping[str, str], timeout: float
) -> list[Finding]:
    out = []
    for pod in pods:
        try:
            obj = kube.get(f"read pod {pod}", core_path(namespace, "pods", pod))
        except NotFound:
            out.append(Finding(SKIP, "manager", f"pod {pod} does not exist"))
            continue
        except CliError as exc:
            out.append(Finding(WARN, "manager", exc.message))
            continue
        found = workload_from_pod(obj)  # the pod's own port, should it differ from the template
        port = found.metrics_port if found else int(env.get("METRICS_PORT") or 8000)
        try:
            kube.pod_proxy_get(namespace, pod, port, "health", timeout)
        except CliError as exc:
            out.append(Finding(FAIL, "manager", f"pod {pod}: /health: {exc.message}"))
            continue
        out.append(Finding(OK, "manager", f"pod {pod}: /health answered 200"))
    return out


def target_for(kubeconfig: str | None, context: str | None) -> Target:
    return Target(kubeconfig, context)
