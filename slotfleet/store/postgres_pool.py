"""Connections of the PostgreSQL store: the pool, its set-up, migrations on open, and
the translation of driver errors. :class:`~slotfleet.store.postgres.PostgresStore`
builds its verbs on :meth:`PostgresConnections._run`.

Connection problems become :class:`StoreUnavailableError` (an idempotent statement is
tried once more on a fresh connection: a restarted server leaves dead connections in the
pool); a statement the server rolled back to break a deadlock or a serialization
conflict is run again a few times, then reported as what it is; anything else is a
:class:`StoreError` with the driver's message on one line, the DSN's password scrubbed
from it (``slotfleet.store.dsn``).

What this is not: it knows no job, no verb and no SQL but the migrations'.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from slotfleet.models import StoreError, StoreUnavailableError
from slotfleet.store.dsn import scrub
from slotfleet.store.postgres_db import Conn, check_idle, configure, parse_address
from slotfleet.store.postgres_listen import Listener
from slotfleet.store.postgres_migrate import migrate, postgres_migrations
from slotfleet.store.rows import one_line

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Tries of a statement the server aborted to break a deadlock or a serialization
#: conflict (the transaction was rolled back, so running it again is always safe).
ROLLBACK_TRIES = 4


#: Migrations running (asyncio keeps only weak references to tasks), see ``open``.
_MIGRATING: set[asyncio.Task[None]] = set()


def _report_orphan(task: asyncio.Task[None]) -> None:
    """How a migration whose open was cancelled ended (nobody else will say)."""
    if task.cancelled():
        return
    error = task.exception()
    if error is None:
        log.info("the migration of an open cancelled meanwhile has completed")
    else:
        log.warning("the migration of an open cancelled meanwhile failed: %s", error)


def rolled_back(exc: psycopg.Error) -> bool:
    """Whether the server rolled the statement back to resolve a conflict (SQLSTATE class
    40: deadlock detected, serialization failure), so running it again is safe."""
    return (exc.sqlstate or "").startswith("40")


class PostgresConnections:
    """A DSN's connection pool and the error translation every verb goes through."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout: float = 10.0,
    ) -> None:
        """``min_size``/``max_size`` bound the pool (one worker needs few connections:
        fetch, complete and heartbeat are short single statements); ``connect_timeout``
        bounds both a new connection and waiting for a pooled one."""
        self.dsn = dsn
        self.address, params = parse_address(dsn)
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self._connect_kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
        if "connect_timeout" not in params:
            self._connect_kwargs["connect_timeout"] = max(1, round(connect_timeout))
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._listener: Listener | None = None
        self._changes: Listener | None = None
        """``wait_for_change``'s own LISTEN connection (jobs and cancel channels): a store
        that only serves workers never opens it."""

    # -- plumbing ---------------------------------------------------------------------

    def _text(self, exc: BaseException) -> str:
        """The driver's message on one line, without the DSN's password."""
        return scrub(one_line(exc), self.dsn)

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"cannot reach the database at {self.address}: {self._text(exc)}"
        )

    async def _connect(self) -> Conn:
        try:
            return await psycopg.AsyncConnection.connect(self.dsn, **self._connect_kwargs)
        except psycopg.Error as exc:
            raise self._unavailable(exc) from exc

    async def _run(
        self,
        body: Callable[[Conn], Awaitable[T]],
        *,
        idempotent: bool = False,
        wait: float | None = None,
    ) -> T:
        """Run ``body`` on a pooled connection, translating driver errors. An idempotent
        body is tried once more after a connection failure (a server restart leaves
        dead connections in the pool; the retry gets a fresh one). ``wait`` bounds the
        wait for a pooled connection (default ``connect_timeout``)."""
        pool = self._pool
        if pool is None:
            raise StoreError("the store is not open: await store.open() first")
        wait = self.connect_timeout if wait is None else min(wait, self.connect_timeout)
        attempt, aborted = 0, 0
        while True:
            try:
                async with pool.connection(timeout=wait) as conn:
                    return await body(conn)
            except PoolTimeout as exc:
                raise StoreUnavailableError(
                    f"cannot reach the database at {self.address}: no connection within {wait:g}s"
                ) from exc
            except psycopg.Error as exc:
                if rolled_back(exc):
                    # A deadlock or serialization failure: the server rolled the statement
                    # back, so nothing happened and it can run again; it is no outage.
                    aborted += 1
                    if aborted >= ROLLBACK_TRIES:
                        times = "once" if aborted == 1 else f"{aborted} times"
                        raise StoreError(
                            f"the database aborted the statement {times} "
                            f"({self._text(exc)}); try again"
                        ) from exc
                    log.info("retrying a statement the database aborted: %s", self._text(exc))
                    await asyncio.sleep(random.uniform(0.01, 0.05) * aborted)
                    continue
                if not isinstance(exc, psycopg.OperationalError):
                    raise StoreError(f"database error: {self._text(exc)}") from exc
                with contextlib.suppress(Exception):
                    await pool.check()
                attempt += 1
                if not idempotent or attempt >= 2:
                    raise self._unavailable(exc) from exc
                log.info("retrying after a connection failure: %s", self._text(exc))

    # -- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        conn = await self._connect()
        # The migration runs to its end even when this open is cancelled (the operator
        # bounds each tick's store read, open included): an interrupted online index
        # build would be thrown away and start over on the next open, forever on a
        # table that takes longer to index than the bound.
        migrating = asyncio.create_task(self._migrate(conn))
        _MIGRATING.add(migrating)
        migrating.add_done_callback(_MIGRATING.discard)
        try:
            await asyncio.shield(migrating)
        except asyncio.CancelledError:
            migrating.add_done_callback(_report_orphan)
            raise
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.dsn,
            min_size=self.min_size,
            max_size=self.max_size,
            kwargs=self._connect_kwargs,
            open=False,
            timeout=self.connect_timeout,
            configure=configure,
            check=check_idle,
            name="slotfleet",
        )
        try:
            await pool.open(wait=True, timeout=self.connect_timeout)
        except PoolTimeout as exc:
            await pool.close()
            raise StoreUnavailableError(
                f"cannot reach the database at {self.address}: pool not ready within "
                f"{self.connect_timeout:g}s"
            ) from exc
        self._pool = pool

    async def _migrate(self, conn: Conn) -> None:
        try:
            async with conn:
                await migrate(conn, postgres_migrations())
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc
        except psycopg.Error as exc:
            raise StoreError(f"cannot migrate the database: {self._text(exc)}") from exc

    async def close(self) -> None:
        for listener in (self._listener, self._changes):
            if listener is not None:
                await listener.stop()
        self._listener = self._changes = None
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _one(
        self,
        query: str,
        params: dict[str, Any],
        *,
        idempotent: bool,
        wait: float | None = None,
    ) -> DictRow | None:
        async def body(conn: Conn) -> DictRow | None:
            cur = await conn.execute(query, params)
            return await cur.fetchone()

        return await self._run(body, idempotent=idempotent, wait=wait)

    async def _all(
        self,
        query: str,
        params: dict[str, Any],
        *,
        idempotent: bool,
        wait: float | None = None,
    ) -> list[DictRow]:
        async def body(conn: Conn) -> list[DictRow]:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

        return await self._run(body, idempotent=idempotent, wait=wait)
