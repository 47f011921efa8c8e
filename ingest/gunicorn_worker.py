"""The gunicorn worker class: uvicorn on uvloop + httptools, ASGI lifespan on.

PERF: uvicorn on the plain asyncio loop without TCP_NODELAY stalls about 40 ms per
keep-alive reply on this machine; uvloop sets TCP_NODELAY on its sockets.
"""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker


class EventsWorker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,  # the app logs one structured line per request itself
        "server_header": False,
    }
