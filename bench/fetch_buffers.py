"""Why a drain slows as it goes (issue 14, "flat from 10k to 1M"): the buffers PostgreSQL
reads for one fetch and one completion batch of 100 jobs, at points through a drain of
a backlog, for backlogs of different sizes.

    .venv/bin/python -m bench.fetch_buffers                      # 10k, 200k, 1M (~5 min)
    .venv/bin/python -m bench.fetch_buffers --sizes 10000,200000 --no-doc

The drain runs the store's own verbs in this process (``fetch`` 100, ``complete`` them),
on the same kind of throwaway PostgreSQL as ``bench.core``, with autovacuum at its
defaults. At each checkpoint the store's ``FETCH`` and ``COMPLETE`` statements are run
under ``EXPLAIN (ANALYZE, BUFFERS)`` in a transaction that is rolled back, and the table's
dead tuples and autovacuum count are read. Buffers are counted work (shared hits and
reads of the whole plan), steady on a shared machine; the milliseconds beside them are
not. Writes bench/results/fetch_buffers-*.json and the "fetch-buffers" section of
docs/benchmarks.md. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import psycopg

from bench import pg as pgmod
from bench.common import command_line, fmt, machine_facts, write_doc_section, write_json
from slotfleet.models import Job
from slotfleet.models.values import Completion, Outcome
from slotfleet.store import open_store, postgres_sql
from slotfleet.store.postgres_db import completion_document

#: Fractions of the backlog drained at which the statements are explained.
CHECKPOINTS = (0.0, 0.25, 0.5, 0.75, 0.98)
BATCH = 100


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="10000,200000,1000000", help="backlogs, comma-separated")
    p.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    return p.parse_args(argv)


def _plan_totals(plan: list[str]) -> tuple[int, float]:
    """(shared buffers hit + read by the whole plan, execution ms) from EXPLAIN's text:
    the first ``Buffers: shared`` line is the top node's, which includes its children."""
    buffers, ms = -1, float("nan")
    for line in plan:
        text = line.strip()
        if buffers < 0 and text.startswith("Buffers: shared"):
            parts = text.removeprefix("Buffers: shared").split()
            buffers = sum(int(p.split("=")[1]) for p in parts if p.startswith(("hit=", "read=")))
        if text.startswith("Execution Time:"):
            ms = float(text.split()[2])
    return buffers, ms


def _explain(admin: psycopg.Connection[Any], sql: str, params: dict[str, Any]) -> tuple[int, float]:
    admin.execute("BEGIN")
    try:
        rows = admin.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).fetchall()
    finally:
        admin.execute("ROLLBACK")
    return _plan_totals([str(r[0]) for r in rows])


async def drain(pg: pgmod.Postgres, size: int) -> list[dict[str, Any]]:
    pgmod.reset_database(pg)
    store = open_store(pg.dsn)
    await store.open()
    points = []
    try:
        for _ in range(0, size, 1000):
            await store.enqueue_ids([Job(func="bench.tasks:sf_noop_async", queue="bench")] * 1000)
        # A probe explains the next fetch: leave a batch after the last checkpoint.
        marks = sorted({min(size - 2 * BATCH, int(size * f)) // BATCH * BATCH for f in CHECKPOINTS})
        done = 0
        started = time.monotonic()
        with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
            while True:
                jobs = await store.fetch("bench", "w", BATCH, 60.0, claim=f"c{done}")
                if not jobs:
                    break
                batch = [
                    Completion(job_id=j.id, worker_id="w", token=j.lease_token or "",
                               attempt=j.attempts, outcome=Outcome.SUCCEEDED)
                    for j in jobs
                ]  # fmt: skip
                if done in marks:
                    fetch_params = {"queue": "bench", "worker_id": "probe", "claim": "probe",
                                    "limit": BATCH, "lease_seconds": 60.0}  # fmt: skip
                    fetch = _explain(admin, postgres_sql.FETCH, fetch_params)
                    doc = {"completions": completion_document(batch)}
                    complete = _explain(admin, postgres_sql.COMPLETE, doc)
                    row = admin.execute(
                        "SELECT n_dead_tup, autovacuum_count FROM pg_stat_user_tables"
                        " WHERE relname = 'slotfleet_jobs'"
                    ).fetchone()
                    assert row is not None
                    points.append({
                        "backlog": size, "drained": done, "fetch_buffers": fetch[0],
                        "fetch_ms": fetch[1], "complete_buffers": complete[0],
                        "complete_ms": complete[1], "dead_tuples": int(row[0]),
                        "autovacuums": int(row[1]),
                        "seconds": round(time.monotonic() - started, 1),
                    })  # fmt: skip
                    print(points[-1], flush=True)
                await store.complete(batch)
                done += len(jobs)
    finally:
        await store.close()
    return points


def render(points: list[dict[str, Any]], facts: dict[str, Any], command: str) -> str:
    lines = [
        "| backlog | drained | fetch 100: buffers | ms | complete 100: buffers | ms"
        " | dead tuples | autovacuums so far |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        lines.append(
            f"| {p['backlog']:,} | {p['drained']:,} | {p['fetch_buffers']:,} |"
            f" {fmt(p['fetch_ms'], 1)} | {p['complete_buffers']:,} | {fmt(p['complete_ms'], 1)} |"
            f" {p['dead_tuples']:,} | {p['autovacuums']} |"
        )
    return "\n".join(
        [
            "## What a fetch reads as a drain goes on",
            "",
            f"Command (from the repository root): `{command}`",
            "",
            f"Date: {facts['date']} · git {facts['git']} · {facts['nproc']} CPUs"
            f" · PostgreSQL {facts['postgres']} (loopback, fsync off, autovacuum defaults)",
            "",
            f"A backlog of no-op jobs (`enqueue_ids`, batches of 1,000) drained in this process"
            f" by the store's verbs, {BATCH} jobs a fetch, each batch completed. At each row's"
            " point the store's own `FETCH` and `COMPLETE` ran under `EXPLAIN (ANALYZE,"
            " BUFFERS)` and were rolled back: buffers are the whole plan's shared hits and reads"
            " (counted work, steady on a shared machine); the milliseconds are indicative only.",
            "",
            *lines,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    points: list[dict[str, Any]] = []
    with pgmod.running() as pg:
        facts = machine_facts(pg.version)
        for size in sizes:
            points += asyncio.run(drain(pg, size))
    command = command_line()
    path = write_json("fetch_buffers", {"facts": facts, "points": points, "command": command})
    text = render(points, facts, command)
    print(text)
    print(f"\nresults: {path}")
    if not args.no_doc:
        write_doc_section("fetch-buffers", text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
