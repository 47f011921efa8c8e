"""The gunicorn worker class: uvicorn on uvloop + httptools, ASGI lifespan on.

PERF: uvicorn on the plain asyncio loop without TCP_NODELAY stalls about 40 ms per
keep-alive reply on this machine; uvloop sets TCP_NODELAY on its sockets.
"""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker

from core.config import load_settings
from service.http_guard import guarded_protocol


class EventsWorker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,  # the app logs one structured line per request itself
        "server_header": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = load_settings()
        # httptools plus header-size and header-time guards (service/http_guard.py); beyond
        # EVENTS_MAX_CONNECTIONS open connections uvicorn answers 503 at once.
        self.CONFIG_KWARGS = {  # type: ignore[misc]
            **type(self).CONFIG_KWARGS,
            "http": guarded_protocol(settings),
            "limit_concurrency": settings.max_connections,
        }
        super().__init__(*args, **kwargs)
