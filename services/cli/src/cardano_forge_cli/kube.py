"""The Kubernetes API as the CLI uses it: the user's kubeconfig and context, bounded calls, and
every failure turned into one line (:class:`~cardano_forge_cli.errors.CliError`).

Objects are returned as JSON-shaped dicts (``kubectl get -o json``), so the rest of the CLI never
touches the client's model classes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from cardano_forge_cli.errors import CliError

CFC_GROUP, CFC_VERSION, CFC_PLURAL = "cardano.io", "v1", "cardanoforgeclusters"
CFC_CRD = f"{CFC_PLURAL}.{CFC_GROUP}"
MERGE_PATCH = "application/merge-patch+json"


class NotFound(CliError):
    """HTTP 404: the caller decides what that means."""


class Conflict(CliError):
    """HTTP 409: the object changed since it was read."""


@dataclass(frozen=True)
class Target:
    """Which API: a kubeconfig file (or ``KUBECONFIG``/``~/.kube/config``) and a context."""

    kubeconfig: str | None = None
    context: str | None = None

    def describe(self) -> str:
        where = self.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        return f"context {self.context!r} of {where}" if self.context else where


def _kubeconfig_path(target: Target) -> str | None:
    # Read KUBECONFIG now: the client's own default was fixed when it was imported.
    return target.kubeconfig or os.environ.get("KUBECONFIG") or None


def contexts(target: Target) -> tuple[list[str], str | None, str | None]:
    """(context names, the active/selected context, its namespace)."""
    try:
        found, active = config.list_kube_config_contexts(config_file=_kubeconfig_path(target))  # type: ignore[no-untyped-call]
    except (ConfigException, OSError) as exc:
        raise CliError(f"cannot read the kubeconfig ({target.describe()}): {exc}") from None
    names = [str(c.get("name")) for c in found or []]
    chosen = target.context or (active or {}).get("name")
    ctx = next((c for c in found or [] if c.get("name") == chosen), None)
    namespace = (ctx or {}).get("context", {}).get("namespace") if ctx else None
    return names, chosen, namespace


class Kube:
    """One API server, as the user (or, with ``impersonate``, as another user)."""

    def __init__(
        self,
        target: Target,
        *,
        timeout: float = 5.0,
        impersonate: str | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        names, chosen, namespace = contexts(target)
        if target.context and target.context not in names:
            raise CliError(
                f"no context {target.context!r} in the kubeconfig ({target.describe()}): "
                f"the contexts are {', '.join(names) or 'none'}"
            )
        self.context = chosen
        self.default_namespace = namespace or "default"
        configuration = client.Configuration()
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=_kubeconfig_path(target),
                context=target.context,
                client_configuration=configuration,
                persist_config=False,
            )
        except (ConfigException, OSError, ValueError) as exc:
            raise CliError(f"cannot use the kubeconfig ({target.describe()}): {exc}") from None
        configuration.retries = False  # one attempt per call: the timeout bounds the whole call
        self.host = str(configuration.host)
        self.api = client.ApiClient(configuration)
        if impersonate:
            self.api.set_default_header("Impersonate-User", impersonate)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> Kube:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- calls -------------------------------------------------------------------------------
    def request(
        self,
        what: str,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
        text: bool = False,
    ) -> Any:
        """One REST call, bounded by the timeout; the answer as JSON data (or text).

        Plain REST through the client's ApiClient (its authentication, TLS and exec plugins):
        the generated API classes cost seconds of CPU to import. ``what`` completes "cannot ..."
        / "no permission to ..." in the error line."""
        headers = {"Accept": "*/*" if text else "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            verb, url, sent_headers, payload, _ = self.api.param_serialize(
                method=method,
                resource_path=path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.api.call_api(
                verb, url, header_params=sent_headers, body=payload,
                _request_timeout=timeout or self.timeout,
            )  # fmt: skip
            response.read()  # type: ignore[no-untyped-call]
        except Exception as exc:  # urllib3 connection errors and timeouts, TLS errors
            raise CliError(f"cannot {what}: {unreachable(self.host, exc)}") from None
        data = bytes(response.data or b"")
        if response.status >= 400:
            raise self._status_error(what, int(response.status), data)
        if text:
            return data.decode("utf-8", errors="replace")
        return json.loads(data) if data.strip() else None

    def get(self, what: str, path: str, **query: str) -> Any:
        return self.request(what, "GET", path, query=query or None)

    def items(self, what: str, path: str, **query: str) -> list[dict[str, Any]]:
        data = self.get(what, path, **query)
        return [i for i in (data or {}).get("items") or [] if isinstance(i, dict)]

    def create(self, what: str, path: str, body: Any) -> Any:
        return self.request(what, "POST", path, body=body)

    def merge_patch(self, what: str, path: str, body: Any) -> Any:
        return self.request(what, "PATCH", path, body=body, content_type=MERGE_PATCH)

    def _status_error(self, what: str, status: int, data: bytes) -> CliError:
        message = status_message(data)
        if status == 404:
            return NotFound(f"cannot {what}: not found ({message})")
        if status == 409:
            return Conflict(f"cannot {what}: it changed since it was read ({message})")
        if status == 401:
            return CliError(
                f"cannot {what}: the API server at {self.host} did not accept the credentials of "
                f"{self.target.describe()} (expired token or certificate?)"
            )
        if status == 403:
            return CliError(f"no permission to {what}: {message}")
        return CliError(f"cannot {what}: HTTP {status} {message}")

    def pod_proxy_get(self, namespace: str, pod: str, port: int, path: str, timeout: float) -> str:
        """GET ``path`` of a pod's port through the API server's pod proxy."""
        where = f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/{path.lstrip('/')}"
        try:
            return str(self.request(f"get {path} of pod {pod}", "GET", where, timeout=timeout,
                                    text=True))  # fmt: skip
        except CliError as exc:
            if exc.message.startswith("no permission"):
                raise CliError(f"no permission to get pods/proxy in {namespace}") from None
            raise

    def whoami(self) -> str:
        """The user's name as the API server sees it (SelfSubjectReview), else the context."""
        try:
            review = self.create(
                "ask who I am",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            )
            name = (review or {}).get("status", {}).get("userInfo", {}).get("username")
            if name:
                return str(name)
        except CliError:
            pass
        return f"context {self.context}" if self.context else "unknown user"


def status_message(data: bytes) -> str:
    """The ``message`` of a Kubernetes Status answer, else the body's start."""
    try:
        body = json.loads(data or b"{}")
        text = str(body.get("message") or "") if isinstance(body, dict) else ""
    except ValueError:
        text = data[:200].decode("utf-8", errors="replace")
    return text.strip()[:300]


# ---- paths --------------------------------------------------------------------------------------
def core_path(namespace: str | None, resource: str, name: str = "") -> str:
    base = f"/api/v1/namespaces/{namespace}/{resource}" if namespace else f"/api/v1/{resource}"
    return f"{base}/{name}" if name else base


def group_path(api: str, namespace: str | None, resource: str, name: str = "") -> str:
    base = (
        f"/apis/{api}/namespaces/{namespace}/{resource}" if namespace else f"/apis/{api}/{resource}"
    )
    return f"{base}/{name}" if name else base


def lease_path(namespace: str, name: str = "") -> str:
    return group_path("coordination.k8s.io/v1", namespace, "leases", name)


def region_path(namespace: str, name: str = "") -> str:
    return group_path(f"{CFC_GROUP}/{CFC_VERSION}", namespace, CFC_PLURAL, name)


def unreachable(host: str, exc: BaseException) -> str:
    """One line for a connection-level failure."""
    parsed = urlparse(host)
    where = f"{parsed.hostname}:{parsed.port}" if parsed.hostname else host
    text = str(exc)
    reason = getattr(exc, "reason", None)
    if reason is not None:
        text = str(reason)
    if "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
        return f"the API server at {where} did not answer in time (timed out)"
    if "refused" in text.lower():
        return f"the API server at {where} is unreachable (connection refused)"
    if "certificate" in text.lower() or "ssl" in text.lower():
        return f"TLS with the API server at {where} failed ({text[:160]})"
    return f"the API server at {where} is unreachable ({type(exc).__name__}: {text[:160]})"
