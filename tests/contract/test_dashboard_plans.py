"""Query plans of the statements the dashboard runs, on tables of 100k jobs where the
filtered rows are rare (a few failed jobs among succeeded ones): each page is a backwards
range scan of the index its filter names, never a scan of the table, and the finished
counts walk the finished-jobs index from the window's start.

The statements are the stores' own (``postgres_reads_sql.listing``,
``sqlite_reads_sql.listing``, ``FINISHED_COUNTS``, ``RETRY``), explained, never copies.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from slotfleet.store import open_store, postgres_reads_sql, sqlite_reads_sql, sqlite_sql
from slotfleet.store.rows import listing_states

ROWS = 100_000

#: (filters, the index each per-state scan must use)
CASES: list[tuple[dict[str, Any], str]] = [
    ({}, "slotfleet_jobs_pkey"),
    ({"states": ["failed"]}, "slotfleet_jobs_state_id"),
    ({"states": ["failed", "running"]}, "slotfleet_jobs_state_id"),
    # running jobs are not in the listing indexes: few (one per busy slot), read and sorted
    ({"states": ["running"]}, "slotfleet_jobs_running_owner"),
    ({"queue": "q3", "states": ["running"]}, "slotfleet_jobs_running_owner"),
    ({"queue": "q3"}, "slotfleet_jobs_queue_state_id"),
    ({"queue": "q3", "states": ["failed"]}, "slotfleet_jobs_queue_state_id"),
    ({"func": "tasks:f7"}, "slotfleet_jobs_func_state_id"),
    ({"func": "tasks:f7", "states": ["cancelled"]}, "slotfleet_jobs_func_state_id"),
]

#: Filters matching most rows: a backwards walk stops after LIMIT rows.
DENSE: list[tuple[dict[str, Any], str]] = [
    ({"states": ["succeeded"]}, ""),
    ({"queue": "q3", "states": ["succeeded"]}, ""),
]

# One job in 1,000 failed, one in 2,000 cancelled, a handful running, the rest succeeded.
STATE_OF_G = """CASE WHEN g % 1000 = 0 THEN 'failed' WHEN g % 2000 = 1 THEN 'cancelled'
    WHEN g % 20000 = 2 THEN 'running' ELSE 'succeeded' END"""


def statement(module: Any, filters: dict[str, Any], select: str) -> str:
    states = listing_states(
        queue=filters.get("queue"), states=filters.get("states"), func=filters.get("func")
    )
    return str(
        module.listing(
            select,
            states,
            queue="queue" in filters,
            func="func" in filters,
            after=True,
        )
    )


def params(filters: dict[str, Any]) -> dict[str, Any]:
    return {
        "queue": filters.get("queue"),
        "func": filters.get("func"),
        "after_id": ROWS // 2,
        "limit": 50,
    }


def leaves(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The scans at the bottom of an ``EXPLAIN (FORMAT JSON)`` plan."""
    children = node.get("Plans", [])
    return [node] if not children else [leaf for child in children for leaf in leaves(child)]


async def explain(conn: psycopg.AsyncConnection[Any], query: str, values: Any) -> dict[str, Any]:
    cur = await conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query, values)
    row = await cur.fetchone()
    assert row is not None
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


@pytest.mark.postgres
async def test_postgres_pages_read_a_bounded_number_of_rows_on_100k_rows(
    postgres_dsn: str,
) -> None:
    """With statistics as autovacuum keeps them (and in the generic plan psycopg's
    prepared statements get), a page reads at most a few pages' worth of index entries:
    a backwards range scan stopped by LIMIT, or the few rows of a rare state sorted.
    Right after a bulk load into a table analyzed while empty, the planner may read a
    whole state through a bitmap and sort it (measured: 23 ms per 100k rows of that
    state) until autovacuum analyzes the table; it never scans the table."""
    store = open_store(postgres_dsn)
    await store.open()
    await store.close()
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        await conn.execute("ANALYZE slotfleet_jobs")  # statistics say: empty
        await conn.execute(
            f"""
            INSERT INTO slotfleet_jobs (queue, func, state, scheduled_at, completed_at)
            SELECT 'q' || (g % 7), 'tasks:f' || (g % 10), {STATE_OF_G},
                   now(), now() - make_interval(secs => g)
            FROM generate_series(1, {ROWS}) AS g
            """
        )
        for statistics in ("stale", "fresh", "generic"):
            if statistics == "fresh":
                await conn.execute("ANALYZE slotfleet_jobs")
            if statistics == "generic":
                await conn.execute("SET plan_cache_mode = force_generic_plan")
            for n, (filters, _) in enumerate(CASES + DENSE):
                for select in ("*", postgres_reads_sql.SUMMARY_SELECT):
                    query = statement(postgres_reads_sql, filters, select)
                    values: Any = params(filters)
                    if statistics == "generic":
                        names = ("queue", "func", "after_id", "limit")
                        for i, name in enumerate(names, 1):
                            query = query.replace(f"%({name})s", f"${i}")
                        kinds = "text, text, bigint, int"
                        prepared = f"page{n}{len(select)}"
                        await conn.execute(f"PREPARE {prepared}({kinds}) AS {query}")
                        literals = pgsql.SQL(", ").join(pgsql.Literal(values[k]) for k in names)
                        query = (
                            pgsql.SQL("EXECUTE {}({})")
                            .format(pgsql.Identifier(prepared), literals)
                            .as_string(conn)
                        )
                        values = None
                    scans = leaves(await explain(conn, query, values))
                    read = sum(s["Actual Rows"] * s["Actual Loops"] for s in scans)
                    where = (statistics, filters, read, [s["Node Type"] for s in scans])
                    assert all(s["Node Type"] != "Seq Scan" for s in scans), where
                    if statistics != "stale":
                        assert read <= 1000, where
        for statistics in ("stale", "fresh"):
            plan = await explain(
                conn, postgres_reads_sql.FINISHED_COUNTS, {"window": 600.0, "bucket": 10.0}
            )
            assert {s.get("Index Name") for s in leaves(plan)} == {"slotfleet_jobs_finished"}
            cur = await conn.execute("EXPLAIN " + postgres_reads_sql.RETRY, {"id": 1000})
            text = "\n".join(str(row[0]) for row in await cur.fetchall())
            assert "slotfleet_jobs_pkey" in text, (statistics, text)
            assert "Seq Scan" not in text, (statistics, text)


@pytest.mark.postgres
async def test_postgres_finished_counts_skip_jobs_finished_before_the_window(
    postgres_dsn: str,
) -> None:
    store = open_store(postgres_dsn)
    await store.open()
    try:
        async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
            # job g finished g * 7 seconds ago: 0 s .. 6993 s
            await conn.execute(
                """
                INSERT INTO slotfleet_jobs (queue, func, state, completed_at)
                SELECT 'q' || (g % 2), 'tasks:f',
                       CASE WHEN g % 3 = 0 THEN 'failed' ELSE 'succeeded' END,
                       now() - make_interval(secs => g * 7)
                FROM generate_series(0, 999) AS g
                """
            )
        counts = await store.finished_counts(window_seconds=600, bucket_seconds=60)
        now = (await store.now()).timestamp()
    finally:
        await store.close()
    since = (now - 600) // 60 * 60
    ages = [g * 7 for g in range(1000)]
    want = sum(1 for age in ages if now - age >= since)
    assert sum(c.succeeded + c.failed + c.cancelled for c in counts) == want
    assert want < len(ages)
    assert min(c.start.timestamp() for c in counts) == since


#: A scan of the table (or of an index other than the small running-jobs one).
WHOLE_TABLE = r"SCAN slotfleet_jobs(?! USING INDEX slotfleet_jobs_running_owner)"


def sqlite_work(conn: sqlite3.Connection, query: str, values: dict[str, Any]) -> int:
    """Thousands of virtual-machine instructions SQLite runs for ``query`` (a table scan
    of 100k rows runs millions)."""
    calls = 0

    def count() -> int:
        nonlocal calls
        calls += 1
        return 0

    conn.set_progress_handler(count, 1000)
    try:
        conn.execute(query, values).fetchall()
    finally:
        conn.set_progress_handler(None, 0)
    return calls


async def test_sqlite_pages_are_index_range_scans_on_100k_rows(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/jobs.db")
    await store.open()
    await store.close()
    conn = sqlite3.connect(tmp_path / "jobs.db")
    try:
        states = STATE_OF_G.replace("\n", " ")
        conn.execute(
            f"""
            WITH RECURSIVE gen(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM gen WHERE g < {ROWS})
            INSERT INTO slotfleet_jobs (queue, func, state, scheduled_at, created_at, completed_at)
            SELECT 'q' || (g % 7), 'tasks:f' || (g % 10), {states}, 0, 0, :now - g FROM gen
            """,
            {"now": time.time()},
        )
        conn.commit()
        full_scan = sqlite_work(conn, "SELECT count(*) FROM slotfleet_jobs WHERE kwargs = 'x'", {})
        for analyzed in (False, True):
            if analyzed:
                conn.execute("ANALYZE")
            for filters, index in CASES + DENSE:
                for select in ("*", sqlite_reads_sql.SUMMARY_SELECT):
                    query = statement(sqlite_reads_sql, filters, select)
                    plan = " | ".join(
                        str(row[-1])
                        for row in conn.execute("EXPLAIN QUERY PLAN " + query, params(filters))
                    )
                    where = (analyzed, filters, plan)
                    if index == "slotfleet_jobs_pkey":
                        assert "SEARCH slotfleet_jobs USING INTEGER PRIMARY KEY" in plan, where
                    elif index:
                        assert f"USING INDEX {index}" in plan, where
                    # no table scan; the running jobs' partial index is read whole (small)
                    assert not re.search(WHOLE_TABLE, plan), where
                    work = sqlite_work(conn, query, params(filters))
                    assert work * 10 < full_scan, (*where, work, full_scan)
            plan = " | ".join(
                str(row[-1])
                for row in conn.execute(
                    "EXPLAIN QUERY PLAN " + sqlite_reads_sql.FINISHED_COUNTS,
                    {"since": time.time() - 600, "bucket": 10},
                )
            )
            assert "USING INDEX slotfleet_jobs_finished" in plan, plan
            assert "SCAN slotfleet_jobs" not in plan, plan
    finally:
        conn.close()


async def test_sqlite_purge_still_walks_the_finished_index_next_to_the_listing_indexes(
    tmp_path: Path,
) -> None:
    """Regression: once migration 0004 added (state, id), SQLite without statistics chose
    it for the purge's ``state IN (...)`` and sorted every finished job per batch."""
    store = open_store(f"sqlite:///{tmp_path}/jobs.db")
    await store.open()
    await store.close()
    conn = sqlite3.connect(tmp_path / "jobs.db")
    try:
        for analyzed in (False, True):
            if analyzed:
                conn.execute("ANALYZE")
            plan = " | ".join(
                str(row[-1])
                for row in conn.execute(
                    "EXPLAIN QUERY PLAN " + sqlite_sql.PURGE,
                    {"now": time.time(), "older_than": 0.0, "queue": None, "limit": 1000},
                )
            )
            assert "USING INDEX slotfleet_jobs_finished" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
    finally:
        conn.close()
