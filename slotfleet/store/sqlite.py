"""The embedded store: one SQLite file that several local worker processes share.

Each :class:`SQLiteStore` owns one connection used from one dedicated thread (a
single-thread executor), so the event loop never blocks on disk and the connection is
never shared between threads. The file is in WAL mode; every write runs under
``BEGIN IMMEDIATE`` (the database-wide write lock, waited for up to the busy timeout),
which is what makes a select-then-update atomic across processes, and a write transaction
stays short (a large enqueue commits in chunks of ``ENQUEUE_CHUNK`` rows) so that no
worker's heartbeat waits anywhere near a lease for the lock. Timestamps are UTC epoch
seconds from this machine's clock: every process sharing the file shares that one
clock, and every schedule (leases, retries, purges) is computed by the store from it.

Between processes there are no notifications: an idle worker's :meth:`wait_for_jobs`
watches the file instead, reading ``PRAGMA data_version`` (which changes when another
connection commits) every ``WATCH_INTERVAL_SECONDS`` and looking for a ready job only
when it changed, so another process's enqueue is noticed within about that long.

Listings and the dashboard's reads live in ``sqlite_reads``, a mixin.

What this is not: a store for a fleet on several machines (use PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from slotfleet.models import (
    Completion,
    JobId,
    QueuePause,
    QueueStats,
    WorkerHeartbeat,
)
from slotfleet.models.claimed import ClaimedJob
from slotfleet.store import sqlite_sql as sql
from slotfleet.store.base import DEFAULT_WORKER_TTL_SECONDS, Lease
from slotfleet.store.rows import (
    UNDECODABLE,
    build_stats,
    cancel_requests_query,
    dedupe_completions,
    dump_json,
    error_json,
    job_values,
    purge_seconds,
    unreadable_message,
)
from slotfleet.store.sqlite_conn import SQLiteConnection
from slotfleet.store.sqlite_db import (
    claimed_row,
    data_version,
    epoch,
    insert_jobs,
    job_row,
    pause_row,
    ready_exists,
    worker_row,
    write,
)
from slotfleet.store.sqlite_reads import SQLiteReads

if TYPE_CHECKING:  # pydantic models, built off the worker's claim-run-report path
    from slotfleet.models.jobs import Job, QueuedJob

#: Longest single wait of :meth:`SQLiteStore.wait_for_jobs` (a job whose
#: ``scheduled_at`` passes changes nothing in the file, so it is noticed by polling).
MAX_WAIT_SECONDS = 1.0
#: How often a waiting worker reads ``PRAGMA data_version`` (a header read, no lock).
WATCH_INTERVAL_SECONDS = 0.05
#: Rows an enqueue writes per write transaction: tens of milliseconds of holding the
#: database's write lock, so a huge ``enqueue_many`` (150k rows held it 8.6 s in one
#: transaction) never keeps heartbeats waiting anywhere near a lease. A batch is
#: therefore not atomic on SQLite: a crash midway keeps the chunks already committed.
ENQUEUE_CHUNK = 500


class SQLiteStore(SQLiteConnection, SQLiteReads):
    """:class:`~slotfleet.store.Store` on a SQLite file (``sqlite:///path.db``)."""

    # -- jobs -------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[Job]) -> list[QueuedJob]:
        if not jobs:
            return []
        rows = [job_values(job) for job in jobs]
        by_key: dict[str, QueuedJob] = {}  # across chunks: a key may repeat later on

        def transaction(chunk: list[dict[str, Any]]) -> Callable[[sqlite3.Connection], Any]:
            return lambda conn: write(conn, lambda c: insert_jobs(c, chunk, by_key))

        queued: list[QueuedJob] = []
        for start in range(0, len(rows), ENQUEUE_CHUNK):
            queued += await self._call(transaction(rows[start : start + ENQUEUE_CHUNK]))
        self._wake([job.queue for job in queued])
        return queued

    async def enqueue_ids(self, jobs: Sequence[Job]) -> list[JobId]:
        # One writer at a time: the rows are cheap next to the lock; no separate path.
        return [job.id for job in await self.enqueue(jobs)]

    async def running_by_worker(self, queue: str) -> dict[str, int]:
        def body(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(sql.RUNNING_BY_WORKER, {"queue": queue}).fetchall()
            return {str(r["lease_owner"]): int(r["running"]) for r in rows}

        return await self._call(body)

    async def purge(
        self, older_than: timedelta, *, queue: str | None = None, limit: int = 1000
    ) -> int:
        params = {"older_than": purge_seconds(older_than), "queue": queue, "limit": max(0, limit)}

        def body(conn: sqlite3.Connection) -> int:
            return max(0, conn.execute(sql.PURGE, {**params, "now": time.time()}).rowcount)

        return await self._call(lambda conn: write(conn, body))

    async def get(self, job_id: JobId) -> QueuedJob | None:
        def body(conn: sqlite3.Connection) -> QueuedJob | None:
            row = conn.execute(sql.GET_JOB, {"id": job_id}).fetchone()
            return None if row is None else job_row(row)

        return await self._call(body)

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
            "lease_seconds": lease_seconds,
        }

        def body(conn: sqlite3.Connection) -> list[ClaimedJob]:
            now = time.time()
            jobs = []
            for row in conn.execute(sql.FETCH, {**params, "now": now}).fetchall():
                try:
                    jobs.append(claimed_row(row))
                except UNDECODABLE as exc:  # fail it in place: never strand the claim
                    failed = {
                        "id": row["id"],
                        "claim": claim,
                        "error": unreadable_message(exc),
                        "now": now,
                        "now_iso": datetime.fromtimestamp(now, UTC).isoformat(),
                    }
                    conn.execute(sql.FAIL_UNREADABLE, failed)
            return jobs

        jobs = await self._call(lambda conn: write(conn, body))
        return sorted(jobs, key=lambda j: (-j.priority, j.scheduled_at, j.id))

    async def release_claim(self, worker_id: str, claim: str) -> list[JobId]:
        params = {"worker_id": worker_id, "claim": claim}

        def body(conn: sqlite3.Connection) -> list[JobId]:
            rows = conn.execute(sql.RELEASE_CLAIM, {**params, "now": time.time()}).fetchall()
            return [JobId(r[0]) for r in rows]

        return await self._call(lambda conn: write(conn, body))

    async def complete(self, completions: Sequence[Completion]) -> list[JobId]:
        batch = dedupe_completions(completions)
        if not batch:
            return []

        def body(conn: sqlite3.Connection) -> list[JobId]:
            now = time.time()
            done = []
            for c in batch:
                error = error_json(c)
                row = conn.execute(
                    sql.COMPLETE,
                    {
                        "id": c.job_id,
                        "token": c.token,
                        "outcome": c.outcome.value,
                        "result": (
                            None if c.result is None and c.result_json is None else c.result_text()
                        ),
                        "error": None if error is None else dump_json(error),
                        "retry_delay": c.retry_delay,
                        "meta": None if c.meta is None else dump_json(c.meta),
                        "now": now,
                    },
                ).fetchone()
                if row is not None:
                    done.append(JobId(row[0]))
            return done

        return await self._call(lambda conn: write(conn, body))

    async def request_cancel(self, job_id: JobId) -> QueuedJob | None:
        def body(conn: sqlite3.Connection) -> QueuedJob | None:
            row = conn.execute(sql.REQUEST_CANCEL, {"id": job_id, "now": time.time()}).fetchone()
            if row is None:
                row = conn.execute(sql.GET_JOB, {"id": job_id}).fetchone()
            return None if row is None else job_row(row)

        job = await self._call(lambda conn: write(conn, body))
        self._changed.set()  # for wait_for_change through this same store object
        return job

    async def cancel_requests(
        self, *, worker_id: str | None = None, queue: str | None = None
    ) -> list[QueuedJob]:
        query = cancel_requests_query(worker_id, queue, lambda name: f":{name}")
        params = {"worker_id": worker_id, "queue": queue}
        return await self._call(lambda conn: [job_row(r) for r in conn.execute(query, params)])

    # -- workers and leases -----------------------------------------------------------

    async def heartbeat(
        self, beat: WorkerHeartbeat, lease_seconds: float, held: Sequence[Lease]
    ) -> set[Lease]:
        params = {
            "worker_id": beat.worker_id,
            "hostname": beat.hostname,
            "pid": beat.pid,
            "queues": dump_json({k: list(v) for k, v in beat.queues.items()}),
            "started_at": epoch(beat.started_at),
            "draining": int(beat.draining),
            "retiring": beat.retiring,
        }
        pairs = list(held)

        def body(conn: sqlite3.Connection) -> set[Lease]:
            now = time.time()
            conn.execute(sql.UPSERT_WORKER, {**params, "now": now})
            renewed = set()
            for job_id, token in pairs:
                lease = {"id": job_id, "token": token, "now": now, "lease_seconds": lease_seconds}
                if conn.execute(sql.RENEW_LEASE, lease).fetchone() is not None:
                    renewed.add((job_id, token))
            return renewed

        return await self._call(lambda conn: write(conn, body))

    async def remove_worker(self, worker_id: str) -> None:
        await self._call(
            lambda conn: write(
                conn, lambda c: c.execute(sql.DELETE_WORKER, {"worker_id": worker_id})
            )
        )

    async def workers(
        self, *, ttl_seconds: float = DEFAULT_WORKER_TTL_SECONDS
    ) -> list[WorkerHeartbeat]:
        params = {"now": time.time(), "ttl": ttl_seconds}
        return await self._call(
            lambda conn: [worker_row(r) for r in conn.execute(sql.LIVE_WORKERS, params)]
        )

    async def recover_expired(self) -> list[JobId]:
        def body(conn: sqlite3.Connection) -> list[JobId]:
            now = time.time()
            params = {"now": now, "now_iso": datetime.fromtimestamp(now, UTC).isoformat()}
            return [JobId(r[0]) for r in conn.execute(sql.RECOVER_EXPIRED, params).fetchall()]

        return await self._call(lambda conn: write(conn, body))

    async def queue_stats(
        self, queue: str | None = None, *, ttl_seconds: float = DEFAULT_WORKER_TTL_SECONDS
    ) -> list[QueueStats]:
        query = sql.JOB_COUNTS.format(where="" if queue is None else "WHERE queue = :queue")

        def body(
            conn: sqlite3.Connection,
        ) -> tuple[list[sqlite3.Row], list[WorkerHeartbeat], list[QueuePause]]:
            now = time.time()
            counts = conn.execute(query, {"now": now, "queue": queue}).fetchall()
            live = conn.execute(sql.LIVE_WORKERS, {"now": now, "ttl": ttl_seconds}).fetchall()
            pauses = conn.execute(sql.QUEUE_PAUSES, {"now": now, "queue": queue}).fetchall()
            return counts, [worker_row(r) for r in live], [pause_row(r) for r in pauses]

        counts, live, pauses = await self._call(body)
        records = [dict(zip(r.keys(), r, strict=True)) for r in counts]
        return build_stats(records, live, queue, pauses)

    async def pause_queue(
        self,
        queue: str,
        *,
        resume_at: datetime | None = None,
        resume_after: float | None = None,
    ) -> QueuePause:
        def body(conn: sqlite3.Connection) -> QueuePause:
            now = time.time()
            until = epoch(resume_at)
            if until is None and resume_after is not None:
                until = now + resume_after
            params = {"queue": queue, "now": now, "resume_at": until}
            return pause_row(conn.execute(sql.PAUSE_QUEUE, params).fetchone())

        return await self._call(lambda conn: write(conn, body))

    async def resume_queue(self, queue: str) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            row = conn.execute(sql.RESUME_QUEUE, {"queue": queue}).fetchone()
            return row is not None and (row["resume_at"] is None or row["resume_at"] > time.time())

        resumed = await self._call(lambda conn: write(conn, body))
        if resumed:
            self._wake([queue])
        return resumed

    async def take_rate_tokens(self, queue: str, wanted: int, count: int, period: float) -> int:
        if wanted <= 0:
            return 0

        def body(conn: sqlite3.Connection) -> int:
            now = time.time()
            row = conn.execute(sql.GET_RATE_WINDOW, {"queue": queue}).fetchone()
            start, used = (now, 0) if row is None else (row[0], row[1])
            if start + period <= now:
                start, used = now, 0
            granted = max(0, min(wanted, count - used))
            conn.execute(
                sql.PUT_RATE_WINDOW, {"queue": queue, "window_start": start, "used": used + granted}
            )
            return granted

        return await self._call(lambda conn: write(conn, body))

    async def wait_for_jobs(self, queue: str, timeout: float) -> None:
        """Wait up to ``min(timeout, MAX_WAIT_SECONDS)`` for a ready job in ``queue``: an
        enqueue through this same store object wakes it at once, one by another
        connection (another process) within about ``WATCH_INTERVAL_SECONDS``."""
        event = self._wakeups.setdefault(queue, asyncio.Event())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(timeout, MAX_WAIT_SECONDS))
        version = await self._call(data_version)
        while (remaining := deadline - loop.time()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, WATCH_INTERVAL_SECONDS))
                return
            seen = await self._call(data_version)
            if seen != version:
                version = seen
                if await self._call(lambda conn: ready_exists(conn, queue)):
                    return

    async def now(self) -> datetime:
        return datetime.now(UTC)
