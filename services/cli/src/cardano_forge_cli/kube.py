"""The Kubernetes API as the CLI uses it: the user's kubeconfig and context, bounded calls, and
every failure turned into one line (:class:`~cardano_forge_cli.errors.CliError`).

Objects are returned as JSON-shaped dicts (``kubectl get -o json``), so the rest of the CLI never
touches the client's model classes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
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
        self._lock = threading.Lock()

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> Kube:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- clients -----------------------------------------------------------------------------
    @property
    def core(self) -> Any:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> Any:
        return client.AppsV1Api(self.api)

    @property
    def coordination(self) -> Any:
        return client.CoordinationV1Api(self.api)

    @property
    def custom(self) -> Any:
        return client.CustomObjectsApi(self.api)

    @property
    def extensions(self) -> Any:
        return client.ApiextensionsV1Api(self.api)

    @property
    def authorization(self) -> Any:
        return client.AuthorizationV1Api(self.api)

    @property
    def authentication(self) -> Any:
        return client.AuthenticationV1Api(self.api)

    # ---- calls -------------------------------------------------------------------------------
    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` bounded by the timeout; the answer as plain JSON data.

        ``what`` completes "cannot ..." / "no permission to ..." in the error line."""
        kwargs.setdefault("_request_timeout", self.timeout)
        try:
            result = fn(*args, **kwargs)
        except ApiException as exc:
            raise self._api_error(what, exc) from None
        except Exception as exc:  # urllib3 connection errors and timeouts, TLS errors
            raise CliError(f"cannot {what}: {unreachable(self.host, exc)}") from None
        if isinstance(result, dict | list | str | None):
            return result
        return self.api.sanitize_for_serialization(result)  # type: ignore[no-untyped-call]

    def _api_error(self, what: str, exc: ApiException) -> CliError:
        message = api_message(exc)
        status = exc.status
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
        try:
            resp = self.core.connect_get_namespaced_pod_proxy_with_path(
                f"{pod}:{port}",
                namespace,
                path.lstrip("/"),
                _preload_content=False,
                _request_timeout=timeout,
            )
            data = resp.read()
        except ApiException as exc:
            if exc.status == 403:
                raise CliError(f"no permission to get pods/proxy in {namespace}") from None
            raise CliError(f"HTTP {exc.status} from {pod}:{port} ({api_message(exc)})") from None
        except Exception as exc:
            raise CliError(unreachable(self.host, exc)) from None
        return bytes(data).decode("utf-8", errors="replace")

    def whoami(self) -> str:
        """The user's name as the API server sees it (SelfSubjectReview), else the context."""
        try:
            review = self.call("ask who I am", self.authentication.create_self_subject_review, {})
            name = review.get("status", {}).get("userInfo", {}).get("username")
            if name:
                return str(name)
        except CliError:
            pass
        return f"context {self.context}" if self.context else "unknown user"


def api_message(exc: ApiException) -> str:
    import json  # noqa: PLC0415 (rarely needed)

    try:
        body = json.loads(exc.body or "{}")
        text = str(body.get("message") or "")
    except (ValueError, AttributeError):
        text = ""
    return (text or str(exc.reason or "")).strip()[:300]


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
