"""The SQLite store's listing and dashboard verbs: pages of jobs (whole or as summaries),
jobs finished per time bucket, and retrying a finished job.

A mixin of :class:`~slotfleet.store.sqlite.SQLiteStore`, kept apart so the store's module
stays about its hot path. It runs only statements of ``sqlite_sql`` on the store's one
connection thread; the retry is a write under the database write lock.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from slotfleet.models import FinishedCounts, JobId, JobState, JobSummary, QueuedJob
from slotfleet.store import sqlite_reads_sql as sql
from slotfleet.store import sqlite_sql as hot
from slotfleet.store.rows import finished_from_record, listing_states, summary_from_record
from slotfleet.store.sqlite_db import job_row, write

T = TypeVar("T")

_SUMMARY_TIMES = ("created_at", "scheduled_at", "started_at", "completed_at")


class SQLiteReads:
    """Listing, counting and retry verbs on top of the store's ``_call``."""

    async def _call(self, body: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError  # SQLiteStore._call

    def _wake(self, queues: Sequence[str]) -> None:
        raise NotImplementedError  # SQLiteStore._wake

    async def _page(
        self,
        select: str,
        *,
        queue: str | None,
        states: Sequence[JobState] | None,
        func: str | None,
        limit: int,
        after_id: JobId | None,
    ) -> list[sqlite3.Row]:
        query = sql.listing(
            select,
            listing_states(queue=queue, states=states, func=func),
            queue=queue is not None,
            func=func is not None,
            after=after_id is not None,
        )
        params = {"queue": queue, "func": func, "after_id": after_id, "limit": max(0, limit)}
        return await self._call(lambda conn: conn.execute(query, params).fetchall())

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
        summaries = []
        for row in rows:
            record: dict[str, Any] = dict(zip(row.keys(), row, strict=True))
            for name in _SUMMARY_TIMES:
                if record[name] is not None:
                    record[name] = datetime.fromtimestamp(record[name], UTC)
            summaries.append(summary_from_record(record))
        return summaries

    async def finished_counts(
        self, *, window_seconds: float, bucket_seconds: float
    ) -> list[FinishedCounts]:
        bucket = float(bucket_seconds)
        since = math.floor((time.time() - float(window_seconds)) / bucket) * bucket
        params = {"since": since, "bucket": bucket}
        rows = await self._call(lambda conn: conn.execute(sql.FINISHED_COUNTS, params).fetchall())
        return sorted((finished_from_record(row) for row in rows), key=lambda c: (c.start, c.queue))

    async def retry(self, job_id: JobId) -> tuple[QueuedJob, bool] | None:
        def body(conn: sqlite3.Connection) -> tuple[QueuedJob, bool] | None:
            row = conn.execute(sql.RETRY, {"id": job_id, "now": time.time()}).fetchone()
            if row is not None:
                return job_row(row), True
            row = conn.execute(hot.GET_JOB, {"id": job_id}).fetchone()
            return None if row is None else (job_row(row), False)

        found = await self._call(lambda conn: write(conn, body))
        if found is not None and found[1]:
            self._wake([found[0].queue])
        return found
