"""SQLite plumbing under :class:`~slotfleet.store.sqlite.SQLiteStore`: the connection,
explicit write transactions, migrations and row decoding. No verbs live here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from slotfleet.models import (
    InvalidSettingsError,
    QueuePause,
    WorkerHeartbeat,
)
from slotfleet.models.claimed import CLAIMED_COLUMNS, ClaimedJob
from slotfleet.store import sqlite_sql as sql
from slotfleet.store.rows import dump_json, job_from_record, migration_scripts

if TYPE_CHECKING:  # pydantic models, built off the worker's claim-run-report path
    from slotfleet.models.jobs import QueuedJob

T = TypeVar("T")

_JSON_COLUMNS = ("kwargs", "retry", "meta", "result", "errors")
_TIME_COLUMNS = (
    "scheduled_at",
    "lease_expires_at",
    "cancel_requested_at",
    "created_at",
    "started_at",
    "completed_at",
)


_Transaction = Callable[[sqlite3.Connection], T]


def sqlite_path(dsn: str) -> str:
    """The file path in ``sqlite:///relative.db`` or ``sqlite:////absolute.db``."""
    prefix = "sqlite:///"
    if not dsn.startswith(prefix) or len(dsn) == len(prefix):
        raise InvalidSettingsError(
            f"invalid SQLite DSN {dsn!r} (use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db)"
        )
    return dsn[len(prefix) :]


def epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def job_row(row: sqlite3.Row) -> QueuedJob:
    record: dict[str, Any] = dict(zip(row.keys(), row, strict=True))
    for name in _JSON_COLUMNS:
        if record[name] is not None:
            record[name] = json.loads(record[name])
    for name in _TIME_COLUMNS:
        if record[name] is not None:
            record[name] = datetime.fromtimestamp(record[name], UTC)
    return job_from_record(record)


_CLAIMED_JSON = frozenset({"kwargs", "retry", "meta", "errors"})
_CLAIMED_TIMES = frozenset(_TIME_COLUMNS)


def claimed_row(row: sqlite3.Row) -> ClaimedJob:
    """A claimed job from a row (JSON decoded, times as UTC datetimes), unvalidated: the
    row was checked at enqueue. Raises ``ValueError``/``OverflowError`` for a value that
    cannot be represented (see ``rows.UNDECODABLE``)."""
    values: list[Any] = []
    for name in CLAIMED_COLUMNS:
        value = row[name]
        if value is not None:
            if name in _CLAIMED_JSON:
                value = {} if value == "{}" else [] if value == "[]" else json.loads(value)
            elif name in _CLAIMED_TIMES:
                value = datetime.fromtimestamp(value, UTC)
        values.append(value)
    return ClaimedJob.from_values(values)


def worker_row(row: sqlite3.Row) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id=row["worker_id"],
        hostname=row["hostname"],
        pid=row["pid"],
        queues={k: (int(v[0]), int(v[1])) for k, v in json.loads(row["queues"]).items()},
        started_at=datetime.fromtimestamp(row["started_at"], UTC),
        last_seen=datetime.fromtimestamp(row["last_seen"], UTC),
        draining=bool(row["draining"]),
        retiring=row["retiring"],
    )


def pause_row(row: sqlite3.Row) -> QueuePause:
    resume_at = row["resume_at"]
    return QueuePause(
        queue=row["queue"],
        paused_at=datetime.fromtimestamp(row["paused_at"], UTC),
        resume_at=None if resume_at is None else datetime.fromtimestamp(resume_at, UTC),
    )


def insert_jobs(
    conn: sqlite3.Connection, rows: list[dict[str, Any]], by_key: dict[str, QueuedJob]
) -> list[QueuedJob]:
    """Insert job ``rows`` (from ``rows.job_values``) in input order and return them as
    stored. A row whose ``unique_key`` a non-terminal job holds (stored already, or in
    ``by_key``: earlier in the same batch) is not inserted; that job takes its place.
    ``by_key`` is updated, so a batch written in several transactions keeps deduplicating."""
    now = time.time()
    out = []
    for values in rows:
        key = values["unique_key"]
        if key is not None:
            if key not in by_key:
                found = conn.execute(sql.FIND_ACTIVE_BY_KEY, {"unique_key": key}).fetchone()
                if found is not None:
                    by_key[key] = job_row(found)
            if key in by_key:
                out.append(by_key[key])
                continue
        params = {
            **values,
            "kwargs": dump_json(values["kwargs"]),
            "retry": dump_json(values["retry"]),
            "meta": dump_json(values["meta"]),
            "scheduled_at": now
            if values["scheduled_at"] is None
            else epoch(values["scheduled_at"]),
            "now": now,
        }
        job = job_row(conn.execute(sql.INSERT_JOB, params).fetchone())
        if key is not None:
            by_key[key] = job
        out.append(job)
    return out


def write(conn: sqlite3.Connection, body: _Transaction[T]) -> T:
    """Run ``body`` under the database write lock, committing on success."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def split_script(script: str) -> list[str]:
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in current.splitlines()
    ):
        statements.append(current.strip())
    return statements


def connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, busy timeout.

    A missing directory is a settings mistake, not an outage: it is refused at once
    rather than retried like an unreachable server.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InvalidSettingsError(f"the SQLite file's directory {folder} does not exist")
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Apply missing migrations under the write lock (concurrent openers wait)."""

    def body(conn: sqlite3.Connection) -> None:
        conn.execute(sql.MIGRATIONS_TABLE)
        applied = {row[0] for row in conn.execute(sql.APPLIED_VERSIONS)}
        for version, name, script in migration_scripts("sqlite"):
            if version in applied:
                continue
            for statement in split_script(script):
                conn.execute(statement)
            conn.execute(
                sql.RECORD_MIGRATION, {"version": version, "name": name, "now": time.time()}
            )

    write(conn, body)


def data_version(conn: sqlite3.Connection) -> int:
    """The file's data version: it changes when another connection commits."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def ready_exists(conn: sqlite3.Connection, queue: str) -> bool:
    """Whether ``queue`` has a job ready now (a read: never waits for the write lock)."""
    return (
        conn.execute(sql.READY_EXISTS, {"queue": queue, "now": time.time()}).fetchone() is not None
    )
