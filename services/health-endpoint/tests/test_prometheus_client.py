"""The Prometheus API client: request parameters, both timeouts, and answer interpretation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import requests
from health_endpoint.prometheus import (
    PrometheusClient,
    PrometheusUnavailable,
    QueryRejected,
    Sample,
    parse_response,
)

BASE = "http://prometheus:9090"


def body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def test_vector_and_scalar_results() -> None:
    vector = body(
        {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [
                    {"metric": {"instance": "a"}, "value": [1.0, "1"]},
                    {"metric": {"instance": "b"}, "value": [1.0, "NaN"]},
                    {"metric": {}, "value": [1.0, "+Inf"]},
                ],
            },
        }
    )
    samples = parse_response(200, vector, BASE)
    assert samples[0] == Sample(1.0, {"instance": "a"})
    assert math.isnan(samples[1].value)
    assert samples[2].value == math.inf
    scalar = body({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "42"]}})
    assert parse_response(200, scalar, BASE) == [Sample(42.0)]


def test_bad_query_is_rejected_not_unavailable() -> None:
    answer = body({"status": "error", "errorType": "bad_data", "error": "parse error at 1:3"})
    with pytest.raises(QueryRejected, match="Prometheus rejected the query: parse error at 1:3"):
        parse_response(400, answer, BASE)
    matrix = body({"status": "success", "data": {"resultType": "matrix", "result": []}})
    with pytest.raises(QueryRejected, match="yields a matrix"):
        parse_response(200, matrix, BASE)


@pytest.mark.parametrize(
    ("code", "payload", "message"),
    [
        (503, b"", "could not evaluate the query in time"),
        (
            422,
            body({"status": "error", "errorType": "timeout", "error": "query timed out"}),
            "Prometheus rejected the query: query timed out",
        ),
        (500, b"<html>", "answered with an error: HTTP 500"),
        (200, b"not json", "answered with an error: HTTP 200"),
        (
            200,
            body({"status": "success", "data": {"resultType": "vector", "result": [{}]}}),
            "malformed vector",
        ),
    ],
)
def test_server_trouble_is_unavailable(code: int, payload: bytes, message: str) -> None:
    with pytest.raises((PrometheusUnavailable, QueryRejected), match=message):
        parse_response(code, payload, BASE)


class FakeResponse:
    def __init__(self, code: int, content: bytes) -> None:
        self.status_code = code
        self.content = content


class FakeSession(requests.Session):
    def __init__(self, outcome: FakeResponse | Exception) -> None:
        super().__init__()
        self.outcome = outcome
        self.calls: list[dict[str, Any]] = []

    def get(self, url: str | bytes, **kwargs: Any) -> Any:
        self.calls.append({"url": url, **kwargs})
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def test_query_sends_both_timeouts_and_the_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0k\n")
    ok = body({"status": "success", "data": {"resultType": "scalar", "result": [1, "1"]}})
    session = FakeSession(FakeResponse(200, ok))
    client = PrometheusClient(
        BASE + "/",
        query_timeout=2.5,
        client_timeout=3.5,
        bearer_token_file=token,
        session_factory=lambda: session,
    )

    assert client.query("vector(1)") == [Sample(1.0)]
    (call,) = session.calls
    assert call["url"] == f"{BASE}/api/v1/query"
    assert call["params"] == {"query": "vector(1)", "timeout": "2500ms"}
    assert call["timeout"] == (2.0, 3.5)
    assert call["headers"]["Authorization"] == "Bearer t0k"


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (requests.ReadTimeout("slow"), f"Prometheus at {BASE} did not answer within 4 s"),
        (
            requests.ConnectionError("[Errno 111] Connection refused"),
            f"Prometheus at {BASE} is unreachable: connection refused",
        ),
    ],
)
def test_transport_errors_name_prometheus(error: Exception, message: str) -> None:
    client = PrometheusClient(
        BASE, query_timeout=3, client_timeout=4, session_factory=lambda: FakeSession(error)
    )
    with pytest.raises(PrometheusUnavailable) as caught:
        client.query("up")
    assert str(caught.value) == message
