"""The ``events`` command: ``serve``, ``worker``, ``up``, ``migrate``, ``compact``, ``dlq``, ...."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from core.config import Settings, load_settings, settings_env_example, settings_markdown
from core.errors import ConfigError
from core.logs import configure_logging
from core.metrics_dir import ensure_metrics_dir, remove_metrics_dir
from core.redact import redact_url

log = logging.getLogger("events")

_DB_DOWN = (OSError, TimeoutError)


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# ---------------------------------------------------------------------------------------
# migrate


async def _migrate(settings: Settings, *, retry_for: float = 0.0) -> list[int]:
    import asyncpg

    from storage.migrate import migrate

    deadline = time.monotonic() + retry_for
    while True:
        try:
            return await migrate(
                settings.database_url, partitions_ahead_days=settings.partitions_ahead_days
            )
        except (*_DB_DOWN, asyncpg.CannotConnectNowError) as ex:
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"cannot reach PostgreSQL at {redact_url(settings.database_url)}: {ex}"
                ) from ex
            log.warning("PostgreSQL unreachable; retrying migrations", extra={"error": str(ex)})
            await asyncio.sleep(2)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    applied = asyncio.run(_migrate(settings, retry_for=args.wait))
    print(f"migrations applied: {applied or 'none (up to date)'}")
    return 0


# ---------------------------------------------------------------------------------------
# worker


def _run_worker_process(settings: Settings) -> None:
    """One worker process: consume until SIGTERM/SIGINT, then finish and exit."""
    from pipeline.worker import Worker

    configure_logging(settings.log_level, settings.log_format)
    _install_uvloop()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Worker(settings).run(stop)

    asyncio.run(main())


def _serve_worker_metrics(settings: Settings) -> None:
    """``GET /metrics`` of this host's worker processes on EVENTS_WORKER_METRICS_PORT."""
    ensure_metrics_dir()  # before prometheus_client is imported
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(
        settings.worker_metrics_port, addr=settings.worker_metrics_host, registry=registry
    )
    log.info("worker metrics served", extra={"port": settings.worker_metrics_port})


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    if args.concurrency:
        settings = settings.with_overrides(worker_concurrency=args.concurrency)
    processes = args.processes or settings.worker_processes
    if not args.no_migrate:
        asyncio.run(_migrate(settings, retry_for=float("inf")))
    if settings.worker_metrics_port:
        _serve_worker_metrics(settings)
    if processes == 1:
        _run_worker_process(settings)
        return 0
    ctx = multiprocessing.get_context("spawn")
    children = [
        ctx.Process(target=_run_worker_process, args=(settings,), name=f"worker-{i}")
        for i in range(processes)
    ]
    for child in children:
        child.start()

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        child.join()
    return max((c.exitcode or 0) for c in children)


# ---------------------------------------------------------------------------------------
# serve


def _serve_argv(args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, "-m", "gunicorn", "-c", args.config or "python:ingest.gunicorn_config"]
    if args.bind:
        argv += ["--bind", args.bind]
    if args.workers:
        argv += ["--workers", str(args.workers)]
    return argv


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    settings.require_auth()
    if not args.no_migrate:
        try:
            asyncio.run(_migrate(settings))
        except ConfigError as ex:
            # The API itself only needs RabbitMQ; say so and serve anyway.
            log.warning("migrations not applied at start-up", extra={"error": str(ex)})
    argv = _serve_argv(args)
    os.execv(argv[0], argv)  # noqa: S606 - replaces this process with gunicorn
    return 0  # pragma: no cover


# ---------------------------------------------------------------------------------------
# up: API + workers in one command (the README's run command)


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    settings.require_auth()
    asyncio.run(_migrate(settings, retry_for=30))
    events = [sys.executable, "-m", "core.cli"]
    serve = [*events, "serve", "--no-migrate"]
    if args.bind:
        serve += ["--bind", args.bind]
    if args.workers:
        serve += ["--workers", str(args.workers)]
    worker = [*events, "worker", "--no-migrate"]
    if args.processes:
        worker += ["--processes", str(args.processes)]
    # One metrics directory for the API and the workers: GET /metrics reports both.
    metrics_dir, created = ensure_metrics_dir()
    # Own sessions: a terminal's Ctrl-C reaches only this process, which then asks both
    # children to stop gracefully (SIGTERM) instead of gunicorn's quick SIGINT shutdown.
    children = [
        subprocess.Popen(serve, start_new_session=True),  # noqa: S603
        subprocess.Popen(worker, start_new_session=True),  # noqa: S603
    ]
    bind = args.bind or settings.bind
    print(
        f"events: API on http://{bind} (POST /events), workers consuming "
        f"{settings.queue_name}; Ctrl-C stops both",
        flush=True,
    )

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while all(c.poll() is None for c in children):
        time.sleep(0.2)
    stop(signal.SIGTERM, None)
    codes = [c.wait() for c in children]
    if created:
        remove_metrics_dir(metrics_dir)
    return 0 if stopping else max(1, *codes)


# ---------------------------------------------------------------------------------------
# compact: move cold days to the Parquet lake


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``15m``, ``1h`` or ``1d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip().lower()
    try:
        value = float(raw[:-1]) * units[raw[-1]] if raw[-1:] in units else float(raw)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30s, 15m, 1h)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the duration must be positive")
    return value


def cmd_compact(settings: Settings, args: argparse.Namespace) -> int:
    from storage.compactor import Compactor, run_every
    from storage.lake import Lake

    _install_uvloop()
    asyncio.run(_migrate(settings, retry_for=30))
    compactor = Compactor(
        settings.database_url,
        Lake(settings.lake_dir),
        hot_days=settings.hot_days,
        file_rows=settings.compact_file_rows,
        lock_timeout_ms=settings.compact_lock_timeout_ms,
    )
    if args.every is None:
        report = asyncio.run(compactor.run_once())
        print(
            f"compacted {len(report.days)} day(s): {report.rows} events in {report.files} "
            f"file(s); skipped (locked elsewhere): {len(report.skipped)}; "
            f"unpublished leftovers removed: {report.orphans_removed}"
        )
        return 0

    async def forever() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_every(compactor, args.every, stop)

    asyncio.run(forever())
    return 0


# ---------------------------------------------------------------------------------------
# sql: read-only DuckDB over the whole store


def cmd_sql(settings: Settings, args: argparse.Namespace) -> int:
    import duckdb
    import pyarrow as pa

    from analytics.console import NotARead, check_read_only, open_session, print_result, snapshot
    from storage.lake import Lake, LakeUnreadable

    try:
        check_read_only(args.query)  # before PostgreSQL is asked anything
    except NotARead as ex:
        print(f"events sql: {ex}", file=sys.stderr)
        return 2
    except duckdb.Error as ex:  # it does not parse
        print(f"events sql: {ex}", file=sys.stderr)
        return 1
    try:
        files, hot = asyncio.run(snapshot(settings.database_url, Lake(settings.lake_dir)))
        con = open_session(files, hot)
    except LakeUnreadable as ex:
        print(f"events sql: {ex}; `events lake verify` lists every problem", file=sys.stderr)
        return 1
    try:
        print_result(con, args.query, args.format)
    except (duckdb.Error, pa.ArrowException, OSError) as ex:
        print(f"events sql: {ex}", file=sys.stderr)
        return 1
    finally:
        con.close()
    return 0


# ---------------------------------------------------------------------------------------
# lake verify: the lake directory against lake_files


def cmd_lake(settings: Settings, args: argparse.Namespace) -> int:
    import asyncpg
    import orjson

    from storage.lake import Lake
    from storage.lake_verify import verify_lake

    try:
        report = asyncio.run(verify_lake(settings.database_url, Lake(settings.lake_dir)))
    except (OSError, TimeoutError, asyncpg.PostgresError) as ex:
        print(f"events lake verify: cannot verify the lake: {ex}", file=sys.stderr)
        return 2
    if args.json:
        print(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        for problem in report.problems:
            detail = f"  ({problem.detail})" if problem.detail else ""
            print(f"{problem.kind:<10}  {problem.path}{detail}")
        print(report.summary())
    return 0 if report.ok else 1


# ---------------------------------------------------------------------------------------
# import: same as the import_events command


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from importer.cli import run

    asyncio.run(_migrate(settings, retry_for=0))
    return run(args)


# ---------------------------------------------------------------------------------------
# bench


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from bench.harness import run

    return run(args)


# ---------------------------------------------------------------------------------------
# dlq: inspect, replay and purge dead letters


def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    import orjson

    from pipeline.dead_letter_admin import DeadLetterQueue
    from pipeline.topology import Topology

    dlq = DeadLetterQueue(settings.rabbitmq_url, Topology.from_settings(settings))

    def emit(value: object) -> None:
        print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())

    if args.dlq_command == "list":
        total, entries = asyncio.run(dlq.entries(args.limit))
        if args.json:
            emit({"total": total, "dead_letters": [e.as_dict() for e in entries]})
            return 0
        print(f"{total} dead letter(s) in {settings.dead_letter_queue_name}")
        for e in entries:
            print(
                f"{e.id}  {e.reason}  events={e.events}  attempts={e.attempts}"
                f"  write_attempts={e.write_attempts}  failed_at={e.failed_at}  {e.error[:120]}"
            )
        return 0
    if args.dlq_command == "show":
        shown = asyncio.run(dlq.show(args.id, events=None if args.events else 5))
        if shown is None:
            print(f"events: no dead letter with id {args.id}", file=sys.stderr)
            return 1
        emit(shown)
        return 0
    if args.dlq_command == "replay":
        if not args.all and not args.ids:
            print("events: name the dead letters to replay, or pass --all", file=sys.stderr)
            return 2
        replayed = asyncio.run(dlq.replay(None if args.all else args.ids))
        missing = sorted(set(args.ids) - set(replayed))
        print(f"replayed {len(replayed)} dead letter(s) to {settings.queue_name}")
        if missing:
            print(f"events: not found: {', '.join(missing)}", file=sys.stderr)
            return 1
        return 0
    # purge
    if not args.yes:
        count = asyncio.run(dlq.count())
        print(f"events: this deletes {count} dead letter(s) for good; add --yes", file=sys.stderr)
        return 2
    print(f"purged {asyncio.run(dlq.purge())} dead letter(s)")
    return 0


# ---------------------------------------------------------------------------------------
# config


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings_markdown())
        return 0
    if args.env_example:
        print(settings_env_example(), end="")
        return 0
    from core.config import SETTINGS

    for s in SETTINGS:
        value = getattr(settings, s.attr)
        if s.env in {"API_KEY", "API_KEYS"}:
            value = f"<{len(settings.api_keys)} key(s)>" if value else "<unset>"
        elif s.env.endswith("_URL"):
            value = redact_url(str(value))
        print(f"{s.env}={value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="events", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the HTTP API under gunicorn")
    p.add_argument("--bind", help="address to listen on (default: EVENTS_BIND)")
    p.add_argument("--workers", type=int, help="gunicorn worker processes")
    p.add_argument("--config", help="gunicorn config (default: the packaged one)")
    p.add_argument("--no-migrate", action="store_true", help="skip migrations at start-up")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="consume the queue and store events in PostgreSQL")
    p.add_argument("--processes", type=int, help="worker processes (EVENTS_WORKER_PROCESSES)")
    p.add_argument(
        "--concurrency",
        type=int,
        help="micro-batches written at once per process (EVENTS_WORKER_CONCURRENCY)",
    )
    p.add_argument("--no-migrate", action="store_true", help="skip migrations at start-up")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("migrate", help="create the database if needed and apply migrations")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="seconds to keep retrying while PostgreSQL is unreachable",
    )
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("up", help="migrate, then run the API and the workers together")
    p.add_argument("--bind")
    p.add_argument("--workers", type=int, help="gunicorn worker processes")
    p.add_argument("--processes", type=int, help="worker processes")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("compact", help="move days older than the hot window to the lake")
    p.add_argument(
        "--every",
        type=parse_duration,
        metavar="DURATION",
        help="keep running, once per DURATION (30s, 15m, 1h, 1d)",
    )
    p.set_defaults(func=cmd_compact)

    p = sub.add_parser(
        "sql",
        help="query the whole store (lake + hot rows) with DuckDB, read-only",
        description=(
            "Run one query over the view events (every published lake file plus the hot "
            "rows, from one snapshot). Only queries that read run (SELECT, FROM, WITH, "
            "VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN); anything else is refused with exit "
            "status 2. DuckDB can reach no file and writes no temporary file: a query that "
            "does not fit in memory fails. Exit status 1 when the query fails."
        ),
    )
    p.add_argument("query", help='e.g. "SELECT event_type, count(*) FROM events GROUP BY 1"')
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("lake", help="check the Parquet lake against lake_files")
    lake = p.add_subparsers(dest="lake_command", required=True)
    q = lake.add_parser(
        "verify",
        help="list lake files that are missing, changed or unrecorded",
        description=(
            "Compare every file recorded in lake_files with the lake directory (size, and "
            "SHA-256 where one was recorded) and list every .parquet file under "
            "<lake>/events that lake_files does not record. One line per problem (missing, "
            "changed, unreadable, unrecorded), then a summary. A compaction or import in "
            "progress shows its new files as unrecorded until it commits. Exit status: 0 "
            "intact, 1 problems found, 2 the check could not run."
        ),
    )
    q.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    p.set_defaults(func=cmd_lake)

    p = sub.add_parser("import", help="bulk-import history (same as import_events)")
    from importer.cli import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("bench", help="load the service and report events/s (see bench/)")
    from bench.harness import add_arguments as add_bench_arguments

    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("dlq", help="inspect, replay or purge the dead-letter queue")
    dlq = p.add_subparsers(dest="dlq_command", required=True)
    q = dlq.add_parser("list", help="the dead letters, with why they are there")
    q.add_argument("--limit", type=int, default=100)
    q.add_argument("--json", action="store_true")
    q = dlq.add_parser("show", help="one dead letter: headers and events")
    q.add_argument("id", help="its id (the batch_id the API answered)")
    q.add_argument("--events", action="store_true", help="all events, not the first 5")
    q = dlq.add_parser("replay", help="send dead letters back to the queue (stored once)")
    q.add_argument("ids", nargs="*", metavar="ID")
    q.add_argument("--all", action="store_true")
    q = dlq.add_parser("purge", help="delete every dead letter")
    q.add_argument("--yes", action="store_true", help="really delete them")
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser("config", help="print the effective configuration (secrets hidden)")
    p.add_argument("--markdown", action="store_true", help="print the README's settings table")
    p.add_argument(
        "--env-example", action="store_true", help="print .env.example (every setting, defaults)"
    )
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        return int(args.func(settings, args))
    except ConfigError as ex:
        print(f"events: {ex}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
