"""The fleet store: PostgreSQL through psycopg 3 and a small connection pool.

Connections are in autocommit mode and every verb is one statement (see
``postgres_sql``), so a verb is one round trip. Times are the server's ``now()``, so
workers on machines with skewed clocks agree on leases and schedules. Idle workers
sleep in :meth:`PostgresStore.wait_for_jobs` on a dedicated LISTEN connection (not
from the pool) and wake on ``NOTIFY`` from enqueues, retries and recovered jobs.

Listings and the dashboard's reads live in ``postgres_reads``, the layer under this class.

What this is not: a general database layer. It runs only the named statements of
``postgres_sql`` and keeps no cache of rows. Driver errors never escape: connection
problems become :class:`StoreUnavailableError`, the rest :class:`StoreError`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import psycopg
from psycopg.rows import DictRow, RowMaker
from psycopg.types.json import Jsonb

from slotfleet.models import (
    Completion,
    JobId,
    QueuePause,
    QueueStats,
    StoreError,
    WorkerHeartbeat,
)
from slotfleet.models.claimed import ClaimedJob
from slotfleet.store import postgres_sql as sql
from slotfleet.store import rows
from slotfleet.store.base import DEFAULT_WORKER_TTL_SECONDS, Lease
from slotfleet.store.postgres_db import (
    Conn,
    completion_document,
    copy_rows,
    enqueue_document,
    job_row,
    pause_row,
    place_enqueued,
    utc,
    worker_row,
)
from slotfleet.store.postgres_listen import Listener
from slotfleet.store.postgres_reads import PostgresReads
from slotfleet.store.rows import (
    build_stats,
    cancel_requests_query,
    dedupe_completions,
    one_line,
    purge_seconds,
    unreadable_message,
)

if TYPE_CHECKING:  # pydantic models, built off the worker's claim-run-report path
    from slotfleet.models.jobs import Job, QueuedJob

log = logging.getLogger(__name__)

#: Longest wait for a pooled connection of each call of a fetch round (handing back a
#: lost claim, taking rate tokens, the fetch itself): a stopping worker waits for the
#: round, so none of them may sit out the whole connect timeout while the database is
#: down (see :meth:`PostgresStore.fetch`).
FETCH_POOL_WAIT_SECONDS = 2.0

#: Batches without unique keys of at least this many jobs are written with COPY (fewer
#: and they go in one INSERT: COPY's transaction costs three more round trips).
COPY_MIN_JOBS = 200

#: What reading a claimed row may raise when a value in it cannot be represented.
UNDECODABLE: tuple[type[Exception], ...] = (*rows.UNDECODABLE, psycopg.DataError)


def _claimed_row_maker(cursor: object) -> RowMaker[ClaimedJob]:
    """Row factory of a fetch: a :class:`ClaimedJob` per row, nothing validated (the row
    was checked at enqueue; a value that cannot even be decoded raises ``DataError``)."""
    return ClaimedJob.from_values


class PostgresStore(PostgresReads):
    """:class:`~slotfleet.store.Store` on PostgreSQL (``postgresql://...``)."""

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
            placed = place_enqueued(jobs, await cur.fetchall())
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

    async def get(self, job_id: JobId) -> QueuedJob | None:
        row = await self._one(sql.GET_JOB, {"id": job_id}, idempotent=True)
        return None if row is None else job_row(row)

    async def fetch(
        self, queue: str, worker_id: str, limit: int, lease_seconds: float, *, claim: str
    ) -> list[ClaimedJob]:
        if limit <= 0:
            return []
        params = {
            "queue": queue,
            "worker_id": worker_id,
            "claim": claim,
            "limit": limit,
            "lease_seconds": float(lease_seconds),
        }

        async def body(conn: Conn) -> list[ClaimedJob]:
            cur = conn.cursor(row_factory=_claimed_row_maker)
            try:
                await cur.execute(sql.FETCH, params)
                return await cur.fetchall()
            except UNDECODABLE as exc:  # the claim committed: sort the rows out one by one
                log.warning("a claimed job could not be read: %s", one_line(exc))
                return await self._claimed_rows(conn, worker_id, claim)

        # A fetch is never cancelled once it runs (claimed jobs must reach the executor),
        # so it must not sit out the whole connect timeout while the database is down:
        # a stopping worker waits for it. The fetch loop retries a failed fetch anyway.
        jobs = await self._run(body, wait=FETCH_POOL_WAIT_SECONDS)
        return sorted(jobs, key=lambda j: (-j.priority, j.scheduled_at, j.id))

    async def _claimed_rows(self, conn: Conn, worker_id: str, claim: str) -> list[ClaimedJob]:
        """The jobs claimed under ``claim``, read one at a time; a row that cannot be
        read is failed in place with a readable error."""
        cur = await conn.execute(sql.CLAIMED_IDS, {"worker_id": worker_id, "claim": claim})
        jobs = []
        for (job_id,) in [tuple(r.values()) for r in await cur.fetchall()]:
            try:
                row = await (await conn.execute(sql.GET_JOB, {"id": job_id})).fetchone()
                if row is not None:
                    jobs.append(ClaimedJob.of(job_row(row)))
            except UNDECODABLE as exc:
                params = {"id": job_id, "claim": claim, "error": unreadable_message(exc)}
                await conn.execute(sql.FAIL_UNREADABLE, params)
        return jobs

    async def release_claim(self, worker_id: str, claim: str) -> list[JobId]:
        params = {"worker_id": worker_id, "claim": claim}
        rows = await self._all(
            sql.RELEASE_CLAIM, params, idempotent=True, wait=FETCH_POOL_WAIT_SECONDS
        )
        return [JobId(r["id"]) for r in rows]

    async def enqueue_ids(self, jobs: Sequence[Job]) -> list[JobId]:
        if not jobs or any(job.unique_key is not None for job in jobs):
            return [job.id for job in await self.enqueue(jobs)]
        if len(jobs) >= COPY_MIN_JOBS:
            return await self._copy_jobs(jobs)
        params = {"jobs": enqueue_document(jobs)}

        async def body(conn: Conn) -> list[JobId]:
            cur = await conn.execute(sql.ENQUEUE_NO_KEYS_IDS, params)
            ids = sorted(JobId(row["id"]) for row in await cur.fetchall())
            if len(ids) != len(jobs):
                raise StoreError(f"enqueue stored {len(ids)} of {len(jobs)} jobs")
            return ids

        return await self._run(body)

    async def _copy_jobs(self, jobs: Sequence[Job]) -> list[JobId]:
        """Write a batch without unique keys with COPY (see ``sql.COPY_IDS``): ids in
        input order, one transaction."""

        async def body(conn: Conn) -> list[JobId]:
            async with conn.transaction():
                cur = await conn.execute(sql.COPY_IDS, {"n": len(jobs)})
                row = await cur.fetchone()
                assert row is not None
                ids = sorted(int(i) for i in row["ids"])
                text = copy_rows(jobs, ids, row["now"])
                async with conn.cursor().copy(sql.COPY_JOBS) as copy:
                    await copy.write(text)
            return [JobId(i) for i in ids]

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
            "retiring": beat.retiring,
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
        async def body(conn: Conn) -> tuple[list[DictRow], list[DictRow], list[DictRow]]:
            counts = await (await conn.execute(sql.JOB_COUNTS, {"queue": queue})).fetchall()
            live = await conn.execute(sql.LIVE_WORKERS, {"ttl": float(ttl_seconds)})
            pauses = await conn.execute(sql.QUEUE_PAUSES, {"queue": queue})
            return counts, await live.fetchall(), await pauses.fetchall()

        counts, live, pauses = await self._run(body, idempotent=True)
        return build_stats(
            counts, [worker_row(r) for r in live], queue, [pause_row(r) for r in pauses]
        )

    async def pause_queue(
        self,
        queue: str,
        *,
        resume_at: datetime | None = None,
        resume_after: float | None = None,
    ) -> QueuePause:
        params = {"queue": queue, "resume_at": resume_at, "resume_after": resume_after}
        row = await self._one(sql.PAUSE_QUEUE, params, idempotent=True)
        assert row is not None  # an upsert always returns its row
        return pause_row(row)

    async def resume_queue(self, queue: str) -> bool:
        return await self._one(sql.RESUME_QUEUE, {"queue": queue}, idempotent=True) is not None

    async def take_rate_tokens(self, queue: str, wanted: int, count: int, period: float) -> int:
        if wanted <= 0:
            return 0
        params = {"queue": queue, "wanted": wanted, "count": count, "period": float(period)}
        row = await self._one(
            sql.TAKE_RATE_TOKENS, params, idempotent=False, wait=FETCH_POOL_WAIT_SECONDS
        )
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
