"""The ``events`` command. Each subcommand is a module of ``service/commands/``, imported
only when it runs (after pip's ``commands_dict``): ``events --help`` lists the summaries
below without importing any of them, and ``events config`` loads no polars, pyarrow or
duckdb.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from core.config import Settings, load_settings
from core.errors import ConfigError
from core.logs import configure_logging


@dataclass(frozen=True, slots=True)
class Command:
    module: str
    summary: str


# The one list of subcommands: name -> where it lives and what it does (``events --help``).
COMMANDS: dict[str, Command] = {
    "serve": Command("service.commands.serve", "run the HTTP API under gunicorn"),
    "worker": Command(
        "service.commands.worker", "consume the queue and store events in PostgreSQL"
    ),
    "migrate": Command(
        "service.commands.migrate", "create the database if needed and apply migrations"
    ),
    "up": Command("service.commands.up", "migrate, then run the API and the workers together"),
    "compact": Command(
        "service.commands.compact", "move days older than the hot window to the lake"
    ),
    "sql": Command(
        "service.commands.sql", "query the whole store (lake + hot rows) with DuckDB, read-only"
    ),
    "lake": Command("service.commands.lake", "check the Parquet lake against lake_files"),
    "import": Command("service.commands.import_", "bulk-import history (same as import_events)"),
    "bench": Command("service.commands.bench", "load the service and report events/s (see bench/)"),
    "dlq": Command("service.commands.dlq", "inspect, replay or purge the dead-letter queue"),
    "config": Command(
        "service.commands.config", "print the effective configuration (secrets hidden)"
    ),
}


class CommandModule(Protocol):
    def add_arguments(self, p: argparse.ArgumentParser) -> None: ...

    def run(self, settings: Settings, args: argparse.Namespace) -> int: ...


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: events COMMAND [options]   (events COMMAND --help for its options)",
        "",
        "Event ingestion and analytics: HTTP batches -> RabbitMQ -> PostgreSQL, exactly once.",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {c.summary}" for name, c in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    command = COMMANDS.get(name)
    if command is None:
        print(f"events: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module: CommandModule = importlib.import_module(command.module)
    description = getattr(module, "DESCRIPTION", command.summary)
    parser = argparse.ArgumentParser(prog=f"events {name}", description=description)
    module.add_arguments(parser)
    parsed = parser.parse_args(rest)
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        return int(module.run(settings, parsed))
    except ConfigError as ex:
        print(f"events: {ex}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
