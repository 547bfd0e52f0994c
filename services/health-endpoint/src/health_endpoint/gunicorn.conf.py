"""gunicorn settings for the health endpoint.

Run from the installed package with ``python -m health_endpoint`` (or the ``health-endpoint``
script), which passes this file to gunicorn, or explicitly:
``gunicorn -c <this file> 'health_endpoint:create_app()'``.

Tunable through the environment: ``BIND`` (default ``0.0.0.0:8080``), ``TLS_CERT_FILE`` and
``TLS_KEY_FILE`` (serve HTTPS with that certificate and key), ``WEB_CONCURRENCY``
(worker processes, default 2), ``GUNICORN_THREADS`` (threads per worker, default 8),
``GUNICORN_TIMEOUT`` (seconds, default 30), ``LOG_LEVEL`` (default ``info``).

Metrics under several workers: prometheus_client needs ``PROMETHEUS_MULTIPROC_DIR`` before it is
first imported. When it is not set, a private directory (in /dev/shm when there is one) is made
here, in the master, before any worker exists, and removed at exit. A directory given by the
environment (an emptyDir in the pod, which outlives a container restart) is emptied at start.
A worker that exits is marked dead so its live gauges stop counting.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import sys
import tempfile
from typing import Any


def _int_env(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        sys.stderr.write(f"health-endpoint: {name}={raw!r} must be a whole number >= {minimum}\n")
        raise SystemExit(2)
    return value


# tmpfs for the worker heartbeat files and the metrics files; private names from mkdtemp.
_SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108

wsgi_app = "health_endpoint:create_app()"
bind = [os.environ.get("BIND", "0.0.0.0:8080")]
# TLS: both files or neither (a certificate Secret mounted in the pod); read once at start.
certfile = os.environ.get("TLS_CERT_FILE", "").strip() or None
keyfile = os.environ.get("TLS_KEY_FILE", "").strip() or None
if (certfile is None) != (keyfile is None):
    sys.stderr.write("health-endpoint: TLS_CERT_FILE and TLS_KEY_FILE must be set together\n")
    raise SystemExit(2)
for _name, _path in (("TLS_CERT_FILE", certfile), ("TLS_KEY_FILE", keyfile)):
    if _path is not None and not os.path.isfile(_path):
        sys.stderr.write(f"health-endpoint: {_name}={_path!r}: no such file\n")
        raise SystemExit(2)
workers = _int_env("WEB_CONCURRENCY", 2, 1)
worker_class = "gthread"
threads = _int_env("GUNICORN_THREADS", 8, 1)
timeout = _int_env("GUNICORN_TIMEOUT", 30, 1)
graceful_timeout = 10
keepalive = 5
worker_tmp_dir = _SHM
preload_app = False  # each worker builds its own app, thread pool and cache after the fork
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
# gunicorn 25.1+ opens a control socket for `gunicornc` in $XDG_RUNTIME_DIR or $HOME/.gunicorn.
# In the image HOME is /nonexistent and the root filesystem read-only, so it failed at every start
# ("Control server error: Permission denied: '/nonexistent'"); and a socket that can change the
# worker count or stop the server is not wanted beside this service. Older gunicorn ignores this.
control_socket_disable = True

_private_multiproc_dir: str | None = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _private_multiproc_dir = tempfile.mkdtemp(prefix="health-endpoint-metrics-", dir=_SHM)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _private_multiproc_dir


def on_starting(server: Any) -> None:
    """Validate the configuration once, in the master, and say in one line what is wrong."""
    # Imported here, after PROMETHEUS_MULTIPROC_DIR is set above (prometheus_client reads it once).
    from health_endpoint.config import ConfigError, load_config  # noqa: PLC0415

    try:
        load_config(os.environ)
    except ConfigError as exc:
        sys.stderr.write(f"health-endpoint: configuration error: {exc}\n")
        _remove_private_dir()
        raise SystemExit(2) from None
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    for stale in glob.glob(os.path.join(directory, "*.db")):
        os.remove(stale)


def post_worker_init(worker: Any) -> None:
    """Send the app's own log records to stderr next to gunicorn's."""
    logging.basicConfig(
        level=loglevel.upper() if loglevel.upper() in logging.getLevelNamesMapping() else "INFO",
        stream=sys.stderr,
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: drop its live gauge files (counters and histograms keep counting)."""
    from prometheus_client import multiprocess  # noqa: PLC0415  # see on_starting

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    _remove_private_dir()


def _remove_private_dir() -> None:
    if _private_multiproc_dir is not None:
        shutil.rmtree(_private_multiproc_dir, ignore_errors=True)
