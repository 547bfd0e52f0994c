"""Cluster health endpoint: answers "is this Cardano cluster healthy?" by querying Prometheus."""

from health_endpoint.app import create_app
from health_endpoint.config import ConfigError

__all__ = ["ConfigError", "create_app"]
