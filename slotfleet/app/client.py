"""The client API: enqueue, get, wait, cancel, retry, list and purge jobs; pause and
resume queues; read queues, workers and recent throughput (what ``slotfleet dashboard``
and ``top`` show).

:class:`App` is async; :class:`SyncApp` (``slotfleet.app.sync``) wraps it for scripts.
Both talk to a :class:`~slotfleet.store.Store` chosen by DSN and nothing else: the app
never runs jobs and never imports the worker.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from slotfleet.app.decorator import JobFunction
from slotfleet.models import (
    FinishedCounts,
    InvalidJobError,
    InvalidSettingsError,
    Job,
    JobId,
    JobNotFoundError,
    JobState,
    JobSummary,
    QueuedJob,
    QueuePause,
    QueueStats,
    Reference,
    SlotfleetError,
    WorkerHeartbeat,
)
from slotfleet.models.jobs import MAX_JOB_ID, check_moment
from slotfleet.models.queues import check_queue_name
from slotfleet.store import (
    DEFAULT_WORKER_TTL_SECONDS,
    Store,
    describe_dsn,
    dsn_from_env,
    open_store,
    purge_in_batches,
)

JobLike = Job | JobFunction[..., Any]
RefLike = Reference | QueuedJob | int | str

#: Longest pause given as a delay (about 317 years): longer ones would not fit the stores'
#: time types once added to now.
MAX_PAUSE_SECONDS = 1e10


def job_id_of(ref: RefLike) -> JobId:
    """The id behind a reference, a queued job, or a number as typed by a user."""
    if isinstance(ref, Reference):
        return ref.identifier
    if isinstance(ref, QueuedJob):
        return ref.id
    try:
        value = int(ref)
    except (TypeError, ValueError):
        raise JobNotFoundError(f"{ref!r} is not a job id (job ids are whole numbers)") from None
    if not 0 < value <= MAX_JOB_ID:
        raise JobNotFoundError(f"{ref!r} is not a job id (job ids are from 1 to 2**63-1)")
    return JobId(value)


def as_job(item: JobLike, kwargs: dict[str, Any]) -> Job:
    if isinstance(item, JobFunction):
        return item.with_kwargs(**kwargs)
    if isinstance(item, Job):
        if kwargs:
            raise InvalidJobError(
                "pass kwargs to job.with_options(kwargs=...) or to a @job function"
            )
        return item
    raise InvalidJobError(
        f"cannot enqueue {type(item).__name__}: expected a Job or a @job function"
    )


class App:
    """A connection to a job store: ``async with App("postgresql://...") as app: ...``.

    ``dsn`` defaults to ``$SLOTFLEET_DSN`` or the embedded ``sqlite:///slotfleet.db``.
    """

    def __init__(self, dsn: str | None = None) -> None:
        self.dsn = dsn or dsn_from_env()
        self._store: Store | None = None

    async def open(self) -> App:
        if self._store is None:
            store = open_store(self.dsn)
            await store.open()
            self._store = store
        return self

    async def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            await store.close()

    async def __aenter__(self) -> App:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def store(self) -> Store:
        if self._store is None:
            raise SlotfleetError(
                "the app is not open: use 'async with App(...)' or await app.open()"
            )
        return self._store

    async def enqueue(self, item: JobLike, /, **kwargs: Any) -> Reference:
        """Queue one job (``enqueue(send_email, to="a@b")`` or ``enqueue(job)``)."""
        [job_id] = await self.store.enqueue_ids([as_job(item, kwargs)])
        return Reference(identifier=job_id)

    async def enqueue_many(self, items: Iterable[Job]) -> list[Reference]:
        """Queue a batch in one round trip; references come back in input order."""
        jobs = [as_job(item, {}) for item in items]
        if not jobs:
            return []
        return [Reference(identifier=i) for i in await self.store.enqueue_ids(jobs)]

    async def get(self, ref: RefLike) -> QueuedJob:
        job_id = job_id_of(ref)
        found = await self.store.get(job_id)
        if found is None:
            raise JobNotFoundError(f"no job has id {job_id}")
        return found

    async def wait(
        self, ref: RefLike, *, timeout: float | None = None, interval: float = 0.05
    ) -> QueuedJob:
        """Poll until the job is terminal; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = interval
        while True:
            found = await self.get(ref)
            if found.is_terminal:
                return found
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {found.id} is still {found.state} after {timeout} s")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    async def cancel(self, ref: RefLike) -> QueuedJob:
        """Cancel a job: a pending one at once, a running one by its worker."""
        job_id = job_id_of(ref)
        found = await self.store.request_cancel(job_id)
        if found is None:
            raise JobNotFoundError(f"no job has id {job_id}")
        return found

    async def purge(self, older_than: timedelta, *, queue: str | None = None) -> int:
        """Delete finished jobs (succeeded, failed, cancelled) that finished more than
        ``older_than`` ago by the store's clock (the database server's on PostgreSQL), from
        ``queue`` or every queue, in batches; return how many."""
        return await purge_in_batches(self.store, older_than, queue=queue)

    async def retry(self, ref: RefLike) -> QueuedJob:
        """Queue a failed or cancelled job again, under the same id: pending now, with a
        fresh set of attempts; its earlier errors stay in ``errors``. Raises
        :class:`InvalidJobError` for a job in another state, or whose ``unique_key`` an
        unfinished job holds now."""
        job_id = job_id_of(ref)
        found = await self.store.retry(job_id)
        if found is None:
            raise JobNotFoundError(f"no job has id {job_id}")
        job, retried = found
        if retried:
            return job
        if job.state in (JobState.FAILED, JobState.CANCELLED):
            raise InvalidJobError(
                f"job {job_id} cannot be retried: another unfinished job holds its "
                f"unique_key {job.unique_key!r}"
            )
        raise InvalidJobError(
            f"job {job_id} is {job.state}: only failed or cancelled jobs can be retried"
        )

    async def queues(self, queue: str | None = None) -> list[QueueStats]:
        """Backlog, live slots and pause per queue."""
        return await self.store.queue_stats(queue)

    async def workers(
        self, *, ttl_seconds: float = DEFAULT_WORKER_TTL_SECONDS
    ) -> list[WorkerHeartbeat]:
        """Workers whose last heartbeat is at most ``ttl_seconds`` old, with their slots
        per queue and whether they are draining."""
        return await self.store.workers(ttl_seconds=ttl_seconds)

    async def finished(self, window: timedelta, bucket: timedelta) -> list[FinishedCounts]:
        """Jobs that ended in the last ``window``, per queue and ``bucket`` (see
        :meth:`Store.finished_counts`)."""
        seconds = bucket.total_seconds()
        if seconds <= 0 or window.total_seconds() <= 0:
            raise InvalidSettingsError("the window and the bucket must be longer than 0 s")
        return await self.store.finished_counts(
            window_seconds=window.total_seconds(), bucket_seconds=seconds
        )

    async def now(self) -> datetime:
        """The store's clock (the database server's on PostgreSQL): ages shown next to
        heartbeats and timestamps are measured against it."""
        return await self.store.now()

    @property
    def location(self) -> str:
        """Where the store is, fit to show (no user name, password or parameter)."""
        return describe_dsn(self.dsn)

    async def pause(self, queue: str, *, until: datetime | timedelta | None = None) -> QueuePause:
        """Pause ``queue`` for every worker of every fleet on this store: none fetches
        from it (within a polling interval) until ``until`` — a time, or a delay counted
        on the store's clock — or, without one, until :meth:`resume`. Running jobs finish.
        Pausing again replaces the earlier pause. A Queue resource's ``spec.paused`` is a
        separate switch: the queue runs only when neither pauses it."""
        try:
            name = check_queue_name(queue)
            if until is None:
                return await self.store.pause_queue(name)
            if isinstance(until, timedelta):
                seconds = until.total_seconds()
                if not 0 <= seconds <= MAX_PAUSE_SECONDS:
                    raise ValueError(f"a pause of {until} is not between 0 and 317 years")
                return await self.store.pause_queue(name, resume_after=seconds)
            if isinstance(until, datetime):
                moment = check_moment(until, "the time to resume")
                return await self.store.pause_queue(name, resume_at=moment)
        except ValueError as exc:
            raise InvalidSettingsError(str(exc)) from None
        raise InvalidSettingsError(
            f"until must be a datetime or a timedelta, not {type(until).__name__}"
        )

    async def resume(self, queue: str) -> bool:
        """End ``queue``'s pause in the store at once; return whether one was in effect."""
        try:
            name = check_queue_name(queue)
        except ValueError as exc:
            raise InvalidSettingsError(str(exc)) from None
        return await self.store.resume_queue(name)

    async def list(
        self,
        *,
        queue: str | None = None,
        states: Sequence[JobState | str] | None = None,
        limit: int = 100,
        func: str | None = None,
        after_id: int | None = None,
    ) -> list[QueuedJob]:
        """Jobs newest first, filtered by queue, states and function; ``after_id`` gives
        the page of jobs older than that id."""
        return await self.store.list_jobs(**listing(queue, states, limit, func, after_id))

    async def summaries(
        self,
        *,
        queue: str | None = None,
        states: Sequence[JobState | str] | None = None,
        limit: int = 100,
        func: str | None = None,
        after_id: int | None = None,
    ) -> builtins.list[JobSummary]:
        """:meth:`list` without payloads (kwargs, result, tracebacks): for tables."""
        return await self.store.list_summaries(**listing(queue, states, limit, func, after_id))


def listing(
    queue: str | None,
    states: Sequence[JobState | str] | None,
    limit: int,
    func: str | None,
    after_id: int | None,
) -> dict[str, Any]:
    """A listing's filters as the store takes them, states checked."""
    return {
        "queue": queue,
        "states": parse_states(states),
        "limit": limit,
        "func": func,
        "after_id": None if after_id is None else JobId(after_id),
    }


def parse_states(states: Sequence[JobState | str] | None) -> list[JobState] | None:
    """States as given by a caller, checked; one clear error for an unknown one."""
    if states is None:
        return None
    try:
        return [JobState(s) for s in states]
    except ValueError:
        known = ", ".join(s.value for s in JobState)
        raise InvalidJobError(f"unknown state in {list(states)} (known: {known})") from None
