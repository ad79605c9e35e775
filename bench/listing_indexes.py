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
import secrets
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


async def cycle(dsn: str, jobs: int, admin_dsn: str | None) -> dict[str, float]:
    """Enqueue, then claim and complete, ``jobs`` jobs; wall-clock rates (load-sensitive on
    a shared machine), this process's CPU time (SQLite's work happens here) and, on
    PostgreSQL, the WAL written: the last two barely move with other processes' load."""
    store = open_store(dsn)
    await store.open()
    wal_start = wal_lsn(admin_dsn)
    cpu_start = time.process_time()
    try:
        batch = [Job(func="bench.tasks:noop", queue="q")] * 1000
        started = time.perf_counter()
        for _ in range(jobs // 1000):
            await store.enqueue_ids(batch)
        enqueued = time.perf_counter()
        wal_enqueued = wal_lsn(admin_dsn)
        cpu_enqueued = time.process_time()
        done = 0
        while done < jobs:
            claimed = await store.fetch("q", "w", 100, 60, claim=secrets.token_hex(8))
            await store.complete(
                [
                    Completion(
                        job_id=j.id,
                        worker_id="w",
                        token=j.lease_token or "",
                        attempt=j.attempts,
                        outcome=Outcome.SUCCEEDED,
                    )
                    for j in claimed
                ]
            )
            done += len(claimed)
        finished = time.perf_counter()
        cpu_finished = time.process_time()
        wal_finished = wal_lsn(admin_dsn)
    finally:
        await store.close()
    figures = {
        "enqueue_jobs_per_s": jobs / (enqueued - started),
        "claim_complete_jobs_per_s": jobs / (finished - enqueued),
        "enqueue_cpu_us_per_job": (cpu_enqueued - cpu_start) * 1e6 / jobs,
        "claim_complete_cpu_us_per_job": (cpu_finished - cpu_enqueued) * 1e6 / jobs,
    }
    if admin_dsn is not None:
        figures["enqueue_wal_bytes_per_job"] = (wal_enqueued - wal_start) / jobs
        figures["claim_complete_wal_bytes_per_job"] = (wal_finished - wal_enqueued) / jobs
    return figures


def wal_lsn(admin_dsn: str | None) -> float:
    """PostgreSQL's current WAL position in bytes (0 without a server)."""
    if admin_dsn is None:
        return 0.0
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    return float(row[0]) if row else 0.0


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


#: (figure, label, digits) in table order.
FIGURES = [
    ("enqueue_jobs_per_s", "enqueue (jobs/s)", 0),
    ("enqueue_cpu_us_per_job", "enqueue, this process's CPU (µs/job)", 1),
    ("enqueue_wal_bytes_per_job", "enqueue, WAL written (bytes/job)", 0),
    ("claim_complete_jobs_per_s", "claim + complete (jobs/s)", 0),
    ("claim_complete_cpu_us_per_job", "claim + complete, this process's CPU (µs/job)", 1),
    ("claim_complete_wal_bytes_per_job", "claim + complete, WAL written (bytes/job)", 0),
]


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
        f"{result['runs']} runs with the range, alternating the two. On a machine "
        "shared with other test runs the rates swing from run to run; the CPU time of "
        "this process (where SQLite does its work) and the WAL PostgreSQL writes per job "
        "are steadier measures of the added write work.",
        "",
        "| figure | with 0004's indexes | without | with / without |",
        "|---|---:|---:|---:|",
    ]
    for backend in result["backends"]:
        for figure, label, digits in FIGURES:
            values_by = {
                v: [run[figure] for run in result["runs_by"][backend][v] if figure in run]
                for v in ("with", "without")
            }
            if not values_by["with"]:
                continue
            cells = []
            medians = []
            for variant in ("with", "without"):
                mid, low, high = median_range(values_by[variant])
                medians.append(mid)
                cells.append(f"{fmt(mid, digits)} ({fmt(low, digits)}-{fmt(high, digits)})")
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
                    admin = pg.admin_dsn if backend == "postgres" else None
                    figures = asyncio.run(cycle(dsn, args.jobs, admin))
                    runs_by[backend][variant].append(figures)
                    print(
                        backend, variant, {k: round(v, 1) for k, v in figures.items()}, flush=True
                    )
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
