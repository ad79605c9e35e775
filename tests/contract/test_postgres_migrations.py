"""PostgreSQL migrations on a real server: applied once by stores opened together, online
index builds that let writes through, and a cancelled build repaired by the next start.

The online migration here is built from text (``parse_migration``), the same way the
package's files are read: no shipped migration is online yet (docs/decisions.md says why
0002 and 0004 stay transactional). A build is held in its last phase ("waiting for old
snapshots") by a transaction of the test holding an older snapshot, so "while the build
runs" is a state the test observes in ``pg_stat_progress_create_index``, not a guess about
how long building takes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow, dict_row

from slotfleet.cli.main import main
from slotfleet.models import Completion, Job, Outcome, StoreError
from slotfleet.store import open_store
from slotfleet.store import postgres_sql as sql
from slotfleet.store.postgres_migrate import (
    Migration,
    migrate,
    parse_migration,
    postgres_migrations,
)
from tests.fixtures.waiting import until

pytestmark = pytest.mark.postgres

Conn = psycopg.AsyncConnection[DictRow]

INDEX = "slotfleet_jobs_test_online"
ONLINE = parse_migration(
    99,
    "0099_test_online",
    f"""-- slotfleet: online
-- an index a future migration could add, built concurrently
CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON slotfleet_jobs (func, created_at);
""",
)
STORES = 8


async def connect(dsn: str) -> Conn:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True, row_factory=dict_row)


@pytest.fixture
async def admin(postgres_dsn: str) -> AsyncIterator[Conn]:
    async with await connect(postgres_dsn) as conn:
        yield conn


async def one(conn: Conn, query: str, params: dict[str, Any] | None = None) -> Any:
    row = await (await conn.execute(query.encode(), params)).fetchone()
    return None if row is None else next(iter(row.values()))


async def applied(conn: Conn) -> list[int]:
    rows = await (await conn.execute("SELECT version FROM slotfleet_migrations")).fetchall()
    return sorted(row["version"] for row in rows)


async def index_valid(conn: Conn) -> bool | None:
    valid: bool | None = await one(conn, sql.INDEX_VALID, {"name": INDEX})
    return valid


def applied_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("applied ")]


async def test_stores_opened_together_apply_each_migration_once_after_waiting_their_turn(
    postgres_dsn: str, admin: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    """Eight stores opened at once on an empty database (an online migration among the
    package's): each migration is applied by one of them, the others wait with a log line
    naming the holder and then find nothing to do. The run lock is taken by the test first
    so that all eight are waiting when it is released. A blocking lock wait here would
    deadlock with the concurrent build (the waiters' snapshots hold it up)."""
    caplog.set_level(logging.INFO, logger="slotfleet.store.postgres_migrate")
    migrations: list[Migration] = [*postgres_migrations(), ONLINE]
    assert await one(admin, sql.TRY_RUN_LOCK, {"key": sql.MIGRATION_RUN_LOCK_KEY})
    conns = [await connect(postgres_dsn) for _ in range(STORES)]
    try:
        runs = [asyncio.create_task(migrate(conn, migrations)) for conn in conns]

        def waiting() -> int:
            return sum("waiting for another process" in r.getMessage() for r in caplog.records)

        await until("every opener waiting for the lock", lambda: waiting() >= STORES)
        admin_pid = await one(admin, "SELECT pg_backend_pid()")
        assert all(f"server pid {admin_pid}" in r.getMessage() for r in caplog.records)
        await one(admin, sql.RUN_UNLOCK, {"key": sql.MIGRATION_RUN_LOCK_KEY})
        await asyncio.wait_for(asyncio.gather(*runs), 60)
    finally:
        for conn in conns:
            await conn.close()
    names = [m.name for m in migrations]
    assert sorted(applied_logs(caplog)) == sorted(f"applied migration {n}" for n in names)
    assert await applied(admin) == [m.version for m in migrations]
    assert await index_valid(admin) is True
    # Ordinary stores opened together on the now current database: nothing left to apply.
    caplog.clear()
    stores = [open_store(postgres_dsn) for _ in range(STORES)]
    await asyncio.gather(*(store.open() for store in stores))
    for store in stores:
        await store.close()
    assert applied_logs(caplog) == []


async def hold_build(postgres_dsn: str, admin: Conn, rows: int) -> tuple[Conn, Conn]:
    """A migrated database with ``rows`` jobs and a transaction holding a snapshot (the
    returned first connection): an online build started now waits for it at its end."""
    store = open_store(postgres_dsn)
    await store.open()
    try:
        for start in range(0, rows, 5000):
            await store.enqueue_ids(
                [Job(func="tasks:f", kwargs={"i": i}) for i in range(start, start + 5000)]
            )
    finally:
        await store.close()
    holder = await connect(postgres_dsn)
    await holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    await holder.execute("SELECT 1")
    return holder, await connect(postgres_dsn)


async def build_phase(admin: Conn) -> str | None:
    phase: str | None = await one(
        admin,
        "SELECT phase FROM pg_stat_progress_create_index "
        "WHERE relid = 'slotfleet_jobs'::regclass AND command = 'CREATE INDEX CONCURRENTLY'",
    )
    return phase


async def test_an_online_index_build_lets_enqueues_claims_and_completions_through(
    postgres_dsn: str, admin: Conn
) -> None:
    """While a concurrent build on a 20,000-job table is in progress (seen in
    ``pg_stat_progress_create_index``, its lock seen in ``pg_locks``), the store enqueues,
    claims and completes jobs, each within a bound; the build then finishes valid and its
    version is recorded only then."""
    holder, migrator = await hold_build(postgres_dsn, admin, 20_000)
    store = open_store(postgres_dsn)
    await store.open()
    try:
        build = asyncio.create_task(migrate(migrator, [*postgres_migrations(), ONLINE]))
        await until("the build waiting for old snapshots", lambda: _phase_is(admin, "old"))
        lock = await one(
            admin,
            "SELECT mode FROM pg_locks WHERE relation = 'slotfleet_jobs'::regclass AND pid = "
            "%(pid)s AND granted",
            {"pid": migrator.info.backend_pid},
        )
        assert lock == "ShareUpdateExclusiveLock"
        assert 99 not in await applied(admin)

        async def writes() -> None:
            await store.enqueue_ids([Job(queue="during", func="tasks:f") for _ in range(50)])
            claimed = await store.fetch("during", "w1", 10, 30, claim="c1")
            assert len(claimed) == 10
            done = [
                Completion(
                    job_id=job.id,
                    worker_id="w1",
                    token="c1",
                    attempt=job.attempts,
                    outcome=Outcome.SUCCEEDED,
                )
                for job in claimed
            ]
            assert len(await store.complete(done)) == 10

        await asyncio.wait_for(writes(), 10)
        assert await build_phase(admin) is not None, "the build ended before the writes"
        await holder.execute("COMMIT")
        await asyncio.wait_for(build, 30)
    finally:
        await store.close()
        await holder.close()
        await migrator.close()
    assert await index_valid(admin) is True
    assert 99 in await applied(admin)


async def _phase_is(admin: Conn, word: str) -> bool:
    phase = await build_phase(admin)
    return phase is not None and word in phase


async def test_a_build_cancelled_midway_leaves_an_invalid_index_that_the_next_start_rebuilds(
    postgres_dsn: str, admin: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression for re-running an online migration after a failed build: ``IF NOT
    EXISTS`` alone keeps the INVALID index the cancelled build left (never used by a
    query, yet written by every insert). The next run drops and rebuilds it, and records
    the version only then."""
    holder, migrator = await hold_build(postgres_dsn, admin, 2_000)
    migrations = [*postgres_migrations(), ONLINE]
    try:
        build = asyncio.create_task(migrate(migrator, migrations))
        await until("the build waiting for old snapshots", lambda: _phase_is(admin, "old"))
        assert await one(
            admin, "SELECT pg_cancel_backend(%(pid)s)", {"pid": migrator.info.backend_pid}
        )
        with pytest.raises(psycopg.errors.QueryCanceled):
            await asyncio.wait_for(build, 30)
        await holder.execute("COMMIT")
    finally:
        await holder.close()
        await migrator.close()
    assert await index_valid(admin) is False
    assert 99 not in await applied(admin)

    caplog.set_level(logging.INFO, logger="slotfleet.store.postgres_migrate")
    async with await connect(postgres_dsn) as conn:
        await asyncio.wait_for(migrate(conn, migrations), 30)
    assert await index_valid(admin) is True
    assert await applied(admin) == [m.version for m in migrations]
    assert any(f"dropping index {INDEX}" in r.getMessage() for r in caplog.records)


async def test_a_store_gives_up_waiting_for_a_stuck_migration_with_one_clear_error(
    postgres_dsn: str, admin: Conn
) -> None:
    """The wait for another process's migration is bounded: the error names the holder."""
    assert await one(admin, sql.TRY_RUN_LOCK, {"key": sql.MIGRATION_RUN_LOCK_KEY})
    pid = await one(admin, "SELECT pg_backend_pid()")
    async with await connect(postgres_dsn) as conn:
        with pytest.raises(StoreError, match=rf"for more than 0.5s \(server pid {pid}\)"):
            await migrate(conn, postgres_migrations(), wait=0.5)
        assert await one(conn, "SELECT to_regclass('slotfleet_jobs')") is None


async def test_an_index_built_inside_a_transaction_holds_writes(
    postgres_dsn: str, admin: Conn
) -> None:
    """The problem online migrations solve, shown on the same table: a plain CREATE INDEX
    in an open migration transaction (how 0002 and 0004 run) blocks an enqueue until the
    transaction ends (here: the enqueue's lock_timeout)."""
    store = open_store(postgres_dsn)
    await store.open()
    await store.close()
    async with await connect(postgres_dsn) as migrating, await connect(postgres_dsn) as writer:
        await migrating.execute("BEGIN")
        await migrating.execute(f"CREATE INDEX {INDEX} ON slotfleet_jobs (func, created_at)")
        await writer.execute("SET lock_timeout = '300ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await writer.execute("INSERT INTO slotfleet_jobs (queue, func) VALUES ('q', 'f')")
        await migrating.execute("ROLLBACK")


async def test_an_open_cancelled_by_its_callers_bound_lets_its_migration_finish(
    postgres_dsn: str, admin: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: the operator bounds each tick's store read, open included (5 s). A
    migration cancelled with the open was thrown away, and an online build longer than
    the bound would start over on every tick, never finishing. The open here is held by
    an older release's transactional lock, cancelled, and its migration still completes
    once the lock is released, with no other open."""
    caplog.set_level(logging.INFO, logger="slotfleet.store.postgres_pool")
    await admin.execute("BEGIN")
    await admin.execute(sql.LOCK_MIGRATIONS, {"key": sql.MIGRATION_LOCK_KEY})
    store = open_store(postgres_dsn)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(store.open(), 0.5)
    await admin.execute("COMMIT")

    async def migrated() -> bool:
        if await one(admin, "SELECT to_regclass('slotfleet_migrations')") is None:
            return False
        return await applied(admin) == [m.version for m in postgres_migrations()]

    await until("the cancelled open's migration recorded", migrated)
    await until(
        "its end logged",
        lambda: any("cancelled meanwhile has completed" in r.getMessage() for r in caplog.records),
    )


def test_slotfleet_migrate_applies_the_missing_migrations_and_says_so(
    postgres_dsn: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The explicit step of an upgrade (docs/operations.md): one line on stdout, what was
    applied in the log; run again, it applies nothing."""
    caplog.set_level(logging.INFO, logger="slotfleet.store.postgres_migrate")
    assert main(["migrate", "--dsn", postgres_dsn]) == 0
    assert capsys.readouterr().out == "the job store's schema is up to date\n"
    assert len(applied_logs(caplog)) == len(postgres_migrations())
    caplog.clear()
    assert main(["migrate", "--dsn", postgres_dsn]) == 0
    assert applied_logs(caplog) == []
    bad = postgres_dsn.replace("postgres@", "postgres:s3cret@").rsplit("/", 1)[0] + "/nope"
    assert main(["migrate", "--dsn", bad]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the database at 127.0.0.1:")
    assert "s3cret" not in err
