"""``fleet_snapshot`` on PostgreSQL: a constant number of statements whatever the number
of queues (counted by pg_stat_statements, as the server saw them), and plans that stay
bounded on a large table.

What ``fleet_snapshot`` returns is the contract suite's (``test_store_fleet.py``); speed
is for ``bench/store_reads.py``.
"""

from __future__ import annotations

import psycopg
import pytest

from slotfleet.models import Job
from slotfleet.store import open_store, postgres_reads_sql
from tests.fixtures.postgres import PostgresServer

pytestmark = pytest.mark.postgres

#: Statements this database ran since the last reset, the reset and this count excepted.
_COUNT = """
SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND query NOT ILIKE '%pg_stat_statements%'
"""


async def test_fleet_snapshot_runs_the_same_statements_for_1_10_and_200_queues(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    """Idle queues cost two statements (live workers; counts and pauses), queues with
    running jobs four (plus leases and cancel requests), for 1, 10 or 200 queues; the
    per-queue calls it replaces cost three to four per queue."""
    assert postgres_server.stat_statements, "pg_stat_statements is not installed"
    store = open_store(postgres_dsn)
    await store.open()
    busy = [f"busy-{i}" for i in range(200)]
    idle = [f"idle-{i}" for i in range(200)]
    jobs = [Job(func="tests.tasks:add", queue=q) for q in [*busy, *idle]]
    await store.enqueue(jobs)
    for queue in busy:
        [claimed] = await store.fetch(queue, f"w-{queue}", 1, 60.0, claim="c")
        await store.request_cancel(claimed.id)
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

        async def statements(queues: list[str]) -> int:
            await conn.execute("SELECT pg_stat_statements_reset()")
            snapshot = await store.fleet_snapshot(queues)
            assert list(snapshot.queues) == queues
            row = await (await conn.execute(_COUNT)).fetchone()
            assert row is not None
            return int(row[0])

        try:
            counts = {n: await statements(busy[:n]) for n in (1, 10, 200)}
            assert counts == {1: 4, 10: 4, 200: 4}
            counts = {n: await statements(idle[:n]) for n in (1, 10, 200)}
            assert counts == {1: 2, 10: 2, 200: 2}
            assert await statements([]) == 1  # the live workers only
            snapshot = await store.fleet_snapshot(busy)  # and each queue got its reads
            assert all(len(q.cancel_requests) == 1 for q in snapshot.queues.values())
            assert all(q.stats.running == 1 for q in snapshot.queues.values())
        finally:
            await store.close()


_TABLE = """
INSERT INTO slotfleet_jobs (
    queue, func, state, lease_owner, lease_token, lease_expires_at, started_at, completed_at,
    attempts, cancel_requested_at
)
SELECT 'q' || (g % 1000), 'tests.tasks:add',
       CASE WHEN g <= 90000 THEN 'succeeded' WHEN g <= 90400 THEN 'running' ELSE 'pending' END,
       CASE WHEN g > 90000 AND g <= 90400 THEN 'w' || (g % 50) END,
       CASE WHEN g > 90000 AND g <= 90400 THEN 't' END,
       CASE WHEN g > 90000 AND g <= 90400 THEN now() + interval '1 minute' END,
       CASE WHEN g <= 90400 THEN now() END,
       CASE WHEN g <= 90000 THEN now() END,
       CASE WHEN g <= 90400 THEN 1 ELSE 0 END,
       CASE WHEN g > 90000 AND g <= 90400 AND g % 7 = 0 THEN now() END
FROM generate_series(1, 100000) AS g
"""


@pytest.mark.parametrize("analyzed", ["empty", "full"])
async def test_fleet_snapshot_plans_on_100k_rows(postgres_dsn: str, analyzed: str) -> None:
    """On 100,000 jobs of 1,000 queues (400 running), asking for 200 queues: the leases
    and cancel requests are read from a partial index of running jobs (never a scan of
    the table), and the counts read the table at most once for all queues (no loop of a
    scan per queue), with statistics from an empty table or from the full one."""
    store = open_store(postgres_dsn)
    await store.open()
    await store.close()
    params = {"queues": [f"q{i}" for i in range(0, 1000, 5)]}
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        if analyzed == "empty":
            await conn.execute("ANALYZE slotfleet_jobs")
        await conn.execute(_TABLE)
        if analyzed == "full":
            await conn.execute("ANALYZE slotfleet_jobs")

        async def plan(statement: str) -> str:
            cur = await conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
            return "\n".join(str(row[0]) for row in await cur.fetchall())

        for name in ("FLEET_RUNNING", "FLEET_CANCELS"):
            text = await plan(getattr(postgres_reads_sql, name))
            # Either partial index of running jobs (owner or lease): a few hundred rows.
            assert "Scan on slotfleet_jobs_running_" in text.replace("Scan using", "Scan on"), (
                name,
                analyzed,
                text,
            )
            assert "Seq Scan on slotfleet_jobs" not in text, (name, analyzed, text)
        text = await plan(postgres_reads_sql.FLEET_COUNTS)
        scans = [line for line in text.splitlines() if "on slotfleet_jobs" in line]
        assert len(scans) == 1, (analyzed, text)
        assert "loops=1)" in scans[0], (analyzed, text)
