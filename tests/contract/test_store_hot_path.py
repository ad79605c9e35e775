"""The worker's hot path on PostgreSQL (issue 14): bulk enqueue with COPY keeps the
INSERT's semantics, and every statement a draining worker runs keeps its plan whether
the table was analyzed while empty or while full (a queue table is often analyzed while
empty, and autovacuum analyzes it again mid-drain).

Plans are read with EXPLAIN of the store's own statements; speed is for ``bench/``."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import psycopg
import pytest

from slotfleet.models import Job, JobState, RetryPolicy
from slotfleet.store import open_store, postgres_sql
from slotfleet.store.postgres import COPY_MIN_JOBS, PostgresStore

pytestmark = pytest.mark.postgres


def job(**changes: Any) -> Job:
    return Job.model_validate({"func": "tests.tasks:add", **changes})


async def test_copy_enqueue_keeps_order_priorities_and_stored_values(postgres_dsn: str) -> None:
    """A batch past COPY_MIN_JOBS goes through COPY: ids follow input order, priorities
    and schedules keep their meaning, and each row reads back as the INSERT path writes
    it (kwargs with floats and backslashes, meta, retry policy, timeout)."""
    store = open_store(postgres_dsn)
    assert isinstance(store, PostgresStore)
    await store.open()
    try:
        odd = {"f": 1e16, "tiny": 5e-324, "s": 'a\\b\t"c"\n', "u": "é✓", "n": [None, True]}
        special = job(
            kwargs=odd,
            meta={"m": "x\\y"},
            retry=RetryPolicy(base=2, factor=3, cap=60, jitter=0),
            max_attempts=4,
            timeout=2.5,
        )
        later = job(scheduled_at="2999-01-01T00:00:00+00:00")
        batch = [job(kwargs={"i": i}, priority=i % 3) for i in range(COPY_MIN_JOBS)]
        batch[5], batch[6] = special, later
        ids = await store.enqueue_ids(batch)
        assert ids == sorted(ids)
        assert len(set(ids)) == len(batch)
        [reference] = await store.enqueue([special])  # the INSERT path, for comparison
        copied = await store.get(ids[5])
        assert copied is not None
        fields = {"id", "created_at", "scheduled_at"}
        assert copied.model_dump(exclude=fields) == reference.model_dump(exclude=fields)
        assert copied.kwargs == odd
        scheduled = await store.get(ids[6])
        assert scheduled is not None
        assert str(scheduled.scheduled_at).startswith("2999-")
        first = await store.get(ids[0])
        assert first is not None
        assert first.scheduled_at == first.created_at  # now(), one clock

        claimed = await store.fetch("default", "w", 1000, 30.0, claim="c")
        assert ids[6] not in {j.id for j in claimed}  # not before its time
        order = [(-j.priority, j.id) for j in claimed if j.id != reference.id]
        assert order == sorted(order)  # priority first, then FIFO by id (= input order)
        assert all(j.state is JobState.RUNNING for j in claimed)
    finally:
        await store.close()


async def test_copy_enqueue_wakes_a_waiting_worker(postgres_dsn: str) -> None:
    """COPY fires the statement-level insert trigger: NOTIFY reaches an idle worker."""
    waiter, producer = open_store(postgres_dsn), open_store(postgres_dsn)
    await waiter.open()
    await producer.open()
    try:
        await waiter.wait_for_jobs("default", 0.01)  # starts listening
        started = time.monotonic()
        task = asyncio.create_task(waiter.wait_for_jobs("default", 10))
        await asyncio.sleep(0.2)
        await producer.enqueue_ids([job() for _ in range(COPY_MIN_JOBS)])
        await asyncio.wait_for(task, 10)
        assert time.monotonic() - started < 5
    finally:
        await waiter.close()
        await producer.close()


_BACKLOG = """
INSERT INTO slotfleet_jobs (
    queue, func, state, priority, lease_owner, lease_token, lease_expires_at, started_at,
    completed_at, attempts
)
SELECT 'default', 'tests.tasks:add',
       CASE WHEN g <= 60000 THEN 'succeeded' WHEN g <= 60200 THEN 'running' ELSE 'pending' END,
       (g % 3)::smallint,
       CASE WHEN g > 60000 AND g <= 60200 THEN 'w' END,
       CASE WHEN g > 60000 AND g <= 60200 THEN 't' || (g / 100) END,
       CASE WHEN g > 60000 AND g <= 60200 THEN now() + interval '1 minute' END,
       CASE WHEN g <= 60200 THEN now() END,
       CASE WHEN g <= 60000 THEN now() END,
       CASE WHEN g <= 60200 THEN 1 ELSE 0 END
FROM generate_series(1, 100000) AS g
"""


def _statements() -> list[tuple[str, str, dict[str, Any], list[str]]]:
    """(name, SQL, parameters, index names one of which the plan must use)."""
    completions = json.dumps(
        [
            {"id": i, "token": f"t{i // 100}", "outcome": "succeeded", "result": None}
            for i in range(60001, 60101)
        ]
    )
    held = list(range(60101, 60201))
    return [
        (
            "fetch",
            postgres_sql.FETCH,
            {"queue": "default", "worker_id": "w", "claim": "c", "limit": 100,
             "lease_seconds": 15.0},
            ["slotfleet_jobs_fetch"],
        ),
        (
            "complete",
            postgres_sql.COMPLETE,
            {"completions": completions},
            ["slotfleet_jobs_pkey", "slotfleet_jobs_running_lease", "slotfleet_jobs_running_owner"],
        ),
        (
            "heartbeat",
            postgres_sql.HEARTBEAT,
            {"worker_id": "w", "hostname": "h", "pid": 1, "queues": "{}", "started_at": None,
             "draining": False, "retiring": None, "lease_seconds": 15.0, "ids": held,
             "tokens": [f"t{i // 100}" for i in held]},
            ["slotfleet_jobs_pkey", "slotfleet_jobs_running_lease", "slotfleet_jobs_running_owner"],
        ),
        ("recover", postgres_sql.RECOVER_EXPIRED, {}, ["slotfleet_jobs_running_lease"]),
    ]  # fmt: skip


@pytest.mark.parametrize("analyzed", ["empty", "full"])
async def test_drain_statements_keep_their_plans_on_100k_rows(
    postgres_dsn: str, analyzed: str
) -> None:
    """Fetch, completion, lease renewal and lease recovery each read a bounded number of
    rows through an index, with statistics from an empty table (stale: the backlog came
    after ANALYZE) or from the full one; none scans the table or sorts the backlog. The
    plans are run (EXPLAIN ANALYZE, rolled back) so the rows and buffers read are the
    real ones."""
    store = open_store(postgres_dsn)
    await store.open()
    await store.close()
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        if analyzed == "empty":
            await conn.execute("ANALYZE slotfleet_jobs")
        await conn.execute(_BACKLOG)
        if analyzed == "full":
            await conn.execute("ANALYZE slotfleet_jobs")
        for name, statement, params, indexes in _statements():
            await conn.execute("BEGIN")
            cur = await conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
            plan = "\n".join(str(row[0]) for row in await cur.fetchall())
            await conn.execute("ROLLBACK")
            scans = [line for line in plan.splitlines() if "Scan" in line]
            used = [index for index in indexes if any(index in line for line in scans)]
            assert used, (name, analyzed, plan)
            assert "Seq Scan on slotfleet_jobs" not in plan, (name, analyzed, plan)
            assert "Sort" not in plan.split("CTE notified")[0], (name, analyzed, plan)
            hits = sum(
                int(part.split("=")[1].split()[0])
                for line in plan.splitlines()
                if line.strip().startswith("Buffers: shared")
                for part in line.split()
                if part.startswith(("hit=", "read="))
            )
            # The whole plan's buffers, summed over its nodes (so counted more than once):
            # a scan of the backlog would be thousands of pages; 100 rows are a few hundred.
            assert hits < 20_000, (name, analyzed, hits, plan)
