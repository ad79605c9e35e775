"""What the dashboard and ``slotfleet top`` show, as plain models built from ``App`` reads.

:func:`overview` gathers queues (backlog by state, slots), live workers (slots per queue,
heartbeat age, draining) and throughput per time bucket; :class:`JobFilter` turns a
query string into a listing; :func:`job_detail` adds timings to one job. The JSON API
returns these models as they are, and the HTML pages and the terminal render them, so
every figure is computed once.

What this module is not: a renderer (no HTML, no terminal codes) or a web module (it
never imports the web stack).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slotfleet.app import App
from slotfleet.dashboard.settings import ViewSettings
from slotfleet.models import (
    FinishedCounts,
    InvalidSettingsError,
    JobId,
    JobState,
    JobSummary,
    QueuedJob,
    QueueStats,
    WorkerHeartbeat,
    describe_validation_error,
)


class Rates(BaseModel):
    """Jobs that ended in a window, and what share of the decided ones failed."""

    model_config = ConfigDict(frozen=True)

    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    per_minute: float = 0.0
    """Jobs that ended (any way) per minute over the window."""
    failure_rate: float | None = None
    """failed / (succeeded + failed); ``None`` when neither happened."""


class QueueView(BaseModel):
    """A queue's backlog by state and slots now (``QueueStats``), and its last minutes."""

    model_config = ConfigDict(frozen=True)

    queue: str
    ready: int
    scheduled: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    workers: int
    slots_total: int
    slots_busy: int
    slots_free: int
    paused: bool = False
    """Paused in the store (``slotfleet pause``): no worker starts its jobs now."""
    resume_at: datetime | None = None
    """When that pause ends by itself; ``None`` while it lasts until resumed."""
    recent: Rates


def queue_view(stats: QueueStats, recent: Rates) -> QueueView:
    return QueueView(**dataclasses.asdict(stats), slots_free=stats.slots_free, recent=recent)


class WorkerSlots(BaseModel):
    model_config = ConfigDict(frozen=True)

    queue: str
    total: int
    busy: int
    free: int


class WorkerView(BaseModel):
    """One worker as its last heartbeat describes it."""

    model_config = ConfigDict(frozen=True)

    worker_id: str
    hostname: str
    pid: int
    started_at: datetime | None
    last_seen: datetime | None
    heartbeat_age_seconds: float
    draining: bool
    stale: bool
    """No heartbeat for longer than the store counts a worker live."""
    slots: list[WorkerSlots]
    slots_total: int
    slots_busy: int
    slots_free: int


class Bucket(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: datetime
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.cancelled


class Throughput(BaseModel):
    """Every bucket of the window, oldest first (empty ones included)."""

    model_config = ConfigDict(frozen=True)

    window_seconds: int
    bucket_seconds: int
    buckets: list[Bucket]
    totals: Rates


class Overview(BaseModel):
    """Everything the overview page and ``top`` show, as of ``now`` (the store's clock)."""

    model_config = ConfigDict(frozen=True)

    store: str
    now: datetime
    queues: list[QueueView]
    workers: list[WorkerView]
    throughput: Throughput


def rates(counts: Sequence[FinishedCounts | Bucket], window_seconds: float) -> Rates:
    succeeded = sum(c.succeeded for c in counts)
    failed = sum(c.failed for c in counts)
    cancelled = sum(c.cancelled for c in counts)
    decided = succeeded + failed
    return Rates(
        succeeded=succeeded,
        failed=failed,
        cancelled=cancelled,
        per_minute=(succeeded + failed + cancelled) * 60 / window_seconds,
        failure_rate=failed / decided if decided else None,
    )


def buckets(counts: Sequence[FinishedCounts], now: datetime, view: ViewSettings) -> list[Bucket]:
    """One bucket per ``bucket_seconds`` from the window's start to the one holding
    ``now``, summed over queues (the store's buckets start on the same boundaries)."""
    width = view.bucket_seconds
    last = int(now.timestamp()) // width * width
    starts = [last - width * i for i in range(view.window_seconds // width, -1, -1)]
    by_start: dict[int, dict[str, int]] = {start: {} for start in starts}
    for c in counts:
        entry = by_start.get(int(c.start.timestamp()))
        if entry is None:
            continue  # a bucket the store saw begin a moment before this clock's window
        for name in ("succeeded", "failed", "cancelled"):
            entry[name] = entry.get(name, 0) + getattr(c, name)
    return [
        Bucket(start=datetime.fromtimestamp(start, now.tzinfo), **by_start[start])
        for start in starts
    ]


def worker_view(beat: WorkerHeartbeat, now: datetime, view: ViewSettings) -> WorkerView:
    age = max(0.0, (now - beat.last_seen).total_seconds()) if beat.last_seen else 0.0
    slots = [
        WorkerSlots(queue=queue, total=total, busy=busy, free=max(0, total - busy))
        for queue, (total, busy) in sorted(beat.queues.items())
    ]
    return WorkerView(
        worker_id=beat.worker_id,
        hostname=beat.hostname,
        pid=beat.pid,
        started_at=beat.started_at,
        last_seen=beat.last_seen,
        heartbeat_age_seconds=round(age, 1),
        draining=beat.draining,
        stale=age > view.stale_after_seconds,
        slots=slots,
        slots_total=sum(s.total for s in slots),
        slots_busy=sum(s.busy for s in slots),
        slots_free=sum(s.free for s in slots),
    )


async def overview(app: App, view: ViewSettings) -> Overview:
    """One consistent look at the fleet: four reads, run side by side."""
    now, stats, beats, finished = await asyncio.gather(
        app.now(),
        app.queues(),
        app.workers(ttl_seconds=view.forget_after_seconds),
        app.finished(
            timedelta(seconds=view.window_seconds), timedelta(seconds=view.bucket_seconds)
        ),
    )
    chart = buckets(finished, now, view)
    window = view.window_seconds
    queues = [
        queue_view(s, rates([c for c in finished if c.queue == s.queue], window)) for s in stats
    ]
    return Overview(
        store=app.location,
        now=now,
        queues=queues,
        workers=[worker_view(beat, now, view) for beat in beats],
        throughput=Throughput(
            window_seconds=window,
            bucket_seconds=view.bucket_seconds,
            buckets=chart,
            totals=rates(finished, window),
        ),
    )


class JobFilter(BaseModel):
    """A job listing as a query string asks for it: ``queue``, ``state`` (repeatable),
    ``func``, ``after`` (the last id of the previous page) and ``limit``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    queue: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    states: list[JobState] = Field(default_factory=list)
    func: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    after: Annotated[int, Field(ge=1, le=2**63 - 1)] | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 50

    @classmethod
    def from_query(cls, query: Mapping[str, Sequence[str]], default_limit: int) -> JobFilter:
        """From ``{name: [values]}``; empty values mean "any". One clear line
        (:class:`InvalidSettingsError`) for an unknown name or a bad value."""
        unknown = sorted(set(query) - {"queue", "state", "func", "after", "limit"})
        if unknown:
            raise InvalidSettingsError(f"unknown filter {unknown[0]!r} (use queue, state, func)")
        data: dict[str, object] = {"limit": default_limit}
        for name in ("queue", "func", "after", "limit"):
            values = [v.strip() for v in query.get(name, ()) if v.strip()]
            if len(values) > 1:
                raise InvalidSettingsError(f"{name} is given {len(values)} times; give it once")
            if values:
                data[name] = values[0]
        data["states"] = [v.strip() for v in query.get("state", ()) if v.strip()]
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidSettingsError(describe_validation_error(exc, "job filter")) from None

    def query(self, **changes: object) -> dict[str, str | list[str]]:
        """This filter as query parameters (for links), with ``changes`` applied."""
        out: dict[str, str | list[str]] = {}
        values = {**self.model_dump(), **changes}
        for name in ("queue", "func", "after"):
            if values[name] is not None:
                out[name] = str(values[name])
        if values["states"]:
            out["state"] = [JobState(s).value for s in values["states"]]
        return out


class JobPage(BaseModel):
    """One page of a listing; ``next_after`` is the ``after`` of the next, older page."""

    model_config = ConfigDict(frozen=True)

    filter: JobFilter
    jobs: list[JobSummary]
    next_after: JobId | None


async def listing(app: App, wanted: JobFilter) -> JobPage:
    """A page of summaries, asking for one more row than shown to know if more follow."""
    found = await app.summaries(
        queue=wanted.queue,
        states=wanted.states or None,
        func=wanted.func,
        after_id=wanted.after,
        limit=wanted.limit + 1,
    )
    shown = found[: wanted.limit]
    more = len(found) > wanted.limit
    return JobPage(filter=wanted, jobs=shown, next_after=shown[-1].id if more else None)


class Timings(BaseModel):
    """How long the job waited for a slot and how long its latest attempt ran."""

    model_config = ConfigDict(frozen=True)

    waited_seconds: float | None
    """From when it was due (its schedule, or its creation) to its latest start."""
    ran_seconds: float | None
    """From its latest start to its end (or to now while it runs)."""


class JobDetail(BaseModel):
    model_config = ConfigDict(frozen=True)

    job: QueuedJob
    timings: Timings
    now: datetime


def timings(job: QueuedJob, now: datetime) -> Timings:
    due = max(job.created_at, job.scheduled_at) if job.scheduled_at else job.created_at
    waited = None
    ran = None
    if job.started_at is not None:
        waited = max(0.0, (job.started_at - due).total_seconds())
        end = job.completed_at or (now if job.state is JobState.RUNNING else None)
        if end is not None:
            ran = max(0.0, (end - job.started_at).total_seconds())
    return Timings(waited_seconds=waited, ran_seconds=ran)


async def job_detail(app: App, job_id: int) -> JobDetail:
    job, now = await asyncio.gather(app.get(job_id), app.now())
    return JobDetail(job=job, timings=timings(job, now), now=now)
