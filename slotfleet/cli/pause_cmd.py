"""``slotfleet pause`` and ``slotfleet resume``: stop and restart fetching from a queue.

A pause is written to the job store, so every worker of the queue honours it — local
workers, local fleets and Kubernetes fleets alike — on its next fetch (within a polling
interval). Running jobs finish. ``--until`` ends it by itself: a duration counted on the
store's clock (``90s``, ``15m``, ``2h``, ``7d``) or an ISO 8601 time with a zone
(``2030-01-01T09:00Z``). A Queue resource's ``spec.paused`` is a separate switch (see
docs/decisions.md): this command neither reads nor changes it.

What this module is not: it decides nothing about fetching; the store does.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from slotfleet.app import App
from slotfleet.cli.common import add_dsn, duration_arg, guarded, run_async
from slotfleet.models import QueuePause
from slotfleet.models.jobs import check_moment
from slotfleet.models.queues import check_queue_name


def queue_arg(text: str) -> str:
    """argparse type: a queue name."""
    try:
        return check_queue_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def until_arg(text: str) -> datetime | timedelta:
    """``--until``: a duration from now, or a time with a zone (one clear line otherwise)."""
    raw = text.strip()
    try:
        return duration_arg(raw)
    except argparse.ArgumentTypeError:
        pass
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (90s, 15m, 2h, 7d) nor an ISO 8601 time "
            "with a zone (2030-01-01T09:00Z)"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no time zone: add one (2030-01-01T09:00Z, or +01:00)"
        )
    try:
        return check_moment(moment, "--until")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_pause(pause: QueuePause) -> str:
    if pause.resume_at is None:
        return f"queue {pause.queue} paused until 'slotfleet resume {pause.queue}'"
    if not pause.in_effect:
        return (
            f"queue {pause.queue}: {_when(pause.resume_at)} has already passed, "
            "so the queue is not paused"
        )
    return f"queue {pause.queue} paused until {_when(pause.resume_at)}"


def _pause(args: argparse.Namespace) -> int:
    async def main() -> QueuePause:
        async with App(args.dsn) as app:
            return await app.pause(args.queue, until=args.until)

    print(describe_pause(run_async(main())))
    return 0


def _resume(args: argparse.Namespace) -> int:
    async def main() -> bool:
        async with App(args.dsn) as app:
            return await app.resume(args.queue)

    if run_async(main()):
        print(f"queue {args.queue} resumed")
    else:
        print(f"queue {args.queue} was not paused in the store; nothing to do")
    return 0


def register(commands: Any) -> None:
    p = commands.add_parser(
        "pause",
        help="stop every worker fetching from a queue",
        description="Pause a queue in the job store: no worker starts a job of it until it "
        "is resumed (or until --until). Running jobs finish. A Queue resource's "
        "spec.paused is a separate switch.",
    )
    add_dsn(p)
    p.add_argument("queue", type=queue_arg, help="queue name")
    p.add_argument(
        "--until",
        type=until_arg,
        metavar="WHEN",
        help="resume by itself: after a duration (90s, 15m, 2h, 7d; the store's clock) or "
        "at a time with a zone (2030-01-01T09:00Z)",
    )
    p.set_defaults(handler=guarded(_pause))

    p = commands.add_parser(
        "resume",
        help="end a queue's pause",
        description="End a queue's pause in the job store; idle workers fetch at once.",
    )
    add_dsn(p)
    p.add_argument("queue", type=queue_arg, help="queue name")
    p.set_defaults(handler=guarded(_resume))
