"""The SQLite store's listing, dashboard and fleet verbs: pages of jobs (whole or as
summaries), jobs finished per time bucket, retrying a finished job, and the snapshot of
many queues at once that a fleet controller reads every tick.

A mixin of :class:`~slotfleet.store.sqlite.SQLiteStore`, kept apart so the store's module
stays about its hot path. It runs only statements of ``sqlite_sql`` on the store's one
connection thread; the retry is a write under the database write lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from slotfleet.models import (
    FleetSnapshot,
    JobId,
    JobState,
)
from slotfleet.store import sqlite_reads_sql as sql
from slotfleet.store import sqlite_sql as hot
from slotfleet.store.base import DEFAULT_WORKER_TTL_SECONDS
from slotfleet.store.rows import (
    build_snapshot,
    dump_json,
    finished_from_record,
    listing_states,
    summary_from_record,
)
from slotfleet.store.sqlite_db import data_version, job_row, pause_row, worker_row, write

if TYPE_CHECKING:  # pydantic models, built off the worker's claim-run-report path
    from slotfleet.models.jobs import FinishedCounts, JobSummary, QueuedJob

T = TypeVar("T")
_Rows = list[sqlite3.Row]

#: How often :meth:`SQLiteReads.wait_for_change` reads ``PRAGMA data_version`` (a header
#: read, no lock); the change mark is read only when it moved.
CHANGE_WATCH_SECONDS = 0.1


def _version_and_mark(conn: sqlite3.Connection) -> tuple[int, tuple[Any, ...]]:
    return data_version(conn), _mark(conn)


def _mark(conn: sqlite3.Connection) -> tuple[Any, ...]:
    return tuple(conn.execute(sql.CHANGE_MARK).fetchone())


_SUMMARY_TIMES = ("created_at", "scheduled_at", "started_at", "completed_at")


class SQLiteReads:
    """Listing, counting and retry verbs on top of the store's ``_call``."""

    async def _call(self, body: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError  # SQLiteStore._call

    def _wake(self, queues: Sequence[str]) -> None:
        raise NotImplementedError  # SQLiteStore._wake

    _changed: asyncio.Event  # SQLiteConnection's
    _change_mark: tuple[Any, ...] | None

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

    async def fleet_snapshot(
        self, queues: Sequence[str], *, ttl_seconds: float = DEFAULT_WORKER_TTL_SECONDS
    ) -> FleetSnapshot:
        names = list(dict.fromkeys(queues))
        params = {"queues": dump_json(names), "now": time.time(), "ttl": ttl_seconds}

        def body(conn: sqlite3.Connection) -> tuple[_Rows, _Rows, _Rows, _Rows]:
            workers = conn.execute(hot.LIVE_WORKERS, params).fetchall()
            if not names:
                return [], workers, [], []
            counts = conn.execute(sql.FLEET_COUNTS, params).fetchall()
            if not any(row["running"] for row in counts):  # leases are on running jobs
                return counts, workers, [], []
            running = conn.execute(sql.FLEET_RUNNING, params).fetchall()
            return counts, workers, running, conn.execute(sql.FLEET_CANCELS, params).fetchall()

        counts, workers, running, cancels = await self._call(body)
        return build_snapshot(
            names,
            [dict(zip(r.keys(), r, strict=True)) for r in counts],
            [worker_row(r) for r in workers],
            [pause_row(r) for r in counts if r["paused_at"] is not None],
            [dict(zip(r.keys(), r, strict=True)) for r in running],
            [job_row(r) for r in cancels],
        )

    async def wait_for_change(self, timeout: float) -> None:
        """SQLite has no notifications between processes: watch ``PRAGMA data_version``
        every ``CHANGE_WATCH_SECONDS`` and, when another connection committed, compare
        the change mark (newest job id, cancel requests on running jobs). Enqueues and
        cancel requests from any process are seen within about that interval, those of
        this store object at once; jobs made ready again (retries, expired leases) and
        scheduled jobs coming due wake nobody: they are seen at ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        version, mark = await self._call(_version_and_mark)
        previous, self._change_mark = self._change_mark, mark
        if previous is None or previous == mark:  # else it changed since the last return
            while (remaining := deadline - loop.time()) > 0 and not self._changed.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait(), min(remaining, CHANGE_WATCH_SECONDS)
                    )
                    break
                seen = await self._call(data_version)
                if seen != version:
                    version, mark = seen, await self._call(_mark)
                    if mark != self._change_mark:
                        self._change_mark = mark
                        break
        self._changed.clear()
