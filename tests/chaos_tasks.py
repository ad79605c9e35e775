"""Job functions for the chaos suite, importable as ``tests.chaos_tasks:<name>``.

:func:`record` writes one row per execution into the ``executions`` side table of the
job store's own PostgreSQL database (``$SLOTFLEET_DSN``) before doing its "work", so
the chaos tests can count how often each job really ran and on which worker
(``$SLOTFLEET_WORKER_ID``, set by the test for each worker process).

The side-table write survives a database restart: on a connection error the body
reconnects and retries with the same execution id (``ON CONFLICT DO NOTHING``), so one
execution is recorded exactly once even if an insert's reply was lost.

What this module is not: it knows nothing about the store's schema and never touches
the job tables.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import psycopg

EXECUTIONS_TABLE = """
CREATE TABLE IF NOT EXISTS executions (
    execution uuid PRIMARY KEY,
    token bigint NOT NULL,
    worker text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

#: Seconds a body keeps retrying its side-table write while the database is down.
RECORD_DEADLINE_SECONDS = 60.0

_conn: psycopg.AsyncConnection[Any] | None = None
_lock: asyncio.Lock | None = None


async def _connection() -> psycopg.AsyncConnection[Any]:
    global _conn, _lock
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        if _conn is None or _conn.closed:
            _conn = await psycopg.AsyncConnection.connect(
                os.environ["SLOTFLEET_DSN"], autocommit=True, connect_timeout=5
            )
        return _conn


async def _insert(execution: str, token: int, worker: str) -> None:
    global _conn
    deadline = time.monotonic() + RECORD_DEADLINE_SECONDS
    while True:
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            conn = await _connection()
            await conn.execute(
                "INSERT INTO executions (execution, token, worker) VALUES (%s, %s, %s) "
                "ON CONFLICT (execution) DO NOTHING",
                (execution, token, worker),
            )
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            if conn is not None and _conn is conn:
                _conn = None
                await conn.close()
            await asyncio.sleep(0.2)


async def record(token: int, seconds: float = 0.0) -> dict[str, Any]:
    """Record this execution of job ``token``, sleep ``seconds``, return who ran it."""
    worker = os.environ.get("SLOTFLEET_WORKER_ID", f"pid-{os.getpid()}")
    await _insert(str(uuid.uuid4()), token, worker)
    if seconds:
        await asyncio.sleep(seconds)
    return {"token": token, "worker": worker}
