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

wsgi_app = "service.app:create_app_from_env()"
bind = [_settings.bind]
workers = _settings.api_workers
worker_class = "service.gunicorn_worker.EventsWorker"
# Build the app once in the master and fork it: workers share its memory pages. The app
# opens no connection before the ASGI start-up event, which runs in each worker.
preload_app = True
timeout = 120  # a worker silent this long is restarted
# On SIGTERM, time to finish in-flight requests: the longest is a ?wait=true request.
graceful_timeout = max(30, int(_settings.wait_timeout_max) + 5)
keepalive = 5  # seconds an idle keep-alive connection stays open (uvicorn's timeout_keep_alive)
# gunicorn's limit_request_* settings do not apply here: uvicorn (httptools) parses the
# requests, and service/http_guard.py enforces EVENTS_MAX_HEADER_BYTES / EVENTS_CLIENT_TIMEOUT.
# Access log: one structured (JSON) line per request comes from the app itself
# (service/app.py RequestLogMiddleware: method, path, status, duration, events, key id,
# request id), so gunicorn's own access log stays off. gunicorn's error log (boots,
# worker exits) goes through the same formatter as the service's logs.
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
if _settings.log_format == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "core.logs.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": loglevel.upper()},
        "loggers": {
            "gunicorn.error": {
                "handlers": ["stderr"],
                "level": loglevel.upper(),
                "propagate": False,
            }
        },
    }
proc_name = "events-api"


def child_exit(server: Any, worker: Any) -> None:
    """A worker process ended: let prometheus_client drop its live gauges."""
    from prometheus_client import multiprocess  # noqa: PLC0415 - after the dir is set

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    if _created_metrics_dir:
        remove_metrics_dir(_metrics_dir)
