"""What an index migration does to a queue's writes on a large ``slotfleet_jobs``: the same
index built by a transactional migration (``CREATE INDEX`` in the migration's
transaction, how 0002 and 0004 run) and by an online one (``CREATE INDEX CONCURRENTLY``
outside a transaction), alternating, on one table.

    .venv/bin/python -m bench.online_index [--rows 300000] [--runs 3]

The table holds ``--rows`` pending jobs of another queue. During each build a writer in
the same process loops over what a worker and a client do: enqueue 10 jobs, claim them,
complete them (one cycle), each through the store verbs. Per build: its duration (through
``postgres_migrate.migrate``, the code a starting worker runs), the cycles the writer
completed while it ran, and the longest and median cycle. Writes
bench/results/online-index-*.json and the "online-index" section of docs/benchmarks.md
(``--no-doc`` to skip). Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from typing import Any

import psycopg
from psycopg.rows import dict_row

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
from slotfleet.store.postgres_migrate import migrate, parse_migration

INDEX = "slotfleet_jobs_bench_online"
SCRIPTS = {
    "transactional": f"CREATE INDEX {INDEX} ON slotfleet_jobs (func, created_at);\n",
    "online": "-- slotfleet: online\n"
    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON slotfleet_jobs (func, created_at);\n",
}
CYCLE_JOBS = 10


async def fill(dsn: str, rows: int) -> None:
    store = open_store(dsn)
    await store.open()
    try:
        for start in range(0, rows, 5000):
            size = min(5000, rows - start)
            await store.enqueue_ids([Job(func="bench.tasks:noop_async", queue="backlog")] * size)
    finally:
        await store.close()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("VACUUM ANALYZE slotfleet_jobs")


async def writer(dsn: str, stop: asyncio.Event, cycles: list[tuple[float, float]]) -> None:
    """Enqueue, claim and complete CYCLE_JOBS jobs per cycle until ``stop``; appends
    (start, end) of each cycle (perf_counter)."""
    store = open_store(dsn)
    await store.open()
    try:
        while not stop.is_set():
            began = time.perf_counter()
            await store.enqueue_ids([Job(func="bench.tasks:noop_async", queue="live")] * CYCLE_JOBS)
            claim = secrets.token_hex(8)
            claimed = await store.fetch("live", "w", CYCLE_JOBS, 60, claim=claim)
            await store.complete(
                [
                    Completion(
                        job_id=j.id,
                        worker_id="w",
                        token=claim,
                        attempt=j.attempts,
                        outcome=Outcome.SUCCEEDED,
                    )
                    for j in claimed
                ]
            )
            cycles.append((began, time.perf_counter()))
    finally:
        await store.close()


async def one_build(dsn: str, mode: str) -> dict[str, float]:
    migration = parse_migration(99, f"0099_bench_{mode}", SCRIPTS[mode])
    stop = asyncio.Event()
    cycles: list[tuple[float, float]] = []
    writing = asyncio.create_task(writer(dsn, stop, cycles))
    await asyncio.sleep(1.0)  # the writer's own pace before the build
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, row_factory=dict_row
    ) as conn:
        started = time.perf_counter()
        await migrate(conn, [migration])
        ended = time.perf_counter()
        stop.set()
        await writing
        await conn.execute(f"DROP INDEX {INDEX}")
        await conn.execute("DELETE FROM slotfleet_migrations WHERE version = 99")
    before = [e - b for b, e in cycles if e < started]
    # A cycle that overlaps the build counts for it (it may have waited on the build).
    during = [e - b for b, e in cycles if e > started and b < ended]
    return {
        "build_s": ended - started,
        "cycles_during": float(sum(1 for b, e in cycles if e <= ended and e > started)),
        "longest_cycle_ms": max(during) * 1000 if during else float("nan"),
        "median_cycle_ms": statistics.median(during) * 1000 if during else float("nan"),
        "median_cycle_before_ms": statistics.median(before) * 1000 if before else float("nan"),
    }


FIGURES = [
    ("build_s", "index build (s)", 2),
    ("cycles_during", "writer cycles completed during the build", 0),
    ("longest_cycle_ms", "longest cycle overlapping the build (ms)", 0),
    ("median_cycle_ms", "median cycle overlapping the build (ms)", 1),
    ("median_cycle_before_ms", "median cycle before the build (ms)", 1),
]


def render(result: dict[str, Any]) -> str:
    facts = result["machine"]
    lines = [
        "## What an index migration does to writes on a large table",
        "",
        f"Command (from the repository root): `{result['command']}`",
        "",
        f"Date: {facts['date']} · git {facts['git']} · {facts['nproc']} CPUs · "
        f"Python {facts['python']} · PostgreSQL {facts['postgres'] or '-'} · load average "
        f"at start {facts['loadavg_start']} (other engineers' test runs shared the machine)",
        "",
        f"`slotfleet_jobs` holds {result['rows']:,} pending jobs of another queue. One index "
        "on `(func, created_at)` is built by `postgres_migrate.migrate` (what a starting "
        "worker runs), as a transactional migration (`CREATE INDEX` in the migration's "
        "transaction, how 0002 and 0004 run) and as an online one (`CREATE INDEX "
        "CONCURRENTLY`), alternating. Meanwhile a writer in the same process loops: enqueue "
        f"{CYCLE_JOBS} jobs, claim them, complete them (one cycle). Median of "
        f"{result['runs']} builds each, with the range. How to read it: a transactional "
        "build holds every enqueue, claim and completion on the table for as long as it "
        "runs (the longest cycle is about the build), an online one takes somewhat longer "
        "and lets them through; the cost grows with the table.",
        "",
        "| figure | transactional | online |",
        "|---|---:|---:|",
    ]
    for figure, label, digits in FIGURES:
        cells = []
        for mode in ("transactional", "online"):
            mid, low, high = median_range([run[figure] for run in result["runs_by"][mode]])
            cells.append(f"{fmt(mid, digits)} ({fmt(low, digits)}-{fmt(high, digits)})")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=300_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--no-doc", action="store_true")
    args = p.parse_args(argv)
    runs_by: dict[str, list[dict[str, float]]] = {"transactional": [], "online": []}
    with pgmod.running() as pg:
        facts = machine_facts(pg.version)
        pgmod.reset_database(pg)
        asyncio.run(fill(pg.dsn, args.rows))
        for _ in range(args.runs):
            for mode in ("transactional", "online"):
                figures = asyncio.run(one_build(pg.dsn, mode))
                runs_by[mode].append(figures)
                print(mode, {k: round(v, 3) for k, v in figures.items()}, flush=True)
    result = {
        "command": command_line(),
        "machine": facts,
        "rows": args.rows,
        "runs": args.runs,
        "runs_by": runs_by,
    }
    path = write_json("online-index", result)
    text = render(result)
    print(text)
    print(f"\nresults: {path}")
    if not args.no_doc:
        write_doc_section("online-index", text)


if __name__ == "__main__":
    main()
