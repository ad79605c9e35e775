"""The PostgreSQL store's listing, dashboard and fleet verbs: pages of jobs (whole or as
summaries), jobs finished per time bucket, retrying a finished job, and the snapshot of
many queues at once that a fleet controller reads every tick.

A layer between :class:`~slotfleet.store.postgres_pool.PostgresConnections` and
:class:`~slotfleet.store.postgres.PostgresStore`, kept apart so the store's module stays
about its hot path (enqueue, fetch, complete, heartbeats). It runs only statements of
``postgres_reads_sql`` through the connections' ``_run``.

What this is not: a query layer. Each method is one statement, except
:meth:`PostgresReads.fleet_snapshot`: two to four, whatever the number of queues.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from psycopg.rows import DictRow

from slotfleet.models import (
    FleetSnapshot,
    JobId,
    JobState,
    StoreError,
)
from slotfleet.store import postgres_reads_sql as sql
from slotfleet.store.base import DEFAULT_WORKER_TTL_SECONDS
from slotfleet.store.postgres_db import Conn, job_row, pause_row, utc, worker_row
from slotfleet.store.postgres_listen import Listener
from slotfleet.store.postgres_pool import PostgresConnections
from slotfleet.store.postgres_sql import CANCEL_CHANNEL, CHANNEL, LIVE_WORKERS
from slotfleet.store.rows import (
    build_snapshot,
    finished_from_record,
    listing_states,
    summary_from_record,
)

if TYPE_CHECKING:  # pydantic models, built off the worker's claim-run-report path
    from slotfleet.models.jobs import FinishedCounts, JobSummary, QueuedJob

T = TypeVar("T")
_Rows = list[DictRow]


class PostgresReads(PostgresConnections):
    """Listing, counting and retry verbs on the connections' ``_run``."""

    async def _page(
        self,
        select: str,
        *,
        queue: str | None,
        states: Sequence[JobState] | None,
        func: str | None,
        limit: int,
        after_id: JobId | None,
    ) -> list[DictRow]:
        query = sql.listing(
            select,
            listing_states(queue=queue, states=states, func=func),
            queue=queue is not None,
            func=func is not None,
            after=after_id is not None,
        )
        params = {"queue": queue, "func": func, "after_id": after_id, "limit": max(0, limit)}

        async def body(conn: Conn) -> list[DictRow]:
            return await (await conn.execute(query, params)).fetchall()

        return await self._run(body, idempotent=True)

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        states: Sequence[JobState] | None = None,
        limit: int = 100,
        after_id: JobId | None = None,
        func: str | None = None,
    ) -> list[QueuedJob]:
        rows = await self._page(
            "*", queue=queue, states=states, func=func, limit=limit, after_id=after_id
        )
        return [job_row(row) for row in rows]

    async def list_summaries(
        self,
        *,
        queue: str | None = None,
        states: Sequence[JobState] | None = None,
        limit: int = 100,
        after_id: JobId | None = None,
        func: str | None = None,
    ) -> list[JobSummary]:
        rows = await self._page(
            sql.SUMMARY_SELECT,
            queue=queue,
            states=states,
            func=func,
            limit=limit,
            after_id=after_id,
        )
        return [summary_from_record({k: utc(v) for k, v in row.items()}) for row in rows]

    async def finished_counts(
        self, *, window_seconds: float, bucket_seconds: float
    ) -> list[FinishedCounts]:
        params: dict[str, Any] = {"window": float(window_seconds), "bucket": float(bucket_seconds)}

        async def body(conn: Conn) -> list[DictRow]:
            return await (await conn.execute(sql.FINISHED_COUNTS, params)).fetchall()

        rows = await self._run(body, idempotent=True)
        return sorted((finished_from_record(row) for row in rows), key=lambda c: (c.start, c.queue))

    async def retry(self, job_id: JobId) -> tuple[QueuedJob, bool] | None:
        async def body(conn: Conn) -> DictRow | None:
            return await (await conn.execute(sql.RETRY, {"id": job_id})).fetchone()

        row = await self._run(body, idempotent=False)
        return None if row is None else (job_row(row), bool(row["retried"]))

    async def fleet_snapshot(
        self, queues: Sequence[str], *, ttl_seconds: float = DEFAULT_WORKER_TTL_SECONDS
    ) -> FleetSnapshot:
        names = list(dict.fromkeys(queues))
        params: dict[str, Any] = {"queues": names}

        async def body(conn: Conn) -> tuple[_Rows, _Rows, _Rows, _Rows]:
            # One pooled connection, autocommit: each statement sees the latest commits.
            live = await conn.execute(LIVE_WORKERS, {"ttl": float(ttl_seconds)})
            workers = await live.fetchall()
            if not names:
                return [], workers, [], []
            counts = await (await conn.execute(sql.FLEET_COUNTS, params)).fetchall()
            if not any(row["running"] for row in counts):
                # Cancel requests and leases are on running jobs only: an idle fleet
                # costs two statements per read.
                return counts, workers, [], []
            running = await (await conn.execute(sql.FLEET_RUNNING, params)).fetchall()
            cancels = await (await conn.execute(sql.FLEET_CANCELS, params)).fetchall()
            return counts, workers, running, cancels

        counts, workers, running, cancels = await self._run(body, idempotent=True)
        return build_snapshot(
            names,
            counts,
            [worker_row(r) for r in workers],
            [pause_row(r) for r in counts if r["paused_at"] is not None],
            running,
            [job_row(r) for r in cancels],
        )

    async def wait_for_change(self, timeout: float) -> None:
        if self._pool is None:
            raise StoreError("the store is not open: await store.open() first")
        if self._changes is None:
            # Enqueues (the insert trigger) and jobs made ready again notify CHANNEL;
            # cancel requests on running jobs notify CANCEL_CHANNEL, which workers never
            # LISTEN to. Its own connection: a worker's Listener wakes by queue only.
            self._changes = Listener(self._connect, CHANNEL, CANCEL_CHANNEL)
            self._changes.start()
        await self._changes.wait_any(timeout)
