"""Chaos: thousands of jobs through four PostgreSQL workers while workers are killed
(SIGKILL) or drained (SIGTERM) every few seconds and PostgreSQL restarts once.

Each job body (``tests.chaos_tasks:record``) writes a row to an ``executions`` side
table in the store's own database, so the end checks see every real execution, not
only what the store says. Jobs are fed to the queue as it drains (at most
``BACKLOG`` ready at a time), so a job taken back from a dead worker is re-run
promptly instead of queueing behind the whole batch; the re-run delay then measures
recovery, not backlog. See ``tests/chaos/analysis.py`` for the exact definitions.

Sizes come from the environment so CI and a laptop can pick their own:
``SLOTFLEET_CHAOS_JOBS`` (default 10000), ``SLOTFLEET_CHAOS_DEADLINE`` (seconds the
run may take before the test fails, default 170), ``SLOTFLEET_CHAOS_MARGIN`` (slack on
the recovery bounds for a loaded machine, default 2). Run with ``-rP`` (or ``-s``) to
see the printed figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from slotfleet.models import TERMINAL_STATES, Job, JobState, QueuedJob, SlotfleetError
from slotfleet.store import Store, open_store
from tests.chaos.analysis import Bounds, ChaosReport, Execution, analyse
from tests.chaos.fleet import ChaosFleet
from tests.chaos_tasks import EXECUTIONS_TABLE
from tests.fixtures.postgres import PostgresServer

JOBS = int(os.environ.get("SLOTFLEET_CHAOS_JOBS", "10000"))
DEADLINE_SECONDS = float(os.environ.get("SLOTFLEET_CHAOS_DEADLINE", "170"))
MARGIN_SECONDS = float(os.environ.get("SLOTFLEET_CHAOS_MARGIN", "2"))

QUEUE = "chaos"
WORKERS = 4
CONCURRENCY = 16
# Short so recovery is quick to observe, but not so short that a live worker loses its
# lease while PostgreSQL restarts under a loaded 2-core machine (2 s did, now and then).
LEASE_SECONDS = 4.0
HEARTBEAT_SECONDS = LEASE_SECONDS / 3  # the worker's default: a third of the lease
DRAIN_SECONDS = 1.0
SIGNAL_EVERY_SECONDS = 2.0
BACKLOG = 200
SHORT_JOB_SECONDS = 0.02
LONG_JOB_SECONDS = 2.0
LONG_JOB_EVERY = 50
"""Every 50th job runs 2 s, so a signalled worker is almost always holding some."""

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.postgres,
    pytest.mark.timeout(DEADLINE_SECONDS + 90),
]


@dataclass
class Chaos:
    dsn: str
    store: Store
    fleet: ChaosFleet
    server: PostgresServer


@pytest.fixture
async def chaos(postgres_server: PostgresServer, tmp_path: Path) -> AsyncIterator[Chaos]:
    name = f"chaos_{uuid.uuid4().hex[:10]}"
    dsn = postgres_server.create_database(name)
    store = open_store(dsn)
    await store.open()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(EXECUTIONS_TABLE)
    fleet = ChaosFleet(
        dsn,
        tmp_path,
        [
            "--queue", f"{QUEUE}:async:{CONCURRENCY}",
            "--lease-seconds", str(LEASE_SECONDS),
            "--drain-timeout", str(DRAIN_SECONDS),
            "--polling-interval", "0.2",
            "--import", "tests.chaos_tasks",
            "--log-level", "WARNING",
        ],
    )  # fmt: skip
    try:
        yield Chaos(dsn, store, fleet, postgres_server)
    finally:
        fleet.cleanup()
        await store.close()
        with contextlib.suppress(psycopg.Error):
            postgres_server.drop_database(name)


def make_job(token: int) -> Job:
    seconds = (
        LONG_JOB_SECONDS if token % LONG_JOB_EVERY == LONG_JOB_EVERY - 1 else SHORT_JOB_SECONDS
    )
    return Job(
        func="tests.chaos_tasks:record",
        queue=QUEUE,
        kwargs={"token": token, "seconds": seconds},
        max_attempts=20,
        unique_key=f"chaos-{token}",
    )


def crash_report(chaos: Chaos) -> str:
    crashed = chaos.fleet.crashed()
    return "\n".join(
        f"--- worker {p.worker_id} exited {p.popen.returncode} unasked:\n{p.tail()}"
        for p in crashed
    )


async def drive(chaos: Chaos, mode: signal.Signals) -> tuple[datetime, datetime] | None:
    """Feed jobs, signal a worker every few seconds (starting a replacement at once),
    restart PostgreSQL once half the jobs are done; return when all are terminal."""
    rng = random.Random(7)
    for _ in range(WORKERS):
        chaos.fleet.start()
    enqueued, terminal = 0, 0
    restart: tuple[datetime, datetime] | None = None
    crashes: set[str] = set()
    ready: set[str] = set()
    started = time.monotonic()
    next_signal = started + SIGNAL_EVERY_SECONDS
    while enqueued < JOBS or terminal < JOBS:
        for proc in chaos.fleet.crashed():
            if proc.worker_id not in crashes:  # keep going, report it at the end
                crashes.add(proc.worker_id)
                print(f"worker {proc.worker_id} exited {proc.popen.returncode} unasked")
                chaos.fleet.start()
        assert time.monotonic() - started < DEADLINE_SECONDS, (
            f"not done after {DEADLINE_SECONDS:g}s: {enqueued} enqueued, {terminal} terminal "
            "(raise SLOTFLEET_CHAOS_DEADLINE or lower SLOTFLEET_CHAOS_JOBS on a slow machine)"
        )
        try:
            found = await chaos.store.queue_stats(QUEUE)
            stats = found[0] if found else None
            if stats is not None:
                terminal = stats.succeeded + stats.failed + stats.cancelled
            ready_jobs = stats.ready if stats is not None else 0
            ready = {w.worker_id for w in await chaos.store.workers()}
            if enqueued < JOBS and ready_jobs < BACKLOG:
                batch = range(enqueued, min(JOBS, enqueued + BACKLOG - ready_jobs))
                await chaos.store.enqueue([make_job(t) for t in batch])
                enqueued = batch.stop
        except SlotfleetError as exc:  # the test's own client rides out the restart too
            print(f"client: store call failed: {exc}")
        if restart is None and terminal >= JOBS // 2:
            began = datetime.now(UTC)
            await asyncio.to_thread(chaos.server.restart)
            restart = (began, datetime.now(UTC))
            print(f"restarted PostgreSQL at {terminal} terminal jobs")
        elif time.monotonic() >= next_signal and terminal < JOBS:
            # Only workers that have heartbeated: a process still importing has not
            # installed its signal handlers and holds nothing worth testing.
            live = [p for p in chaos.fleet.live() if p.worker_id in ready]
            if live:
                chaos.fleet.send(rng.choice(live), mode)
                chaos.fleet.start()
            next_signal = time.monotonic() + SIGNAL_EVERY_SECONDS
        await asyncio.sleep(0.1)
    print(f"all {JOBS} jobs terminal after {time.monotonic() - started:.1f}s")
    return restart


async def all_jobs(store: Store) -> list[QueuedJob]:
    jobs: list[QueuedJob] = []
    after = None
    while True:
        page = await store.list_jobs(queue=QUEUE, limit=1000, after_id=after)
        if not page:
            return jobs
        jobs += page
        after = page[-1].id


async def all_executions(dsn: str) -> list[Execution]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT token, worker, at FROM executions")
        return [Execution(int(t), str(w), a) for t, w, a in await cur.fetchall()]


async def finish(
    chaos: Chaos, mode: signal.Signals, restart: tuple[datetime, datetime] | None
) -> ChaosReport:
    """Drain the survivors, check exit codes, gather the data and analyse it."""
    signalled = {
        p.worker_id: p.signalled_at
        for p in chaos.fleet.procs
        if p.signal is mode and p.signalled_at is not None
    }
    crashed = crash_report(chaos)
    # A replacement started moments ago may still be importing, before its signal
    # handlers exist (SIGTERM would end it with -15, holding nothing): let every live
    # worker check in first, as the signals during the run do.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        beating = {w.worker_id for w in await chaos.store.workers()}
        if all(p.worker_id in beating for p in chaos.fleet.live()):
            break
        await asyncio.sleep(0.2)
    await asyncio.to_thread(chaos.fleet.stop_all, DRAIN_SECONDS + 15)
    bad_exits = [
        f"{p.worker_id} ({p.signal.name}) -> {p.popen.returncode}:\n{p.tail()}"
        for p in chaos.fleet.procs
        if p.signal is not None
        and p.popen.returncode != (-signal.SIGKILL if p.signal is signal.SIGKILL else 0)
    ]
    jobs = await all_jobs(chaos.store)
    states = {s: sum(j.state is s for j in jobs) for s in JobState}
    assert all(j.state in TERMINAL_STATES for j in jobs), states
    report = analyse(
        mode=mode,
        expected=JOBS,
        jobs=jobs,
        executions=await all_executions(chaos.dsn),
        signalled=signalled,
        restart=restart,
        bounds=Bounds(
            lease=LEASE_SECONDS,
            heartbeat=HEARTBEAT_SECONDS,
            drain=DRAIN_SECONDS,
            longest_job=LONG_JOB_SECONDS,
            margin=MARGIN_SECONDS,
        ),
    )
    if bad_exits:
        report.problems.insert(0, "signalled workers ended badly:\n" + "\n".join(bad_exits))
    if crashed:
        report.problems.insert(0, f"workers the test did not signal exited:\n{crashed}")
    print(report.summary())
    for problem in report.problems[:30]:
        print("  PROBLEM:", problem)
    return report


async def test_sigkilled_workers_lose_no_job_and_run_none_twice(chaos: Chaos) -> None:
    restart = await drive(chaos, signal.SIGKILL)
    report = await finish(chaos, signal.SIGKILL, restart)
    assert report.signalled_workers >= 3, report.summary()
    assert report.recovered_jobs > 0, report.summary()
    assert not report.problems, report.summary() + "\n" + "\n".join(report.problems[:30])


async def test_sigterm_drained_workers_hand_back_without_loss_and_exit_zero(
    chaos: Chaos,
) -> None:
    restart = await drive(chaos, signal.SIGTERM)
    report = await finish(chaos, signal.SIGTERM, restart)
    assert report.signalled_workers >= 3, report.summary()
    assert report.recovered_jobs > 0, report.summary()
    assert not report.problems, report.summary() + "\n" + "\n".join(report.problems[:30])
