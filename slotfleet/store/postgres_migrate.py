"""Migrations of the PostgreSQL store: applied once however many processes open the store
at the same time, and online where a migration says so.

A migration is ``migrations/postgres/NNNN_name.sql``. By default it is *transactional*:
its script runs in one transaction with the row recording its version (consecutive
transactional migrations share one transaction), under the
transaction-level advisory lock every release has taken (``MIGRATION_LOCK_KEY``), so a
process of an older release opening the store meanwhile waits for it and never applies it
a second time.

A migration whose first line is :data:`ONLINE_MARK` is *online*: its statements run one by
one outside any transaction, so it may only build or drop indexes concurrently
(``CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS name ON ...`` and ``DROP INDEX
CONCURRENTLY IF EXISTS name``, each ending with ``;``, with no ``;`` or ``--`` inside a
string literal), which lets enqueues, claims and completions go on while a large
``slotfleet_jobs`` is indexed. Re-running one is safe: an index that a failed or cancelled
concurrent build left INVALID is dropped and built again (``IF NOT EXISTS`` alone would
keep it), and its version is recorded only once every statement has succeeded. A
migration released as transactional never becomes online: an older release knows it as
transactional and would apply it beside the online build.

One process at a time migrates: each holds a session-level advisory lock
(``MIGRATION_RUN_LOCK_KEY``) for its whole run. Others poll for it
(:data:`LOCK_POLL_SECONDS`, never a blocking wait: see ``postgres_sql.TRY_RUN_LOCK``), say
whom they wait for (at once, then every :data:`WAIT_LOG_SECONDS`) and give up after
``wait`` seconds; once they hold it they find every migration recorded and apply nothing.
A process of an older release takes only the transactional lock, which the online steps
do not hold, so it neither waits for an index build nor holds one up.

What this is not: the pool, the verbs, SQLite's migrations (``sqlite_db.migrate``: one
writer, every migration transactional).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql as pgsql

from slotfleet.models import StoreError
from slotfleet.store import postgres_sql as sql
from slotfleet.store.postgres_db import Conn
from slotfleet.store.rows import migration_scripts

log = logging.getLogger(__name__)

#: First line of an online migration.
ONLINE_MARK = "-- slotfleet: online"

#: How long an opener waits for another process's migration before giving up: a
#: concurrent index build on a table of tens of millions of rows takes minutes. A worker
#: that gives up exits with the error; its pod restarts and waits again.
MIGRATION_WAIT_SECONDS = 900.0

#: How often a waiting opener tries the run lock (a try is one short statement).
LOCK_POLL_SECONDS = 0.2

#: How often a waiting opener says it is still waiting.
WAIT_LOG_SECONDS = 30.0

_CREATE = re.compile(
    r"CREATE (?:UNIQUE )?INDEX CONCURRENTLY IF NOT EXISTS (?P<name>[a-z_][a-z0-9_]*) ON ",
    re.IGNORECASE,
)
_DROP = re.compile(r"DROP INDEX CONCURRENTLY IF EXISTS (?P<name>[a-z_][a-z0-9_]*)$", re.IGNORECASE)


@dataclass(frozen=True)
class Migration:
    """One migration: ``statements`` run one by one outside a transaction when
    ``online``; otherwise ``script`` runs whole in a transaction."""

    version: int
    name: str
    script: str
    online: bool = False
    statements: tuple[str, ...] = ()


def parse_migration(version: int, name: str, script: str) -> Migration:
    """The migration of a file's text; ``StoreError`` naming the file and the statement
    when an online migration holds anything but a concurrent, re-runnable index step."""
    if not script.startswith(ONLINE_MARK):
        return Migration(version, name, script)
    # No literal holds "--" or ";" (see the module docstring): "--" starts a comment, ";"
    # ends a statement.
    text = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    statements = tuple(" ".join(part.split()) for part in text.split(";") if part.strip())
    for statement in statements:
        if not (_CREATE.match(statement) or _DROP.match(statement)):
            raise StoreError(
                f"migration {name} is online, so each statement must be CREATE [UNIQUE] INDEX "
                f"CONCURRENTLY IF NOT EXISTS name ON ... or DROP INDEX CONCURRENTLY IF EXISTS "
                f"name; got: {statement[:80]}"
            )
    return Migration(version, name, script, online=True, statements=statements)


def postgres_migrations() -> list[Migration]:
    """The package's PostgreSQL migrations, in order."""
    return [parse_migration(*found) for found in migration_scripts("postgres")]


async def migrate(
    conn: Conn, migrations: Sequence[Migration], *, wait: float = MIGRATION_WAIT_SECONDS
) -> None:
    """Apply the missing ``migrations`` in order over ``conn`` (autocommit), holding the
    run lock for the whole run; ``StoreError`` after ``wait`` seconds without it."""
    await _lock(conn, wait)
    try:
        pending = list(migrations)
        while pending:
            if pending[0].online:
                await _apply_online(conn, pending.pop(0))
                continue
            batch = []
            while pending and not pending[0].online:
                batch.append(pending.pop(0))
            await _apply_transactional(conn, batch)
    finally:
        # A broken connection released the lock with its session (the caller closes it).
        with contextlib.suppress(psycopg.Error):
            await conn.execute(sql.RUN_UNLOCK, {"key": sql.MIGRATION_RUN_LOCK_KEY})


async def _lock(conn: Conn, wait: float) -> None:
    key = {"key": sql.MIGRATION_RUN_LOCK_KEY}
    start = time.monotonic()
    next_log = 0.0
    while True:
        row = await (await conn.execute(sql.TRY_RUN_LOCK, key)).fetchone()
        waited = time.monotonic() - start
        if row is not None and row["locked"]:
            if next_log != 0.0:
                log.info("migration lock acquired after waiting %.1fs", waited)
            return
        if waited >= wait:
            raise StoreError(
                f"another process has been migrating the database for more than {wait:g}s "
                f"({await _holder(conn)}); see pg_stat_progress_create_index, then start again"
            )
        if waited >= next_log:
            log.warning(
                "waiting for another process to finish migrating the database (%s; "
                "waited %.0fs of at most %gs)",
                await _holder(conn),
                waited,
                wait,
            )
            next_log = waited + WAIT_LOG_SECONDS
        await asyncio.sleep(LOCK_POLL_SECONDS)


async def _holder(conn: Conn) -> str:
    row = await (
        await conn.execute(sql.RUN_LOCK_HOLDER, {"key": sql.MIGRATION_RUN_LOCK_KEY})
    ).fetchone()
    return "the lock was just released" if row is None else f"server pid {row['pid']}"


async def _apply_transactional(conn: Conn, batch: Sequence[Migration]) -> None:
    async with conn.transaction():
        await conn.execute(sql.LOCK_MIGRATIONS, {"key": sql.MIGRATION_LOCK_KEY})
        await conn.execute(sql.MIGRATIONS_TABLE)
        applied = await _applied(conn)
        for migration in batch:
            if migration.version not in applied:
                log.info("applying migration %s", migration.name)
                await conn.execute(migration.script.encode())
                await _record(conn, migration)


async def _apply_online(conn: Conn, migration: Migration) -> None:
    """Run an online migration's statements, each in its own implicit transaction. No
    transactional lock is held: older releases do not know this migration, and every
    migration before it is recorded (they run in order)."""
    await conn.execute(sql.MIGRATIONS_TABLE)
    if migration.version in await _applied(conn):
        return
    log.info("applying migration %s online (concurrent index builds)", migration.name)
    for statement in migration.statements:
        created = _CREATE.match(statement)
        if created is not None:
            await _drop_if_invalid(conn, created["name"])
        await conn.execute(statement.encode())
    await _record(conn, migration)


async def _drop_if_invalid(conn: Conn, name: str) -> None:
    row = await (await conn.execute(sql.INDEX_VALID, {"name": name})).fetchone()
    if row is not None and not row["valid"]:
        log.warning(
            "dropping index %s, left invalid by an interrupted build, to build it again", name
        )
        drop = pgsql.SQL(sql.DROP_INDEX_CONCURRENTLY).format(name=pgsql.Identifier(name))
        await conn.execute(drop)


async def _applied(conn: Conn) -> set[int]:
    cur = await conn.execute(sql.APPLIED_VERSIONS)
    return {row["version"] for row in await cur.fetchall()}


async def _record(conn: Conn, migration: Migration) -> None:
    await conn.execute(sql.RECORD_MIGRATION, {"version": migration.version, "name": migration.name})
    log.info("applied migration %s", migration.name)
