"""gunicorn settings, derived from the service's configuration (``core.config``).

The top-level ``gunicorn.conf.py`` imports this module; ``events serve`` uses it.
"""

from __future__ import annotations

from typing import Any

from core.config import load_settings
from core.metrics_dir import ensure_metrics_dir, remove_metrics_dir

_settings = load_settings()
# Before the app (and prometheus_client) is imported: every worker process writes its
# metric values under this directory and GET /metrics on any of them sums them all.
_metrics_dir, _created_metrics_dir = ensure_metrics_dir()

wsgi_app = "ingest.app:create_app_from_env()"
bind = [_settings.bind]
workers = _settings.api_workers
worker_class = "ingest.gunicorn_worker.EventsWorker"
# Build the app once in the master and fork it: workers share its memory pages. The app
# opens no connection before the ASGI start-up event, which runs in each worker.
preload_app = True
timeout = 60  # a worker silent this long is restarted
graceful_timeout = 30  # on SIGTERM, time to finish in-flight requests
keepalive = 5  # seconds an idle keep-alive connection stays open (uvicorn's timeout_keep_alive)
# Note: gunicorn's limit_request_* settings do not apply here; uvicorn (httptools) parses
# the requests.
accesslog = None  # one structured line per request comes from the app
errorlog = "-"
loglevel = _settings.log_level.lower()
proc_name = "events-api"


def child_exit(server: Any, worker: Any) -> None:
    """A worker process ended: let prometheus_client drop its live gauges."""
    from prometheus_client import multiprocess  # noqa: PLC0415 - after the dir is set

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    if _created_metrics_dir:
        remove_metrics_dir(_metrics_dir)
