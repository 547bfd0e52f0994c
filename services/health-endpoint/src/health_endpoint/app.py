"""The Flask application factory: routes, authentication and request metrics.

Served by gunicorn as ``gunicorn 'health_endpoint:create_app()'`` (see ``gunicorn.conf.py``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, g, jsonify, request
from prometheus_client import CollectorRegistry, ProcessCollector
from werkzeug.exceptions import HTTPException

from health_endpoint.auth import AuthResult, TokenFile, check_authorization
from health_endpoint.config import load_config
from health_endpoint.health import HealthService
from health_endpoint.metrics import ServiceMetrics
from health_endpoint.prometheus import PrometheusClient, QueryClient

CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
EXTENSION = "health_endpoint"


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from the environment, validating it (``ConfigError`` on a bad setting).

    ``test_config`` may hold ``ENV`` (a mapping used instead of ``os.environ``), ``REGISTRY``
    (a ``CollectorRegistry``), ``QUERY_CLIENT`` (a ``QueryClient`` used instead of the HTTP
    client), ``CLOCK`` and ``MONOTONIC`` (time sources).
    """
    overrides = dict(test_config or {})
    env: Mapping[str, str] = overrides.get("ENV", os.environ)
    config = load_config(env)
    settings = config.settings

    registry: CollectorRegistry | None = overrides.get("REGISTRY")
    if registry is None:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
    metrics = ServiceMetrics(registry, settings.multiproc_dir)
    client: QueryClient = overrides.get("QUERY_CLIENT") or PrometheusClient(
        settings.prometheus_url,
        query_timeout=settings.prometheus_timeout_seconds,
        client_timeout=settings.prometheus_client_timeout_seconds,
        bearer_token_file=settings.prometheus_bearer_token_file,
    )
    service = HealthService(
        config,
        client,
        metrics,
        clock=overrides.get("CLOCK", time.time),
        monotonic=overrides.get("MONOTONIC", time.monotonic),
    )
    tokens = TokenFile(settings.auth_token_file) if settings.auth_token_file else None

    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the documented field order
    app.extensions[EXTENSION] = service

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        handler = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.http_requests.labels(handler, str(response.status_code)).inc()
        started = g.get("started")
        if started is not None:
            metrics.http_duration.labels(handler).observe(time.perf_counter() - started)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(error=exc.description), exc.code or 500

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        app.logger.exception("unexpected error answering %s", request.path)
        return jsonify(error=f"internal error: {type(exc).__name__}"), 500

    @app.get("/api/v1/health/cluster/<cluster>")
    def cluster_health(cluster: str) -> tuple[Response, int]:
        if tokens is not None:
            refused = _authenticate(tokens, metrics)
            if refused is not None:
                return refused
        if not CLUSTER_NAME.match(cluster):
            return jsonify(
                error="invalid cluster name: use letters, digits, '.', '_', ':' and '-' "
                "(at most 128 characters)"
            ), 400
        report = service.cluster_health(cluster)
        response = jsonify(report.document())
        response.headers["Cache-Control"] = "no-store"
        return response, report.http_status

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify(status="ok"), 200

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        ready, message = service.readiness()
        return jsonify(status="ready" if ready else "not_ready", message=message), (
            200 if ready else 503
        )

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    return app


def _authenticate(tokens: TokenFile, metrics: ServiceMetrics) -> tuple[Response, int] | None:
    result = check_authorization(request.headers.get("Authorization"), tokens)
    if result is AuthResult.OK:
        return None
    metrics.auth_failures.labels(result.value).inc()
    if result is AuthResult.UNAVAILABLE:
        return jsonify(error="authentication is configured but its token file is unreadable"), 503
    response = jsonify(
        error="missing bearer token" if result is AuthResult.MISSING else "invalid bearer token"
    )
    challenge = 'Bearer realm="health-endpoint"'
    if result is AuthResult.INVALID:
        challenge += ', error="invalid_token"'
    response.headers["WWW-Authenticate"] = challenge
    return response, 401
