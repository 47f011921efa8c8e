"""One module per ``events`` subcommand, imported only when that command runs.

Each has ``add_arguments(parser)`` and ``run(settings, args) -> exit status`` (its one-line
summary is in ``service/cli.py``'s ``COMMANDS``); what a command needs beyond ``core`` it
imports in ``run``, so ``events config`` loads no polars, pyarrow or duckdb.
"""
