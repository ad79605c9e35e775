"""What only one backend can show: DSNs and connection errors, query plans, statement
counts, NOTIFY wake-ups and surviving a PostgreSQL restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from slotfleet.models import InvalidSettingsError, Job, StoreError, StoreUnavailableError
from slotfleet.store import (
    DEFAULT_DSN,
    Store,
    dsn_from_env,
    open_store,
    postgres_pool,
    postgres_sql,
)
from slotfleet.store.postgres import PostgresStore
from slotfleet.store.sqlite import SQLiteStore
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.stores import StoreFactory

FETCH_PLAN_SQL = """
SELECT id FROM slotfleet_jobs
WHERE queue = 'default' AND state IN ('pending', 'retrying') AND scheduled_at <= {now}
ORDER BY priority DESC, scheduled_at, id
LIMIT 10
"""


FETCH_PARAMS = {
    "queue": "default",
    "worker_id": "w",
    "claim": "c",
    "limit": 10,
    "lease_seconds": 15.0,
}


def job(**changes: object) -> Job:
    return Job.model_validate({"func": "tests.tasks:add", **changes})


# -- DSNs and errors ------------------------------------------------------------------


@pytest.mark.parametrize("dsn", ["mysql://x/y", "nonsense", "", "sqlite://", "sqlite:///"])
def test_bad_dsn_is_one_clear_line(dsn: str) -> None:
    with pytest.raises(InvalidSettingsError) as info:
        open_store(dsn)
    message = str(info.value)
    assert "\n" not in message
    assert "sqlite:///" in message


def test_dsn_schemes_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(open_store("sqlite:///rel/jobs.db"), SQLiteStore)
    assert SQLiteStore("sqlite:///rel/jobs.db").path == "rel/jobs.db"
    assert SQLiteStore("sqlite:////abs/jobs.db").path == "/abs/jobs.db"
    assert isinstance(open_store("postgresql://u@h:5433/db"), PostgresStore)
    assert isinstance(open_store("postgres://u@h/db"), PostgresStore)
    assert PostgresStore("postgres://u:secret@db.example:6543/x").address == "db.example:6543"
    monkeypatch.delenv("SLOTFLEET_DSN", raising=False)
    assert dsn_from_env() == DEFAULT_DSN
    monkeypatch.setenv("SLOTFLEET_DSN", "postgresql://h/db")
    assert dsn_from_env() == "postgresql://h/db"


async def test_unreachable_postgres_is_one_line_with_the_address() -> None:
    store = open_store("postgresql://postgres@127.0.0.1:1/x")
    with pytest.raises(StoreUnavailableError) as info:
        await store.open()
    message = str(info.value)
    assert message.startswith("cannot reach the database at 127.0.0.1:1: ")
    assert "\n" not in message
    assert isinstance(info.value.__cause__, psycopg.Error)
    await store.close()


async def test_unopenable_sqlite_file_is_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "a-directory").mkdir()
    store = open_store(f"sqlite:///{tmp_path}/a-directory")
    with pytest.raises(StoreUnavailableError) as info:
        await store.open()
    assert "\n" not in str(info.value)
    assert "a-directory" in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.Error)


async def test_store_used_before_open_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not open"):
        await open_store(f"sqlite:///{tmp_path}/a.db").get(1)  # type: ignore[arg-type]


# -- SQLite ---------------------------------------------------------------------------


async def test_sqlite_fetch_walks_the_fetch_index_without_sorting(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/jobs.db")
    await store.open()
    await store.close()
    with sqlite3.connect(tmp_path / "jobs.db") as conn:
        plan = conn.execute("EXPLAIN QUERY PLAN " + FETCH_PLAN_SQL.format(now=1e12)).fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    details = " | ".join(row[-1] for row in plan)
    assert "slotfleet_jobs_fetch" in details
    assert "TEMP B-TREE" not in details
    assert mode == "wal"


# -- PostgreSQL -----------------------------------------------------------------------


@pytest.fixture
async def pg_store(postgres_dsn: str) -> AsyncIterator[Store]:
    store = open_store(postgres_dsn)
    await store.open()
    yield store
    await store.close()  # a pool left open keeps its tasks on a closed loop


@pytest.mark.postgres
async def test_postgres_fetch_is_an_index_scan_on_100k_rows_after_empty_analyze(
    postgres_dsn: str,
) -> None:
    store = open_store(postgres_dsn)
    await store.open()
    await store.close()
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        await conn.execute("ANALYZE slotfleet_jobs")  # statistics say: empty
        await conn.execute(
            """
            INSERT INTO slotfleet_jobs (queue, func, priority, state, scheduled_at)
            SELECT CASE WHEN g % 10 = 0 THEN 'default' ELSE 'q' || (g % 7) END,
                   'tests.tasks:add',
                   (g % 5)::smallint,
                   CASE WHEN g % 3 = 0 THEN 'succeeded' ELSE 'pending' END,
                   now() - make_interval(secs => g)
            FROM generate_series(1, 100000) AS g
            """
        )
        for statistics in ("stale (analyzed while empty)", "fresh"):
            # EXPLAIN (not ANALYZE) of the store's real statement claims nothing.
            cur = await conn.execute("EXPLAIN " + postgres_sql.FETCH, FETCH_PARAMS)
            plan = "\n".join(str(row[0]) for row in await cur.fetchall())
            assert "Scan using slotfleet_jobs_fetch" in plan, (statistics, plan)
            assert "Sort" not in plan, (statistics, plan)
            assert "Seq Scan" not in plan, (statistics, plan)
            await conn.execute("ANALYZE slotfleet_jobs")
        # psycopg prepares a statement after a few runs: the generic plan must agree.
        prepared = postgres_sql.FETCH
        for n, name in enumerate(("queue", "worker_id", "lease_seconds", "limit", "claim"), 1):
            prepared = prepared.replace(f"%({name})s", f"${n}")
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE fetch_jobs(text, text, float8, int, text) AS {prepared}")
        cur = await conn.execute("EXPLAIN EXECUTE fetch_jobs('default', 'w', 15.0, 10, 'c')")
        plan = "\n".join(str(row[0]) for row in await cur.fetchall())
        assert "Scan using slotfleet_jobs_fetch" in plan, plan
        assert "Sort" not in plan, plan


@pytest.mark.postgres
async def test_postgres_purge_walks_the_finished_index_on_100k_rows(postgres_dsn: str) -> None:
    """A purge batch reads the oldest finished rows from their partial index: its cost
    does not grow with the jobs kept (nor with the pending backlog)."""
    store = open_store(postgres_dsn)
    await store.open()
    await store.close()
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        await conn.execute(
            """
            INSERT INTO slotfleet_jobs (queue, func, state, scheduled_at, completed_at)
            SELECT 'q' || (g % 7), 'tests.tasks:add',
                   CASE WHEN g % 4 = 0 THEN 'pending' ELSE 'succeeded' END,
                   now(), CASE WHEN g % 4 = 0 THEN NULL ELSE now() - make_interval(secs => g) END
            FROM generate_series(1, 100000) AS g
            """
        )
        await conn.execute("ANALYZE slotfleet_jobs")
        params = {"older_than": 86400.0, "queue": None, "limit": 1000}
        cur = await conn.execute("EXPLAIN " + postgres_sql.PURGE, params)
        plan = "\n".join(str(row[0]) for row in await cur.fetchall())
        assert "slotfleet_jobs_finished" in plan, plan
        assert "Seq Scan" not in plan, plan


@pytest.mark.postgres
async def test_postgres_enqueue_of_1000_jobs_is_one_statement(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    store = open_store(postgres_dsn)
    await store.open()
    jobs = [job(kwargs={"i": i}, unique_key=f"k{i % 900}") for i in range(1000)]
    executed: list[str] = []
    original = psycopg.AsyncConnection.execute

    async def counting(self: psycopg.AsyncConnection[Any], query: Any, *a: Any, **kw: Any) -> Any:
        executed.append(str(query)[:60])
        return await original(self, query, *a, **kw)

    if postgres_server.stat_statements:
        async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await conn.execute("SELECT pg_stat_statements_reset()")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(psycopg.AsyncConnection, "execute", counting)
        queued = await store.enqueue(jobs)
    assert len(executed) == 1, executed
    assert len(queued) == 1000
    assert len({q.id for q in queued}) == 900
    assert [q.kwargs["i"] for q in queued[:900]] == list(range(900))
    assert [q.id for q in queued[900:]] == [q.id for q in queued[:100]]
    if postgres_server.stat_statements:
        async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT query, calls FROM pg_stat_statements "
                "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND query NOT ILIKE '%pg_stat_statements%'"
            )
            rows = await cur.fetchall()
        assert sum(int(calls) for _, calls in rows) == 1, rows
    await store.close()


@pytest.mark.postgres
async def test_postgres_wait_for_jobs_wakes_on_enqueue_from_another_store(
    postgres_dsn: str,
) -> None:
    waiter, producer = open_store(postgres_dsn), open_store(postgres_dsn)
    await waiter.open()
    await producer.open()
    try:
        await waiter.wait_for_jobs("default", 0.01)  # starts listening
        started = time.monotonic()
        task = asyncio.create_task(waiter.wait_for_jobs("default", 10))
        await asyncio.sleep(0.2)
        await producer.enqueue([job(queue="other")])  # another queue does not wake it
        await asyncio.sleep(0.2)
        assert not task.done()
        await producer.enqueue([job()])
        await asyncio.wait_for(task, 10)
        assert time.monotonic() - started < 5
    finally:
        await waiter.close()
        await producer.close()


@pytest.mark.postgres
async def test_postgres_survives_a_server_restart(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    store, producer = open_store(postgres_dsn), open_store(postgres_dsn)
    await store.open()
    await producer.open()
    try:
        [queued] = await store.enqueue([job()])
        await store.wait_for_jobs("default", 0.01)  # listening
        await asyncio.to_thread(postgres_server.restart)
        # Idempotent reads retry once on a fresh connection.
        assert await store.get(queued.id) == queued
        # The listener reconnects and wakes again.
        deadline = time.monotonic() + 20
        while True:
            task = asyncio.create_task(store.wait_for_jobs("default", 10))
            await asyncio.sleep(0.3)
            await producer.enqueue([job()])
            started = time.monotonic()
            await asyncio.wait_for(task, 15)
            if time.monotonic() - started < 5 or time.monotonic() > deadline:
                break
        assert time.monotonic() - started < 5
    finally:
        await store.close()
        await producer.close()


async def test_sqlite_missing_directory_is_a_settings_error_not_an_outage() -> None:
    """A worker retries an unreachable store; a typo in a SQLite path must not be retried."""
    store = open_store("sqlite:////nonexistent-slotfleet-dir/jobs.db")
    with pytest.raises(InvalidSettingsError, match="does not exist"):
        await store.open()
    await store.close()


@pytest.mark.postgres
async def test_postgres_completion_batch_uses_the_primary_key_on_an_analyzed_backlog(
    postgres_dsn: str,
) -> None:
    """Regression: joined on id and lease_owner only, the planner drove the completion
    update from the running-owner index and, once autovacuum had analyzed a big backlog,
    merge-joined ~380k rows to update ~80 (drain throughput fell as the backlog grew)."""
    store = open_store(postgres_dsn)
    await store.open()
    await store.close()
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        await conn.execute(
            """
            INSERT INTO slotfleet_jobs (
                queue, func, state, lease_owner, lease_token, started_at, completed_at
            )
            SELECT 'q', 'tests.tasks:add',
                   CASE WHEN g <= 20000 THEN 'succeeded' WHEN g <= 25000 THEN 'running'
                        ELSE 'pending' END,
                   CASE WHEN g > 20000 AND g <= 25000 THEN 'w' END,
                   CASE WHEN g > 20000 AND g <= 25000 THEN 't' || (g / 50) END,
                   CASE WHEN g <= 25000 THEN now() END,
                   CASE WHEN g <= 20000 THEN now() END
            FROM generate_series(1, 50000) AS g
            """
        )
        await conn.execute("ANALYZE slotfleet_jobs")
        batch = [
            {
                "id": i,
                "token": f"t{i // 50}",
                "outcome": "succeeded",
                "result": None,
                "error": None,
                "retry_delay": None,
            }
            for i in range(20001, 20077)
        ]
        await conn.execute("BEGIN")
        cur = await conn.execute(
            "EXPLAIN (ANALYZE) " + postgres_sql.COMPLETE, {"completions": json.dumps(batch)}
        )
        plan = "\n".join(str(row[0]) for row in await cur.fetchall())
        await conn.execute("ROLLBACK")
    assert "slotfleet_jobs_pkey" in plan, plan
    assert "Merge Join" not in plan, plan
    assert "rows=76 loops=1" in plan.split("Update on")[1], "not every completion applied"
    # The heartbeat's renewal of held leases goes by primary key the same way.
    held = [(i, f"t{i // 50}") for i in range(20001, 20101)]
    params = {
        "worker_id": "w",
        "hostname": "h",
        "pid": 1,
        "queues": "{}",
        "started_at": None,
        "draining": False,
        "retiring": None,
        "lease_seconds": 15.0,
        "ids": [i for i, _ in held],
        "tokens": [t for _, t in held],
    }
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        await conn.execute("BEGIN")
        cur = await conn.execute("EXPLAIN (ANALYZE) " + postgres_sql.HEARTBEAT, params)
        plan = "\n".join(str(row[0]) for row in await cur.fetchall())
        await conn.execute("ROLLBACK")
    assert "slotfleet_jobs_pkey" in plan, plan
    assert "Seq Scan on slotfleet_jobs" not in plan, plan


# -- issue 9: claims that cannot be read, long write locks, deadlocks ---------------------


async def _poison_one_row(dsn: str, job_id: int) -> None:
    """Give job ``job_id`` a ``scheduled_at`` that is stored but cannot be read back as
    a ``datetime`` (as an older version stored ``datetime.min`` at +05:00)."""
    if dsn.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(dsn.removeprefix("sqlite:///"))) as conn:
            conn.execute("UPDATE slotfleet_jobs SET scheduled_at = -1e20 WHERE id = ?", (job_id,))
            conn.commit()
        return
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            "UPDATE slotfleet_jobs SET scheduled_at = '0001-01-01 00:00:00+05' WHERE id = %s",
            (job_id,),
        )


async def _stored_state(dsn: str, job_id: int) -> tuple[str, str]:
    """State and errors of a row, read without decoding its times."""
    if dsn.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(dsn.removeprefix("sqlite:///"))) as conn:
            row = conn.execute(
                "SELECT state, errors FROM slotfleet_jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return str(row[0]), str(row[1])
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT state, errors::text FROM slotfleet_jobs WHERE id = %s", (job_id,)
        )
        found = await cur.fetchone()
        assert found is not None
        return str(found[0]), str(found[1])


async def test_a_claimed_row_that_cannot_be_read_is_failed_not_stranded(
    store_dsn: str, store_factory: StoreFactory
) -> None:
    """Regression (issue 9, finding 9): a row whose ``scheduled_at`` could not be decoded
    made the fetch fail after its claim had committed: that job and every other job of
    the claim stayed ``running``, leased to a worker that never got them."""
    store = await store_factory()
    good, bad, other = await store.enqueue([job(), job(), job()])
    await _poison_one_row(store_dsn, bad.id)
    got = await store.fetch("default", "w1", 10, 30, claim="c1")
    assert sorted(j.id for j in got) == [good.id, other.id]
    state, errors = await _stored_state(store_dsn, bad.id)
    assert state == "failed"
    assert "the job's row cannot be read" in errors
    assert await store.fetch("default", "w1", 10, 30, claim="c2") == []


async def test_sqlite_enqueue_commits_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (issue 9, finding 7): 150k rows were written in one transaction that
    held the database's write lock for 8.6 s, longer than a lease, so a live worker's
    heartbeat waited and its job was recovered and run twice."""
    from slotfleet.store import sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "ENQUEUE_CHUNK", 10)
    store = SQLiteStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    await store.open()
    try:
        begun: list[str] = []
        await store._call(lambda conn: conn.set_trace_callback(begun.append))
        queued = await store.enqueue(
            [job(unique_key=f"k{i % 30}") for i in range(35)]  # keys repeat across chunks
        )
        await store._call(lambda conn: conn.set_trace_callback(None))
    finally:
        await store.close()
    assert sum(s == "BEGIN IMMEDIATE" for s in begun) == 4
    assert len({j.id for j in queued}) == 30
    assert [j.id for j in queued[30:]] == [j.id for j in queued[:5]]


async def test_concurrent_batches_sharing_unique_keys_do_not_deadlock(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (issue 9, finding 8): two batches holding the same keys in opposite
    orders deadlocked on PostgreSQL (rows were inserted in input order). Retries of
    aborted statements are off here, so a deadlock would surface."""
    monkeypatch.setattr(postgres_pool, "ROLLBACK_TRIES", 1)
    one, two = await store_factory(), await store_factory()
    for round_ in range(10):
        keys = [f"r{round_}-{i}" for i in range(200)]
        first, second = await asyncio.gather(
            one.enqueue([job(unique_key=k) for k in keys]),
            two.enqueue([job(unique_key=k) for k in reversed(keys)]),
        )
        assert [j.id for j in first] == [j.id for j in reversed(second)]
        assert len({j.id for j in first}) == 200


@pytest.mark.postgres
async def test_postgres_aborted_statements_are_retried_then_named(
    pg_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A deadlock or serialization failure is the server rolling a statement back, not
    an outage: the store runs it again a few times, then says what happened."""
    assert isinstance(pg_store, PostgresStore)
    calls = 0

    async def deadlocks_twice(conn: object) -> str:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return "done"

    async def always_conflicts(conn: object) -> str:
        raise psycopg.errors.SerializationFailure("could not serialize access")

    caplog.set_level("INFO", logger="slotfleet.store.postgres_pool")
    assert await pg_store._run(deadlocks_twice) == "done"
    assert calls == 3
    assert "retrying a statement the database aborted" in caplog.text
    with pytest.raises(StoreError) as info:
        await pg_store._run(always_conflicts)
    assert not isinstance(info.value, StoreUnavailableError)
    assert str(info.value).startswith("the database aborted the statement 4 times")
