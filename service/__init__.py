"""The composition root: everything that wires the stages together.

The ``events`` command (``service/cli.py``, one lazily imported module per subcommand under
``service/commands/``), the API app factory that mounts the ingest, analytics and
operational routes and answers every error from one table (``service/app.py``,
``service/errors.py``), the per-process runtime (``service/runtime.py``), the gunicorn
configuration and worker class, and the supervisor behind ``events up``. Nothing below this
package imports it.
"""
