"""Faults between the workers and PostgreSQL: a claim whose reply never arrives (a proxy
swallows it and drops the connection after the claim committed) and a database restart
while jobs run. Both are PostgreSQL-only: SQLite has no connection to lose and no
server to restart. Every run serves async, thread and process queues at once; run with
``-rP`` (or ``-s``) to see the figures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.faults.conftest import RunFactory
from tests.faults.faultlog import Fault, FaultKind
from tests.faults.pgproxy import ClaimReplyDropper, Drop
from tests.faults.plans import KINDS, QUEUES, Settings
from tests.fixtures.postgres import PostgresServer

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.timeout(300)]


@pytest.fixture
def dropper(postgres_server: PostgresServer) -> Iterator[ClaimReplyDropper]:
    proxy = ClaimReplyDropper(postgres_server.port)
    proxy.start()
    yield proxy
    proxy.stop()


async def test_lost_claim_reply_strands_no_job(
    make_run: RunFactory, dropper: ClaimReplyDropper, postgres_server: PostgresServer
) -> None:
    """The claim commits, its reply never reaches the worker (once per queue, so every
    executor loses one): the jobs it claimed must come back (within the lease) and
    run, instead of being renewed by a worker that never received them."""

    def through_proxy(dsn: str, worker_id: str) -> str:
        proxied = dsn.replace(f":{postgres_server.port}/", f":{dropper.port}/")
        return f"{proxied}?application_name={worker_id}&sslmode=disable&gssencmode=disable"

    run = await make_run("postgres", Settings(), route=through_proxy)
    for kind in KINDS:
        dropper.arm(QUEUES[kind])
    await run.start(run.settings.workers)

    async def dropped() -> list[Drop] | None:
        return list(dropper.drops) if len(dropper.drops) == len(KINDS) else None

    drops = await run.until("a claim reply of every queue to be dropped", dropped, 30)
    for drop in drops:
        run.faults.add(
            Fault(
                FaultKind.DROP_REPLY,
                drop.sent,
                drop.dropped,
                drop.application,
                jobs=drop.job_ids,
                note=f"queue {drop.queue}",
            )
        )
    await run.cancel_lingerers()
    report = await run.finish()
    assert all(drop.job_ids for drop in drops), "the proxy dropped a reply that claimed nothing"
    assert not report.problems, report.summary()


async def test_database_restart_while_jobs_run_loses_and_doubles_nothing(
    make_run: RunFactory, postgres_server: PostgresServer
) -> None:
    """PostgreSQL restarts (fast shutdown, same port) while every executor runs a job:
    the workers ride it out, nothing runs twice, every job ends as its behaviour says.
    The lease (8 s) is longer than the outage plus a heartbeat, so no live worker may
    lose a job."""
    run = await make_run("postgres", Settings(lease=8.0, hold=6.0))
    target = (await run.start(1))[0]
    await run.holding(target)
    await run.start(run.settings.workers - 1)
    await run.cancel_lingerers()
    began = time.time()
    await asyncio.to_thread(postgres_server.restart)
    run.faults.add(Fault(FaultKind.DB_RESTART, began, time.time()))
    report = await run.finish()
    assert not report.problems, report.summary()
