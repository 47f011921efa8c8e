"""gunicorn configuration for the API: ``gunicorn -c gunicorn.conf.py``.

Everything is derived from the service's environment variables (see the README); the
settings themselves live in ``service/gunicorn_config.py`` so the installed package and
``events serve`` use the same ones.
"""

from service.gunicorn_config import *  # noqa: F403
