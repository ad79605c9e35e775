"""PostgreSQL outages around worker processes, made deterministic.

The chaos run restarts PostgreSQL once at a moment chosen by progress; these tests pin
down the two cases that timing can hide: a worker that starts (or is replaced) while
the database is down, and running workers facing an outage longer than their lease.
In both, the workers must ride it out and serve once the database is back, and the
fault suite's ledger analysis (``tests/faults/analysis.py``) must find no job lost or
run twice and no completion landing on a later attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from slotfleet.models import Job, JobId, JobState, QueuedJob
from slotfleet.store import Store, open_store
from tests.faults.analysis import Bounds, Expect, analyse
from tests.faults.driver import outcome
from tests.faults.faultlog import Fault, FaultKind, FaultLog
from tests.faults.fleet import Fleet
from tests.faults.ledger import executions, read_events
from tests.fixtures.postgres import PostgresServer

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.timeout(120)]

QUEUE = "outage"


@pytest.fixture
def outage_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"outage_{uuid.uuid4().hex[:10]}"
    dsn = postgres_server.create_database(name)
    try:
        yield dsn
    finally:
        if postgres_server.pid is None:
            postgres_server.start()
        with contextlib.suppress(psycopg.Error):
            postgres_server.drop_database(name)


@pytest.fixture
async def client(outage_dsn: str) -> AsyncIterator[Store]:
    store = open_store(outage_dsn)
    await store.open()  # applies the migrations while the server is up
    yield store
    await store.close()


LEASE_SECONDS = 2.0


@pytest.fixture
def fleet(outage_dsn: str, tmp_path: Path) -> Iterator[Fleet]:
    ledger = tmp_path / "ledger.jsonl"
    ledger.touch()
    args = [
        "--queue", f"{QUEUE}:async:8",
        "--lease-seconds", str(LEASE_SECONDS),
        "--polling-interval", "0.2",
        "--log-level", "WARNING",
    ]  # fmt: skip
    fleet = Fleet(lambda _: outage_dsn, tmp_path, args, ledger, FaultLog())
    yield fleet
    fleet.cleanup()


def jobs(count: int, seconds: float) -> list[Job]:
    return [
        Job(
            func="tests.fault_tasks:work_async",
            queue=QUEUE,
            kwargs={"key": f"o-{i}", "behaviour": "succeed", "seconds": seconds},
            max_attempts=10,
        )
        for i in range(count)
    ]


async def assert_ledger_clean(store: Store, fleet: Fleet, count: int) -> None:
    """No job lost, none run twice at once, every completion on its own attempt."""
    events = read_events(fleet.ledger)
    report = analyse(
        "database outage",
        events=events,
        executions=executions(events),
        outcomes=[outcome(job) for job in await store.list_jobs(queue=QUEUE, limit=count + 1)],
        expects=[Expect(f"o-{i}", "succeed", JobState.SUCCEEDED) for i in range(count)],
        faults=fleet.faults,
        workers=fleet.pids,
        bounds=Bounds(
            lease=LEASE_SECONDS, heartbeat=LEASE_SECONDS / 3, grace=0.0, cancel_poll=1.0, margin=2.0
        ),
    )
    print(report.summary())
    assert not report.problems, report.summary()


async def wait_all(store: Store, ids: list[JobId], fleet: Fleet, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found: list[QueuedJob] = [j for j in [await store.get(i) for i in ids] if j]
        if all(j.state is JobState.SUCCEEDED for j in found) and len(found) == len(ids):
            return
        crashed = fleet.crashed()
        assert not crashed, "\n".join(
            f"worker {p.worker_id} exited {p.popen.returncode}:\n{p.tail()}" for p in crashed
        )
        assert time.monotonic() < deadline, {j.id: j.state.value for j in found}
        await asyncio.sleep(0.2)


def assert_drains_cleanly(fleet: Fleet) -> None:
    bad = fleet.stop_all(timeout=20)
    assert not bad, "\n".join(
        f"worker {p.worker_id} exited {p.popen.returncode}:\n{p.tail()}" for p in bad
    )


async def test_worker_started_while_postgres_is_down_waits_and_then_serves(
    postgres_server: PostgresServer, client: Store, fleet: Fleet
) -> None:
    """A replacement pod may start during a database failover: it must wait for the
    database, not exit (a crash here turns every outage into a crash loop)."""
    began = time.time()
    await asyncio.to_thread(postgres_server.stop)
    try:
        proc = fleet.start()
        await asyncio.sleep(4)
        assert proc.popen.poll() is None, (
            f"the worker exited {proc.popen.returncode} while the database was down:\n{proc.tail()}"
        )
    finally:
        await asyncio.to_thread(postgres_server.start)
        fleet.faults.add(Fault(FaultKind.DB_RESTART, began, time.time()))
    queued = await client.enqueue(jobs(5, 0.0))
    await wait_all(client, [q.id for q in queued], fleet, timeout=30)
    assert_drains_cleanly(fleet)
    await assert_ledger_clean(client, fleet, 5)


async def test_running_workers_survive_an_outage_longer_than_their_lease(
    postgres_server: PostgresServer, client: Store, fleet: Fleet
) -> None:
    """Down for 3x the lease while jobs run: the workers stay up, every job ends
    succeeded once the database is back, and the workers still drain with exit 0."""
    for _ in range(2):
        fleet.start()
    queued = await client.enqueue(jobs(200, 0.05))
    await asyncio.sleep(2)
    began = time.time()
    await asyncio.to_thread(postgres_server.stop)
    try:
        await asyncio.sleep(6)
        crashed = fleet.crashed()
        assert not crashed, "\n".join(
            f"worker {p.worker_id} exited {p.popen.returncode} during the outage:\n{p.tail()}"
            for p in crashed
        )
    finally:
        await asyncio.to_thread(postgres_server.start)
        fleet.faults.add(Fault(FaultKind.DB_RESTART, began, time.time()))
    await wait_all(client, [q.id for q in queued], fleet, timeout=60)
    assert_drains_cleanly(fleet)
    await assert_ledger_clean(client, fleet, 200)
