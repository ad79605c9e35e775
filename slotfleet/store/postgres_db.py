"""PostgreSQL plumbing under :class:`~slotfleet.store.postgres.PostgresStore`: DSN
parsing, the pool's connection set-up and check, batch parameters and row
decoding. No verbs live here.
"""

from __future__ import annotations

import json
import select
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow
from psycopg.types.json import set_json_loads

from slotfleet.models import (
    Completion,
    InvalidSettingsError,
    QueuePause,
    StoreError,
    WorkerHeartbeat,
)
from slotfleet.store.dsn import scrub
from slotfleet.store.rows import error_json, job_from_record, one_line

if TYPE_CHECKING:  # pydantic models, built off the worker's claim-run-report path
    from slotfleet.models.jobs import Job, QueuedJob, RetryPolicy

Conn = psycopg.AsyncConnection[DictRow]

_TIME_COLUMNS = frozenset(
    {
        "scheduled_at",
        "lease_expires_at",
        "cancel_requested_at",
        "created_at",
        "started_at",
        "completed_at",
    }
)


def utc(value: Any) -> Any:
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def job_row(row: DictRow) -> QueuedJob:
    """The job of a row of ``slotfleet_jobs`` columns (extra columns are ignored); the
    row's times are converted to UTC in place."""
    for name in _TIME_COLUMNS:
        value = row[name]
        if value is not None:
            row[name] = value.astimezone(UTC)
    return job_from_record(row)


def pause_row(row: DictRow) -> QueuePause:
    return QueuePause(
        queue=row["queue"], paused_at=utc(row["paused_at"]), resume_at=utc(row["resume_at"])
    )


def load_json(data: str | bytes) -> Any:
    """json/jsonb column values, with ``{}`` and ``[]`` (most of a job row's json
    columns: empty meta, no errors) decoded without the parser."""
    if data == b"{}":
        return {}
    if data == b"[]":
        return []
    return json.loads(data if isinstance(data, str) else data.decode())


async def configure(conn: Conn) -> None:
    """Pool connection set-up: the json loader above for this connection only."""
    set_json_loads(load_json, conn)


def worker_row(row: DictRow) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id=row["worker_id"],
        hostname=row["hostname"],
        pid=row["pid"],
        queues={k: (int(v[0]), int(v[1])) for k, v in row["queues"].items()},
        started_at=utc(row["started_at"]),
        last_seen=utc(row["last_seen"]),
        draining=row["draining"],
        retiring=row["retiring"],
    )


async def check_idle(conn: Conn) -> None:
    """Pool check on checkout, free in the common case: an idle autocommit connection
    has nothing to read unless the server wrote to it (typically a FATAL before closing
    it, as on a restart). Only then pay a round trip; if it fails, the pool discards the
    connection and hands out another instead of failing the caller's statement."""
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        await conn.execute("")


def parse_address(dsn: str) -> tuple[str, dict[str, Any]]:
    """``host:port`` for messages, and the parsed connection parameters."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise InvalidSettingsError(f"invalid PostgreSQL DSN: {scrub(one_line(exc), dsn)}") from exc
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    return f"{host}:{params.get('port') or 5432}", params


def enqueue_document(jobs: Sequence[Job]) -> str:
    """The batch as one JSON array of objects, expanded by ``json_to_recordset`` on the
    server: one text parameter instead of a text-format array per column (whose
    per-element escaping cost more than the statement). kwargs and meta land in ``json``
    columns as the exact text written here, so floats read back exactly."""
    return json.dumps(
        [
            {
                "queue": job.queue,
                "func": job.func,
                "kwargs": job.kwargs,
                "priority": job.priority,
                "scheduled_at": None if job.scheduled_at is None else job.scheduled_at.isoformat(),
                "max_attempts": job.max_attempts,
                "retry": job.retry.model_dump(mode="json"),
                "timeout": job.timeout,
                "unique_key": job.unique_key,
                "meta": job.meta,
            }
            for job in jobs
        ],
        separators=(",", ":"),
    )


def copy_rows(jobs: Sequence[Job], ids: Sequence[int], now: datetime) -> str:
    """The rows of ``sql.COPY_JOBS`` in COPY's text format, job ``i`` under ``ids[i]``;
    ``scheduled_at`` unset means ``now`` (the transaction's now(), as the default).

    JSON is written as ``json.dumps`` writes it (ASCII, as the INSERT's document did), so
    only backslashes need COPY's escaping; queue names and import paths hold none of
    COPY's special characters (the models' patterns). The columns every job of a batch
    usually shares (queue, function, priority, attempts, retry policy, timeout) are
    formatted once per distinct combination."""
    now_text = now.isoformat()
    shared: dict[tuple[Any, ...], str] = {}
    # By value (a frozen model hashes its fields): every Job has its own RetryPolicy
    # instance, and encoding one per job was half of a batch's Python time.
    retries: dict[RetryPolicy, str] = {}
    lines = []
    for job_id, job in zip(ids, jobs, strict=True):
        retry = retries.get(job.retry)
        if retry is None:
            retry = _copy_json(job.retry.model_dump(mode="json"))
            retries[job.retry] = retry
        key = (job.queue, job.func, job.priority, job.max_attempts, retry, job.timeout)
        middle = shared.get(key)
        if middle is None:
            timeout = "\\N" if job.timeout is None else repr(float(job.timeout))
            fields = (job.queue, job.func, job.priority, job.max_attempts, retry, timeout)
            middle = "\t".join(str(field) for field in fields)
            shared[key] = middle
        kwargs = _copy_json(job.kwargs) if job.kwargs else "{}"
        meta = _copy_json(job.meta) if job.meta else "{}"
        when = now_text if job.scheduled_at is None else job.scheduled_at.isoformat()
        lines.append(f"{job_id}\t{middle}\t{kwargs}\t{meta}\t{when}\n")
    return "".join(lines)


def _copy_json(value: Any) -> str:
    """``value`` as JSON text escaped for COPY's text format (ASCII JSON has no control
    characters, so doubling backslashes is all it needs)."""
    return json.dumps(value, separators=(",", ":")).replace("\\", "\\\\")


def place_enqueued(jobs: Sequence[Job], rows: Sequence[DictRow]) -> dict[int, QueuedJob]:
    """Input position -> job, from the rows ``ENQUEUE`` returned: the inserted ones
    (``new``) and the stored non-terminal jobs holding one of the batch's keys. Ids follow
    input order among jobs without a key; a key inserted here wins over a stored row of
    the statement's snapshot that has since stopped holding it. Positions of keys found
    in neither are left out (a concurrent enqueue committed them after the snapshot)."""
    inserted = [row for row in rows if row["new"]]
    by_key = {row["unique_key"]: job_row(row) for row in rows if not row["new"]}
    unkeyed: list[QueuedJob] = []
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
    return placed


def completion_document(batch: Sequence[Completion]) -> str:
    """The completions as one JSON array of objects (see :func:`enqueue_document`). A
    result the executor already encoded (``result_json``) is written as that text, not
    decoded and encoded again."""
    items = []
    for c in batch:
        item = _ENCODE(
            {
                "id": c.job_id,
                "token": c.token,
                "outcome": c.outcome.value,
                "error": error_json(c),
                "retry_delay": c.retry_delay,
                "meta": c.meta,
            }
        )
        if c.result_json is not None or c.result is not None:
            item = f'{item[:-1]},"result":{c.result_text()}}}'
        items.append(item)
    return "[" + ",".join(items) + "]"


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
