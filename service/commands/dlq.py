"""``events dlq list|show|replay|purge`` (``pipeline/dead_letter_admin.py``)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from core.config import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def run(settings: Settings, args: argparse.Namespace) -> int:
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
