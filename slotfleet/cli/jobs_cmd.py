"""``slotfleet enqueue``, ``jobs``, ``cancel``, ``retry``, ``purge`` and ``queues``: the
client API from a shell."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from slotfleet.app import App
from slotfleet.app.decorator import make_job
from slotfleet.app.outcomes import cancel_outcome, retry_outcome
from slotfleet.cli.common import (
    add_dsn,
    duration_arg,
    guarded,
    print_json,
    print_table,
    run_async,
)
from slotfleet.models import (
    InvalidJobError,
    JobNotFoundError,
    JobState,
    QueuedJob,
    QueueStats,
)


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_kwargs(json_text: str | None, pairs: list[str]) -> dict[str, Any]:
    """kwargs from ``--kwargs '{"a": 1}'`` and ``key=value`` pairs (values parsed as JSON
    when they parse, else kept as strings)."""
    kwargs: dict[str, Any] = {}
    if json_text:
        try:
            loaded = json.loads(json_text)
        except json.JSONDecodeError as exc:
            raise InvalidJobError(
                f"--kwargs is not valid JSON: {exc.msg} at char {exc.pos}"
            ) from None
        if not isinstance(loaded, dict):
            raise InvalidJobError('--kwargs must be a JSON object, like \'{"to": "a@b.c"}\'')
        kwargs.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.isidentifier():
            raise InvalidJobError(f"{pair!r} is not key=value with an identifier as key")
        try:
            kwargs[key] = json.loads(raw)
        except json.JSONDecodeError:
            kwargs[key] = raw
    return kwargs


def _enqueue(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {"queue": args.queue, "priority": args.priority}
    options["max_attempts"] = args.max_attempts
    if args.timeout is not None:
        options["timeout"] = args.timeout
    if args.unique_key:
        options["unique_key"] = args.unique_key
    if args.delay:
        options["scheduled_at"] = datetime.now(UTC) + timedelta(seconds=args.delay)
    job = make_job(args.func, parse_kwargs(args.kwargs, args.pairs), options)
    jobs = [job] * args.count

    async def main() -> list[str]:
        async with App(args.dsn) as app:
            refs = await app.enqueue_many(jobs)
        return [str(r) for r in refs]

    for ref in run_async(main()):
        print(ref)
    return 0


def _job_row(job: QueuedJob) -> list[object]:
    when = job.completed_at or job.started_at or job.created_at
    error = job.errors[-1].error if job.errors else ""
    return [
        job.id,
        job.queue,
        job.state,
        f"{job.attempts}/{job.max_attempts}",
        job.func,
        when.strftime("%H:%M:%S"),
        error[:60],
    ]


def _jobs(args: argparse.Namespace) -> int:
    async def main() -> list[QueuedJob]:
        async with App(args.dsn) as app:
            if args.id is not None:
                return [await app.get(args.id)]
            return await app.list(
                queue=args.queue, states=args.state or None, func=args.func, limit=args.limit
            )

    found = run_async(main())
    if args.json or args.id is not None:
        data = [j.model_dump(mode="json") for j in found]
        print_json(data[0] if args.id is not None else data)
    else:
        print_table(
            ["ID", "QUEUE", "STATE", "TRIES", "FUNCTION", "AT", "LAST ERROR"],
            [_job_row(j) for j in found],
        )
    return 0


def _each(
    args: argparse.Namespace,
    verb: Callable[[App, str], Awaitable[QueuedJob]],
    outcome: Callable[[QueuedJob], str],
) -> int:
    """Run ``verb`` on each id in turn; print each outcome or one-line error, and exit 1
    if any id failed."""

    async def main() -> int:
        failures = 0
        async with App(args.dsn) as app:
            for raw in args.ids:
                try:
                    job = await verb(app, raw)
                except (JobNotFoundError, InvalidJobError) as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    failures += 1
                    continue
                print(outcome(job))
        return 1 if failures else 0

    return run_async(main())


def _cancel(args: argparse.Namespace) -> int:
    return _each(args, App.cancel, cancel_outcome)


def _retry(args: argparse.Namespace) -> int:
    return _each(args, App.retry, retry_outcome)


def _purge(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with App(args.dsn) as app:
            return await app.purge(args.older_than, queue=args.queue)

    deleted = run_async(main())
    where = f" from queue {args.queue}" if args.queue else ""
    print(f"deleted {deleted} finished job(s){where} older than {args.older_than}")
    return 0


def _paused(stats: QueueStats) -> str:
    """The PAUSED column: ``-``, ``yes`` (until resumed) or when it resumes (UTC)."""
    if not stats.paused:
        return "-"
    if stats.resume_at is None:
        return "yes"
    return "until " + stats.resume_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _queues(args: argparse.Namespace) -> int:
    async def main() -> list[QueueStats]:
        async with App(args.dsn) as app:
            return await app.queues(args.name)

    stats = run_async(main())
    if args.json:
        from pydantic import TypeAdapter  # the JSON form pydantic gives every other listing

        plain = TypeAdapter(list[QueueStats]).dump_python(stats, mode="json")
        print_json([p | {"slots_free": s.slots_free} for p, s in zip(plain, stats, strict=True)])
        return 0
    print_table(
        [
            "QUEUE",
            "READY",
            "SCHEDULED",
            "RUNNING",
            "SUCCEEDED",
            "FAILED",
            "CANCELLED",
            "WORKERS",
            "SLOTS",
            "BUSY",
            "FREE",
            "PAUSED",
        ],
        [
            [
                s.queue,
                s.ready,
                s.scheduled,
                s.running,
                s.succeeded,
                s.failed,
                s.cancelled,
                s.workers,
                s.slots_total,
                s.slots_busy,
                s.slots_free,
                _paused(s),
            ]
            for s in stats
        ],
    )
    return 0


def register(commands: Any) -> None:
    p = commands.add_parser("enqueue", help="queue a job", description="Queue a job.")
    add_dsn(p)
    p.add_argument("func", help="import path of the function, e.g. myapp.tasks:send_email")
    p.add_argument("pairs", nargs="*", metavar="KEY=VALUE", help="kwargs (values parsed as JSON)")
    p.add_argument("--kwargs", help="kwargs as a JSON object")
    p.add_argument("--queue", default="default", help="queue name (default: default)")
    p.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    p.add_argument(
        "--max-attempts", type=int, default=1, help="attempts before failing (default 1)"
    )
    p.add_argument("--timeout", type=float, help="seconds one attempt may run")
    p.add_argument("--unique-key", help="skip if a job with this key is not finished")
    p.add_argument("--delay", type=float, default=0.0, help="run no sooner than in N seconds")
    p.add_argument("--count", type=positive_int, default=1, help="queue N copies in one batch")
    p.set_defaults(handler=guarded(_enqueue))

    p = commands.add_parser("jobs", help="list jobs or show one", description="List or show jobs.")
    add_dsn(p)
    p.add_argument("id", nargs="?", help="show this job in full")
    p.add_argument("--queue", help="only this queue")
    p.add_argument(
        "--state",
        action="append",
        choices=[s.value for s in JobState],
        help="only these states (repeatable)",
    )
    p.add_argument("--func", help="only jobs of this function (its import path)")
    p.add_argument("--limit", type=positive_int, default=50, help="most jobs to list (default 50)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=guarded(_jobs))

    p = commands.add_parser("cancel", help="cancel jobs", description="Cancel jobs by id.")
    add_dsn(p)
    p.add_argument("ids", nargs="+", metavar="ID", help="job ids")
    p.set_defaults(handler=guarded(_cancel))

    p = commands.add_parser(
        "retry",
        help="queue failed or cancelled jobs again",
        description="Queue failed or cancelled jobs again under the same id, with a fresh "
        "set of attempts (their earlier errors are kept).",
    )
    add_dsn(p)
    p.add_argument("ids", nargs="+", metavar="ID", help="job ids")
    p.set_defaults(handler=guarded(_retry))

    p = commands.add_parser(
        "purge",
        help="delete finished jobs older than a duration",
        description="Delete finished jobs (succeeded, failed, cancelled) that finished more "
        "than --older-than ago. A Queue's spec.retentionSeconds has the operator do this.",
    )
    add_dsn(p)
    p.add_argument(
        "--older-than",
        type=duration_arg,
        required=True,
        metavar="DURATION",
        help="e.g. 3600, 90s, 15m, 12h, 7d",
    )
    p.add_argument("--queue", help="only this queue")
    p.set_defaults(handler=guarded(_purge))

    p = commands.add_parser(
        "queues",
        help="backlog and slots per queue",
        description="Backlog by state and live slots per queue.",
    )
    add_dsn(p)
    p.add_argument("name", nargs="?", help="only this queue")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=guarded(_queues))
