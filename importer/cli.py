"""``import_events PATH...`` (also ``events import``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from core.config import load_settings
from core.errors import ConfigError
from core.logs import configure_logging
from core.redact import redact_url
from importer.readers import InputError
from importer.run import Options, TooManyErrors, run_import
from storage.errors import DB_ERRORS

EXIT_OK, EXIT_FAILED, EXIT_ABORTED = 0, 1, 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="files or directories to import; - reads standard input",
    )
    p.add_argument(
        "--format",
        choices=["csv", "ndjson", "parquet"],
        help="input format (default: from the file extension)",
    )
    p.add_argument(
        "--rejects", metavar="PATH", help="where refused rows go (default: <input>.rejects.csv)"
    )
    p.add_argument(
        "--max-errors",
        type=int,
        metavar="N",
        help="abort (exit status 2) once more than N rows were refused",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue after the last committed chunk of an interrupted import",
    )
    p.add_argument(
        "--via-queue",
        action="store_true",
        help="send the events through RabbitMQ like the API (workers store them)",
    )
    p.add_argument(
        "--chunk-mb",
        type=int,
        default=32,
        help="chunk size for CSV and NDJSON, in MiB (memory use scales with it)",
    )
    p.add_argument("--chunk-rows", type=int, default=200_000, help="chunk size for Parquet")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or lines")


def options_from(args: argparse.Namespace) -> Options:
    return Options(
        fmt=args.format,
        rejects=args.rejects,
        max_errors=args.max_errors,
        resume=args.resume,
        chunk_bytes=args.chunk_mb * 1024 * 1024,
        chunk_rows=args.chunk_rows,
        progress=False if args.no_progress else None,
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except ConfigError as ex:
        print(f"import_events: {ex}", file=sys.stderr)
        return EXIT_FAILED
    configure_logging(settings.log_level, settings.log_format)
    options = options_from(args)
    try:
        summary = asyncio.run(run_import(settings, args.paths, options, via_queue=args.via_queue))
    except TooManyErrors as ex:
        print(f"import_events: aborted: {ex}", file=sys.stderr)
        return EXIT_ABORTED
    except InputError as ex:
        print(f"import_events: {ex}", file=sys.stderr)
        return EXIT_FAILED
    except DB_ERRORS as ex:
        print(
            f"import_events: cannot reach the database at {redact_url(settings.database_url)}"
            f" ({type(ex).__name__}: {ex})",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("import_events: interrupted; run again with --resume to continue", file=sys.stderr)
        return EXIT_FAILED
    print(f"import_events: {summary.line()}", file=sys.stderr)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="import_events", description="Bulk-import history: CSV, NDJSON or Parquet."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
