"""What both store backends share: row <-> model conversion, migrations on disk,
stats assembly and error text.

Each backend turns its driver's row into a plain dict of Python values (datetimes,
decoded JSON); :func:`job_from_record` validates it into a :class:`QueuedJob`. This
module runs no SQL and knows no driver.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any

from slotfleet.models import (
    Completion,
    FleetSnapshot,
    JobState,
    QueuePause,
    QueueSnapshot,
    QueueStats,
    WorkerHeartbeat,
)
from slotfleet.models.values import TRUSTED_ROW

if TYPE_CHECKING:  # pydantic models, built off the worker's claim-run-report path
    from slotfleet.models.jobs import FinishedCounts, Job, JobSummary, QueuedJob

#: Job columns in table order (``lease_token`` was added by migration 0003); every
#: backend's job table has exactly these.
JOB_COLUMNS = (
    "id",
    "queue",
    "func",
    "kwargs",
    "priority",
    "scheduled_at",
    "max_attempts",
    "retry",
    "timeout",
    "unique_key",
    "meta",
    "state",
    "attempts",
    "result",
    "errors",
    "lease_owner",
    "lease_expires_at",
    "cancel_requested_at",
    "created_at",
    "started_at",
    "completed_at",
    "lease_token",
    "claimed_by",
)

#: Columns of a :class:`JobSummary` read straight from the table (``last_error`` is
#: computed by each backend from ``errors``).
SUMMARY_COLUMNS = (
    "id",
    "queue",
    "func",
    "state",
    "priority",
    "attempts",
    "max_attempts",
    "created_at",
    "scheduled_at",
    "started_at",
    "completed_at",
    "claimed_by",
)

#: Every state, in the order a listing merges them (any order gives the same rows).
ALL_STATES = tuple(state.value for state in JobState)

READY_STATES = (JobState.PENDING.value, JobState.RETRYING.value)
ACTIVE_STATES = (JobState.PENDING.value, JobState.RUNNING.value, JobState.RETRYING.value)

#: Stats counters filled from per-state counts (``ready``/``scheduled`` come separately).
_STATE_FIELDS = ("running", "succeeded", "failed", "cancelled")


def job_from_record(record: Mapping[str, Any]) -> QueuedJob:
    """A validated :class:`QueuedJob` from a row already decoded to Python values."""
    from slotfleet.models.jobs import QueuedJob  # cached after the first call

    return QueuedJob.model_validate(
        {name: record[name] for name in JOB_COLUMNS}, context={TRUSTED_ROW: True}
    )


def dump_json(value: Any) -> str:
    """Compact JSON text as stored (models validated it is strict JSON already)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def job_values(job: Job) -> dict[str, Any]:
    """The user-given fields of ``job`` as storable Python values (JSON still decoded)."""
    return {
        "queue": job.queue,
        "func": job.func,
        "kwargs": job.kwargs,
        "priority": job.priority,
        "scheduled_at": job.scheduled_at,
        "max_attempts": job.max_attempts,
        "retry": job.retry.model_dump(mode="json"),
        "timeout": job.timeout,
        "unique_key": job.unique_key,
        "meta": job.meta,
    }


def dedupe_completions(completions: Sequence[Completion]) -> list[Completion]:
    """The first completion per job: a batch may name a job once."""
    seen: set[int] = set()
    kept = []
    for completion in completions:
        if completion.job_id not in seen:
            seen.add(completion.job_id)
            kept.append(completion)
    return kept


def error_json(completion: Completion) -> dict[str, Any] | None:
    """The attempt's error as stored, naming the worker that reports it."""
    if completion.error is None:
        return None
    data = completion.error.model_dump(mode="json")
    data["worker"] = data.get("worker") or completion.worker_id
    return data


def listing_states(
    *, queue: str | None, states: Sequence[JobState] | None, func: str | None
) -> list[str] | None:
    """The states a listing reads one by one, or ``None`` to read the table by id alone.

    A filtered listing is a backwards range scan per state of an index ending in
    ``(state, id)`` (``slotfleet_jobs_state_id``, ``..._queue_state_id``,
    ``..._func_state_id``), merged by id: unfiltered states are read as all six. With no
    filter at all the primary key alone is in listing order. An empty ``states`` is kept
    (empty): it matches nothing.
    """
    if states is None:
        return None if queue is None and func is None else list(ALL_STATES)
    return sorted({JobState(s).value for s in states})


def summary_from_record(record: Mapping[str, Any]) -> JobSummary:
    """A :class:`JobSummary` from a row already decoded to Python values."""
    from slotfleet.models.jobs import JobSummary

    return JobSummary.model_validate(record)


def finished_from_record(record: Mapping[str, Any]) -> FinishedCounts:
    """:class:`FinishedCounts` from ``{queue, start (epoch seconds), succeeded, failed,
    cancelled}``."""
    from slotfleet.models.jobs import FinishedCounts

    return FinishedCounts(
        queue=str(record["queue"]),
        start=datetime.fromtimestamp(float(record["start"]), UTC),
        succeeded=int(record["succeeded"] or 0),
        failed=int(record["failed"] or 0),
        cancelled=int(record["cancelled"] or 0),
    )


#: What decoding a row may raise when a value in it cannot be represented (a time outside
#: ``datetime``'s range, a field the models refuse): the backends fail such a row in
#: place instead of stranding the claim that read it.
UNDECODABLE: tuple[type[Exception], ...] = (ValueError, OverflowError, OSError)

#: Longest age a purge asks for, in seconds (about 317 years): nothing finished that long
#: ago, and larger values overflow the databases' interval types.
MAX_PURGE_SECONDS = 1e10


def unreadable_message(exc: BaseException) -> str:
    """The error recorded on a claimed row that could not be read back."""
    return f"the job's row cannot be read ({type(exc).__name__}: {one_line(exc)}); not run"


def purge_seconds(older_than: timedelta) -> float:
    """``older_than`` in seconds, within what both databases' time arithmetic takes."""
    return min(max(0.0, older_than.total_seconds()), MAX_PURGE_SECONDS)


def lease_expired_message(worker_id: str | None) -> str:
    return f"lease expired (worker {worker_id or 'unknown'} stopped heartbeating)"


def build_stats(
    job_counts: Iterable[Mapping[str, Any]],
    workers: Iterable[WorkerHeartbeat],
    queue: str | None,
    pauses: Iterable[QueuePause] = (),
) -> list[QueueStats]:
    """Per-queue stats from rows ``{queue, ready, scheduled, running, succeeded, failed,
    cancelled}``, live workers and the pauses in effect; queues known only from workers or
    pauses are included, and a named ``queue`` with none of them gets an all-zero entry."""
    data: dict[str, dict[str, Any]] = {}
    for row in job_counts:
        entry = data.setdefault(str(row["queue"]), {})
        for name in ("ready", "scheduled", *_STATE_FIELDS):
            entry[name] = entry.get(name, 0) + int(row[name] or 0)
    for beat in workers:
        for name, (total, busy) in beat.queues.items():
            if queue is not None and name != queue:
                continue
            entry = data.setdefault(name, {})
            entry["workers"] = entry.get("workers", 0) + 1
            entry["slots_total"] = entry.get("slots_total", 0) + int(total)
            entry["slots_busy"] = entry.get("slots_busy", 0) + int(busy)
    for pause in pauses:
        if queue is None or pause.queue == queue:
            data.setdefault(pause.queue, {}).update(paused=True, resume_at=pause.resume_at)
    if queue is not None and queue not in data:
        data[queue] = {}
    return [QueueStats(queue=name, **data[name]) for name in sorted(data)]


def build_snapshot(
    queues: Sequence[str],
    job_counts: Iterable[Mapping[str, Any]],
    workers: Sequence[WorkerHeartbeat],
    pauses: Iterable[QueuePause],
    running: Iterable[Mapping[str, Any]],
    cancels: Iterable[QueuedJob],
) -> FleetSnapshot:
    """A :class:`FleetSnapshot` of ``queues`` from one read of each part: job counts
    (rows as for :func:`build_stats`), live workers, pauses in effect, running jobs per
    ``{queue, lease_owner, running}`` and running jobs with a cancel request (by id).
    Every queue asked gets an entry; rows of queues not asked are ignored."""
    stats = {s.queue: s for s in build_stats(job_counts, workers, None, pauses)}
    leased: dict[str, dict[str, int]] = {}
    for row in running:
        leased.setdefault(str(row["queue"]), {})[str(row["lease_owner"])] = int(row["running"])
    cancelled: dict[str, list[QueuedJob]] = {}
    for job in sorted(cancels, key=lambda j: j.id):
        cancelled.setdefault(job.queue, []).append(job)
    return FleetSnapshot(
        queues={
            name: QueueSnapshot(
                stats=stats.get(name) or QueueStats(queue=name),
                cancel_requests=tuple(cancelled.get(name, ())),
                running_by_worker=leased.get(name, {}),
            )
            for name in dict.fromkeys(queues)
        },
        workers=tuple(workers),
    )


def cancel_requests_query(
    worker_id: str | None, queue: str | None, placeholder: Callable[[str], str]
) -> str:
    """Running jobs with a cancel request, optionally filtered; ``placeholder`` spells a
    named parameter in the backend's style (``%(name)s`` or ``:name``)."""
    query = (
        "SELECT * FROM slotfleet_jobs WHERE state = 'running' AND cancel_requested_at IS NOT NULL"
    )
    if worker_id is not None:
        query += f" AND lease_owner = {placeholder('worker_id')}"
    if queue is not None:
        query += f" AND queue = {placeholder('queue')}"
    return query + " ORDER BY id"


def migration_scripts(backend: str) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of ``migrations/<backend>/NNNN_name.sql``, in order."""
    folder = resources.files("slotfleet.store").joinpath("migrations", backend)
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        version = int(name.split("_", 1)[0])
        found.append((version, name.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    return sorted(found)


def one_line(exc: BaseException) -> str:
    """The driver's message on one line (libpq's messages span several)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
