"""The fleet store: PostgreSQL through psycopg 3 and a small connection pool.

Connections are in autocommit mode and every verb is one statement (see
``postgres_sql``), so a verb is one round trip. Times are the server's ``now()``, so
workers on machines with skewed clocks agree on leases and schedules. Idle workers
sleep in :meth:`PostgresStore.wait_for_jobs` on a dedicated LISTEN connection (not
from the pool) and wake on ``NOTIFY`` from enqueues, retries and recovered jobs.

What this is not: a general database layer. It runs only the named statements of
``postgres_sql`` and keeps no cache of rows. Driver errors never escape: connection
problems become :class:`StoreUnavailableError`, the rest :class:`StoreError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from slotfleet.models import (
    Completion,
    Job,
    JobId,
    JobState,
    QueuedJob,
    QueueStats,
    StoreError,
    StoreUnavailableError,
    WorkerHeartbeat,
)
from slotfleet.store import postgres_sql as sql
from slotfleet.store import rows
from slotfleet.store.base import DEFAULT_WORKER_TTL_SECONDS, Lease
from slotfleet.store.postgres_db import (
    Conn,
    check_idle,
    completion_document,
    configure,
    enqueue_document,
    job_row,
    migrate,
    parse_address,
    utc,
    worker_row,
)
from slotfleet.store.postgres_listen import Listener
from slotfleet.store.rows import (
    build_stats,
    cancel_requests_query,
    dedupe_completions,
    one_line,
    purge_seconds,
    unreadable_message,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Longest wait of a fetch for a pooled connection (see :meth:`PostgresStore.fetch`).
FETCH_POOL_WAIT_SECONDS = 2.0

#: What reading a claimed row may raise when a value in it cannot be represented.
UNDECODABLE: tuple[type[Exception], ...] = (*rows.UNDECODABLE, psycopg.DataError)

#: Tries of a statement the server aborted to break a deadlock or a serialization
#: conflict (the transaction was rolled back, so running it again is always safe).
ROLLBACK_TRIES = 4


def rolled_back(exc: psycopg.Error) -> bool:
    """Whether the server rolled the statement back to resolve a conflict (SQLSTATE class
    40: deadlock detected, serialization failure), so running it again is safe."""
    return (exc.sqlstate or "").startswith("40")


class PostgresStore:
    """:class:`~slotfleet.store.Store` on PostgreSQL (``postgresql://...``)."""

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

    # -- plumbing ---------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"cannot reach the database at {self.address}: {one_line(exc)}"
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
                            f"({one_line(exc)}); try again"
                        ) from exc
                    log.info("retrying a statement the database aborted: %s", one_line(exc))
                    await asyncio.sleep(random.uniform(0.01, 0.05) * aborted)
                    continue
                if not isinstance(exc, psycopg.OperationalError):
                    raise StoreError(f"database error: {one_line(exc)}") from exc
                with contextlib.suppress(Exception):
                    await pool.check()
                attempt += 1
                if not idempotent or attempt >= 2:
                    raise self._unavailable(exc) from exc
                log.info("retrying after a connection failure: %s", one_line(exc))

    # -- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        conn = await self._connect()
        try:
            async with conn:
                await migrate(conn)
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc
        except psycopg.Error as exc:
            raise StoreError(f"cannot migrate the database: {one_line(exc)}") from exc
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

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # -- jobs -------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[Job]) -> list[QueuedJob]:
        if not jobs:
            return []
        params = {"jobs": enqueue_document(jobs)}
        if all(job.unique_key is None for job in jobs):

            async def plain(conn: Conn) -> list[QueuedJob]:
                cur = await conn.execute(sql.ENQUEUE_NO_KEYS, params)
                rows = sorted(await cur.fetchall(), key=lambda row: row["id"])
                if len(rows) != len(jobs):
                    raise StoreError(f"enqueue stored {len(rows)} of {len(jobs)} jobs")
                return [job_row(row) for row in rows]

            return await self._run(plain)

        async def body(conn: Conn) -> list[QueuedJob]:
            cur = await conn.execute(sql.ENQUEUE, params)
            inserted: list[DictRow] = []
            stored: list[DictRow] = []
            for row in await cur.fetchall():
                (inserted if row["new"] else stored).append(row)
            by_key = {row["unique_key"]: job_row(row) for row in stored}
            unkeyed: list[QueuedJob] = []
            # Ids follow input order; a key inserted here wins over a stored row of the
            # statement's snapshot that has since stopped holding it.
            for row in sorted(inserted, key=lambda row: row["id"]):
                queued = job_row(row)
                if queued.unique_key is None:
                    unkeyed.append(queued)
                else:
                    by_key[queued.unique_key] = queued
            if len(unkeyed) != sum(job.unique_key is None for job in jobs):
                raise StoreError(f"enqueue stored {len(unkeyed)} jobs without a unique_key")
            next_unkeyed = iter(unkeyed)
            placed: dict[int, QueuedJob] = {}
            for i, job in enumerate(jobs):
                if job.unique_key is None:
                    placed[i] = next(next_unkeyed)
                elif job.unique_key in by_key:
                    placed[i] = by_key[job.unique_key]
            missing = [i for i in range(len(jobs)) if i not in placed]
            if missing:
                # A concurrent enqueue committed one of our keys after this statement's
                # snapshot: the conflict hid the row from it. Read those keys again.
                keys = [jobs[i].unique_key for i in missing]
                cur = await conn.execute(sql.FIND_ACTIVE_BY_KEYS, {"keys": keys})
                by_key = {row["unique_key"]: job_row(row) for row in await cur.fetchall()}
                for i in missing:
                    key = jobs[i].unique_key
                    if key not in by_key:
                        raise StoreError(
                            f"enqueue raced with a job of unique_key {key!r}; try again"
                        )
                    placed[i] = by_key[key]
            return [placed[i] for i in range(len(jobs))]

        return await self._run(body)

    async def _one(self, query: str, params: dict[str, Any], *, idempotent: bool) -> DictRow | None:
        async def body(conn: Conn) -> DictRow | None:
            cur = await conn.execute(query, params)
            return await cur.fetchone()

        return await self._run(body, idempotent=idempotent)

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

    async def get(self, job_id: JobId) -> QueuedJob | None:
        row = await self._one(sql.GET_JOB, {"id": job_id}, idempotent=True)
        return None if row is None else job_row(row)

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        states: Sequence[JobState] | None = None,
        limit: int = 100,
        after_id: JobId | None = None,
    ) -> list[QueuedJob]:
        where = ["true"]
        if queue is not None:
            where.append("queue = %(queue)s")
        if states is not None:
            where.append("state = ANY(%(states)s::text[])")
        if after_id is not None:
            where.append("id < %(after_id)s")
        query = (
            f"SELECT * FROM slotfleet_jobs WHERE {' AND '.join(where)} "
            "ORDER BY id DESC LIMIT %(limit)s"
        )
        params = {
            "queue": queue,
            "states": [JobState(s).value for s in states or ()],
            "after_id": after_id,
            "limit": limit,
        }
        return [job_row(r) for r in await self._all(query, params, idempotent=True)]

    async def fetch(
        self, queue: str, worker_id: str, limit: int, lease_seconds: float, *, claim: str
    ) -> list[QueuedJob]:
        if limit <= 0:
            return []
        params = {
            "queue": queue,
            "worker_id": worker_id,
            "claim": claim,
            "limit": limit,
            "lease_seconds": float(lease_seconds),
        }

        async def body(conn: Conn) -> list[QueuedJob]:
            cur = await conn.execute(sql.FETCH, params)
            try:
                return [job_row(r) for r in await cur.fetchall()]
            except UNDECODABLE as exc:  # the claim committed: sort the rows out one by one
                log.warning("a claimed job could not be read: %s", one_line(exc))
                return await self._claimed_rows(conn, worker_id, claim)

        # A fetch is never cancelled once it runs (claimed jobs must reach the executor),
        # so it must not sit out the whole connect timeout while the database is down:
        # a stopping worker waits for it. The fetch loop retries a failed fetch anyway.
        jobs = await self._run(body, wait=FETCH_POOL_WAIT_SECONDS)
        return sorted(jobs, key=lambda j: (-j.priority, j.scheduled_at, j.id))

    async def _claimed_rows(self, conn: Conn, worker_id: str, claim: str) -> list[QueuedJob]:
        """The jobs claimed under ``claim``, read one at a time; a row that cannot be
        read is failed in place with a readable error."""
        cur = await conn.execute(sql.CLAIMED_IDS, {"worker_id": worker_id, "claim": claim})
        jobs = []
        for (job_id,) in [tuple(r.values()) for r in await cur.fetchall()]:
            try:
                row = await (await conn.execute(sql.GET_JOB, {"id": job_id})).fetchone()
                if row is not None:
                    jobs.append(job_row(row))
            except UNDECODABLE as exc:
                params = {"id": job_id, "claim": claim, "error": unreadable_message(exc)}
                await conn.execute(sql.FAIL_UNREADABLE, params)
        return jobs

    async def release_claim(self, worker_id: str, claim: str) -> list[JobId]:
        params = {"worker_id": worker_id, "claim": claim}
        rows = await self._all(sql.RELEASE_CLAIM, params, idempotent=True)
        return [JobId(r["id"]) for r in rows]

    async def enqueue_ids(self, jobs: Sequence[Job]) -> list[JobId]:
        if not jobs or any(job.unique_key is not None for job in jobs):
            return [job.id for job in await self.enqueue(jobs)]
        params = {"jobs": enqueue_document(jobs)}

        async def body(conn: Conn) -> list[JobId]:
            cur = await conn.execute(sql.ENQUEUE_NO_KEYS_IDS, params)
            ids = sorted(JobId(row["id"]) for row in await cur.fetchall())
            if len(ids) != len(jobs):
                raise StoreError(f"enqueue stored {len(ids)} of {len(jobs)} jobs")
            return ids

        return await self._run(body)

    async def running_by_worker(self, queue: str) -> dict[str, int]:
        rows = await self._all(sql.RUNNING_BY_WORKER, {"queue": queue}, idempotent=True)
        return {str(r["lease_owner"]): int(r["running"]) for r in rows}

    async def purge(
        self, older_than: timedelta, *, queue: str | None = None, limit: int = 1000
    ) -> int:
        params = {"older_than": purge_seconds(older_than), "queue": queue, "limit": max(0, limit)}

        async def body(conn: Conn) -> int:
            cur = await conn.execute(sql.PURGE, params)
            return max(0, cur.rowcount)

        return await self._run(body, idempotent=True)

    async def complete(self, completions: Sequence[Completion]) -> list[JobId]:
        batch = dedupe_completions(completions)
        if not batch:
            return []
        params = {"completions": completion_document(batch)}
        # Idempotent: a repeated completion finds the job no longer running.
        rows = await self._all(sql.COMPLETE, params, idempotent=True)
        return [JobId(r["id"]) for r in rows]

    async def request_cancel(self, job_id: JobId) -> QueuedJob | None:
        row = await self._one(sql.REQUEST_CANCEL, {"id": job_id}, idempotent=True)
        return None if row is None else job_row(row)

    async def cancel_requests(
        self, *, worker_id: str | None = None, queue: str | None = None
    ) -> list[QueuedJob]:
        query = cancel_requests_query(worker_id, queue, lambda name: f"%({name})s")
        params = {"worker_id": worker_id, "queue": queue}
        return [job_row(r) for r in await self._all(query, params, idempotent=True)]

    # -- workers and leases -----------------------------------------------------------

    async def heartbeat(
        self, beat: WorkerHeartbeat, lease_seconds: float, held: Sequence[Lease]
    ) -> set[Lease]:
        params = {
            "worker_id": beat.worker_id,
            "hostname": beat.hostname,
            "pid": beat.pid,
            "queues": Jsonb({k: list(v) for k, v in beat.queues.items()}),
            "started_at": beat.started_at,
            "draining": beat.draining,
            "lease_seconds": float(lease_seconds),
            "ids": [job_id for job_id, _ in held],
            "tokens": [token for _, token in held],
        }
        rows = await self._all(sql.HEARTBEAT, params, idempotent=True)
        return {(JobId(r["id"]), str(r["lease_token"])) for r in rows}

    async def remove_worker(self, worker_id: str) -> None:
        async def body(conn: Conn) -> None:
            await conn.execute(sql.DELETE_WORKER, {"worker_id": worker_id})

        await self._run(body, idempotent=True)

    async def workers(
        self, *, ttl_seconds: float = DEFAULT_WORKER_TTL_SECONDS
    ) -> list[WorkerHeartbeat]:
        rows = await self._all(sql.LIVE_WORKERS, {"ttl": float(ttl_seconds)}, idempotent=True)
        return [worker_row(r) for r in rows]

    async def recover_expired(self) -> list[JobId]:
        rows = await self._all(sql.RECOVER_EXPIRED, {}, idempotent=True)
        return [JobId(r["id"]) for r in rows]

    async def queue_stats(
        self, queue: str | None = None, *, ttl_seconds: float = DEFAULT_WORKER_TTL_SECONDS
    ) -> list[QueueStats]:
        async def body(conn: Conn) -> tuple[list[DictRow], list[DictRow]]:
            counts = await (await conn.execute(sql.JOB_COUNTS, {"queue": queue})).fetchall()
            live = await conn.execute(sql.LIVE_WORKERS, {"ttl": float(ttl_seconds)})
            return counts, await live.fetchall()

        counts, live = await self._run(body, idempotent=True)
        return build_stats(counts, [worker_row(r) for r in live], queue)

    async def take_rate_tokens(self, queue: str, wanted: int, count: int, period: float) -> int:
        if wanted <= 0:
            return 0
        params = {"queue": queue, "wanted": wanted, "count": count, "period": float(period)}
        row = await self._one(sql.TAKE_RATE_TOKENS, params, idempotent=False)
        return 0 if row is None else int(row["granted"])

    async def wait_for_jobs(self, queue: str, timeout: float) -> None:
        if self._pool is None:
            raise StoreError("the store is not open: await store.open() first")
        if self._listener is None:
            self._listener = Listener(self._connect, sql.CHANNEL)
            self._listener.start()
        await self._listener.wait(queue, timeout)

    async def now(self) -> datetime:
        row = await self._one(sql.NOW, {}, idempotent=True)
        assert row is not None
        return utc(row["now"])  # type: ignore[no-any-return]
