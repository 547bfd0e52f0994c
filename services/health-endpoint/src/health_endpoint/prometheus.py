"""The Prometheus HTTP API client: the service's one seam to the outside world.

Each instant query carries two timeouts: Prometheus' own ``timeout=`` parameter (so Prometheus
stops evaluating and answers with an error) and a longer client read timeout (so a Prometheus that
does not answer at all cannot hold a worker thread). Errors are split in two kinds because they
mean different things for a cluster's health: :class:`PrometheusUnavailable` (nothing can be said:
status ``unknown``) and :class:`QueryRejected` (this one query is wrong: a configuration problem).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import requests


class PrometheusUnavailable(Exception):
    """Prometheus could not be asked: unreachable, too slow, or answered with a server error."""


class QueryRejected(Exception):
    """Prometheus answered but refused the query (bad PromQL, wrong result type)."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant-query result."""

    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


class QueryClient(Protocol):
    """What the health checks need from Prometheus."""

    def query(self, promql: str) -> Sequence[Sample]:
        """Evaluate ``promql`` now.

        Raises :class:`PrometheusUnavailable` or :class:`QueryRejected`.
        """
        ...


class PrometheusClient:
    """:class:`QueryClient` over the Prometheus HTTP API (``/api/v1/query``), thread-safe."""

    def __init__(
        self,
        base_url: str,
        *,
        query_timeout: float,
        client_timeout: float,
        bearer_token_file: Path | None = None,
        session_factory: Callable[[], requests.Session] = requests.Session,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.query_timeout = query_timeout
        self.client_timeout = client_timeout
        self._bearer_token_file = bearer_token_file
        self._session_factory = session_factory
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._session_factory()
            self._local.session = session
        return session

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._bearer_token_file is not None:
            try:
                token = self._bearer_token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise PrometheusUnavailable(
                    f"cannot read the Prometheus bearer token file: {exc.strerror}"
                ) from exc
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def query(self, promql: str) -> Sequence[Sample]:
        url = f"{self.base_url}/api/v1/query"
        params = {"query": promql, "timeout": f"{max(1, round(self.query_timeout * 1000))}ms"}
        try:
            response = self._session().get(
                url,
                params=params,
                headers=self._headers(),
                timeout=(min(self.client_timeout, 2.0), self.client_timeout),
            )
        except requests.Timeout as exc:
            raise PrometheusUnavailable(
                f"Prometheus at {self.base_url} did not answer within {self.client_timeout:g} s"
            ) from exc
        except requests.RequestException as exc:
            raise PrometheusUnavailable(
                f"Prometheus at {self.base_url} is unreachable: {_reason(exc)}"
            ) from exc
        return parse_response(response.status_code, response.content, self.base_url)


def parse_response(status_code: int, body: bytes, base_url: str) -> list[Sample]:
    """Interpret an ``/api/v1/query`` answer (separate from I/O so it is testable on its own)."""
    payload: Any = None
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    error_type = payload.get("errorType") if isinstance(payload, dict) else None
    if status_code in (400, 422) and error:
        raise QueryRejected(f"Prometheus rejected the query: {error}")
    if error_type == "timeout" or status_code == 503:
        raise PrometheusUnavailable(
            f"Prometheus at {base_url} could not evaluate the query in time: {error or status_code}"
        )
    if status_code != 200 or not isinstance(payload, dict) or payload.get("status") != "success":
        detail = error or f"HTTP {status_code}"
        raise PrometheusUnavailable(f"Prometheus at {base_url} answered with an error: {detail}")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise PrometheusUnavailable(f"Prometheus at {base_url} answered without data")
    result_type = data.get("resultType")
    result: Any = data.get("result")
    try:
        if result_type == "scalar":
            return [Sample(float(result[1]))]
        if result_type == "vector":
            return [
                Sample(float(item["value"][1]), dict(item.get("metric", {}))) for item in result
            ]
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        raise PrometheusUnavailable(
            f"Prometheus at {base_url} answered with a malformed {result_type} result"
        ) from exc
    raise QueryRejected(f"the query yields a {result_type}, not an instant vector or scalar")


def _reason(exc: requests.RequestException) -> str:
    text = str(exc.__context__ or exc) if isinstance(exc, requests.ConnectionError) else str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "host name not found"
    return " ".join(text.split())[:200]
