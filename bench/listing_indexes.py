"""What migration 0004's listing indexes cost the hot path: enqueue, claim and complete
on PostgreSQL and SQLite, with the indexes as migrated and with them dropped (and the
``(queue, id)`` index they replaced put back), in the same run, alternating.

    .venv/bin/python -m bench.listing_indexes [--jobs 20000] [--runs 3]

Each run: a fresh store, ``--jobs`` jobs enqueued in batches of 1,000 (``enqueue_ids``,
what ``App.enqueue_many`` uses), then claimed 100 at a time and completed in batches of
100 (what a worker does), in this process through the store verbs; jobs/s of each phase.
Writes bench/results/listing-indexes-*.json and the "listing-indexes" section of
docs/benchmarks.md (``--no-doc`` to skip). Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import pg as pgmod
from bench.common import (
    command_line,
    fmt,
    machine_facts,
    median_range,
    write_doc_section,
    write_json,
)
from slotfleet.models import Completion, Job, Outcome
from slotfleet.store import open_store

#: Undo 0004's listing indexes (what the store looked like before the dashboard).
WITHOUT = [
    "DROP INDEX slotfleet_jobs_state_id",
    "DROP INDEX slotfleet_jobs_queue_state_id",
    "DROP INDEX slotfleet_jobs_func_state_id",
    "CREATE INDEX slotfleet_jobs_queue_id ON slotfleet_jobs (queue, id)",
]


async def cycle(dsn: str, jobs: int) -> dict[str, float]:
    store = open_store(dsn)
    await store.open()
    try:
        batch = [Job(func="bench.tasks:noop", queue="q")] * 1000
        started = time.perf_counter()
        for _ in range(jobs // 1000):
            await store.enqueue_ids(batch)
        enqueued = time.perf_counter()
        done = 0
        while done < jobs:
            claimed = await store.fetch("q", "w", 100, 60)
            await store.complete(
                [Completion(job_id=j.id, worker_id="w", outcome=Outcome.SUCCEEDED) for j in claimed]
            )
            done += len(claimed)
        finished = time.perf_counter()
    finally:
        await store.close()
    return {
        "enqueue_jobs_per_s": jobs / (enqueued - started),
        "claim_complete_jobs_per_s": jobs / (finished - enqueued),
    }


def prepare_postgres(pg: pgmod.Postgres, indexes: bool) -> str:
    pgmod.reset_database(pg)

    async def migrate() -> None:
        store = open_store(pg.dsn)
        await store.open()
        await store.close()

    asyncio.run(migrate())
    if not indexes:
        with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
            for statement in WITHOUT:
                conn.execute(statement.encode())
    return pg.dsn


def prepare_sqlite(folder: Path, run: int, indexes: bool) -> str:
    path = folder / f"run{run}-{indexes}.db"
    dsn = f"sqlite:///{path}"

    async def migrate() -> None:
        store = open_store(dsn)
        await store.open()
        await store.close()

    asyncio.run(migrate())
    if not indexes:
        conn = sqlite3.connect(path)
        for statement in WITHOUT:
            conn.execute(statement)
        conn.commit()
        conn.close()
    return dsn


def render(result: dict[str, Any]) -> str:
    facts = result["machine"]
    lines = [
        "## What the listing indexes cost the hot path",
        "",
        f"Command (from the repository root): `{result['command']}`",
        "",
        f"Date: {facts['date']} · git {facts['git']} · {facts['nproc']} CPUs · "
        f"Python {facts['python']} · PostgreSQL {facts['postgres'] or '-'} · load average "
        f"at start {facts['loadavg_start']}",
        "",
        f"{result['jobs']:,} jobs per run, enqueued in batches of 1,000 (`enqueue_ids`), "
        "then claimed 100 at a time and completed in batches of 100, through the store "
        "verbs in one process: the statements a worker runs, without a worker's executor "
        "around them. `with` is the schema as migrated (0004's `(state, id)`, "
        "`(queue, state, id)` and `(func, state, id)`); `without` drops them and puts "
        "`(queue, id)` back. Median of "
        f"{result['runs']} runs with the range, alternating the two.",
        "",
        "| figure | with 0004's indexes | without | with / without |",
        "|---|---:|---:|---:|",
    ]
    for backend in result["backends"]:
        for figure, label in (
            ("enqueue_jobs_per_s", "enqueue (jobs/s)"),
            ("claim_complete_jobs_per_s", "claim + complete (jobs/s)"),
        ):
            cells = []
            medians = []
            for variant in ("with", "without"):
                values = [run[figure] for run in result["runs_by"][backend][variant]]
                mid, low, high = median_range(values)
                medians.append(mid)
                cells.append(f"{fmt(mid)} ({fmt(low)}-{fmt(high)})")
            ratio = medians[0] / medians[1] if medians[1] else float("nan")
            lines.append(f"| {backend}, {label} | {cells[0]} | {cells[1]} | {ratio:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--backends", default="postgres,sqlite")
    p.add_argument("--no-doc", action="store_true")
    args = p.parse_args(argv)
    backends = args.backends.split(",")
    runs_by: dict[str, dict[str, list[dict[str, float]]]] = {
        b: {"with": [], "without": []} for b in backends
    }
    version = None
    folder = Path(tempfile.mkdtemp(prefix="slotfleet-bench-indexes-"))
    with pgmod.running() as pg:
        version = pg.version
        for run in range(args.runs):
            for indexes in (True, False):
                variant = "with" if indexes else "without"
                for backend in backends:
                    if backend == "postgres":
                        dsn = prepare_postgres(pg, indexes)
                    else:
                        dsn = prepare_sqlite(folder, run, indexes)
                    figures = asyncio.run(cycle(dsn, args.jobs))
                    runs_by[backend][variant].append(figures)
                    print(backend, variant, {k: round(v) for k, v in figures.items()}, flush=True)
    result = {
        "command": command_line(),
        "machine": machine_facts(version),
        "jobs": args.jobs,
        "runs": args.runs,
        "backends": backends,
        "runs_by": runs_by,
    }
    path = write_json("listing-indexes", result)
    text = render(result)
    print(text)
    print(f"\nresults: {path}")
    if not args.no_doc:
        write_doc_section("listing-indexes", text)


if __name__ == "__main__":
    main()
