"""gunicorn settings, derived from the service's configuration (``core.config``).

The top-level ``gunicorn.conf.py`` imports this module; ``events serve`` uses it.
"""

from __future__ import annotations

from core.config import load_settings

_settings = load_settings()

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
