"""Chaos: thousands of jobs through four PostgreSQL workers while workers are killed
(SIGKILL of the worker process) or drained (SIGTERM) every few seconds and PostgreSQL
restarts once, judged on the fault suite's side-effect ledger.

Each job body (``tests.fault_tasks:work_async``) appends its start and end to the
ledger, so the end checks see every real execution, not only what the store says, and
every kill, drain and restart is in the run's fault log with its time. The analysis is
the fault suite's (``tests/faults/analysis.py``): a duplicate is excused only when the
first execution's worker was killed before the second started, never because it was
signalled at some later point. Jobs are fed to the queue as it drains (at most
``BACKLOG`` ready at a time), so a job taken back from a dead worker is re-run
promptly instead of queueing behind the whole batch, and the recovery bound measures
recovery, not backlog.

Sizes come from the environment so CI and a laptop can pick their own:
``SLOTFLEET_CHAOS_JOBS`` (default 10000), ``SLOTFLEET_CHAOS_DEADLINE`` (seconds the
run may take before the test fails, default 170), ``SLOTFLEET_CHAOS_MARGIN`` (slack on
the bounds for a loaded machine, default 2). Run with ``-rP`` (or ``-s``) to see the
printed figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from slotfleet.models import JobState, QueuedJob, SlotfleetError
from slotfleet.models.jobs import Job
from slotfleet.store import Store, open_store
from tests.faults.analysis import Bounds, Expect, Report, analyse
from tests.faults.driver import REPORTS, outcome
from tests.faults.faultlog import Fault, FaultKind, FaultLog
from tests.faults.fleet import Fleet, WorkerProc
from tests.faults.ledger import executions, read_events
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
    store: Store
    fleet: Fleet
    faults: FaultLog
    ledger: Path
    server: PostgresServer


@pytest.fixture
async def chaos(postgres_server: PostgresServer, tmp_path: Path) -> AsyncIterator[Chaos]:
    name = f"chaos_{uuid.uuid4().hex[:10]}"
    dsn = postgres_server.create_database(name)
    store = open_store(dsn)
    await store.open()
    ledger = tmp_path / "ledger.jsonl"
    ledger.touch()
    faults = FaultLog()
    args = [
        "--queue", f"{QUEUE}:async:{CONCURRENCY}",
        "--lease-seconds", str(LEASE_SECONDS),
        "--drain-timeout", str(DRAIN_SECONDS),
        "--polling-interval", "0.2",
        "--log-level", "WARNING",
    ]  # fmt: skip
    fleet = Fleet(lambda _: dsn, tmp_path, args, ledger, faults)
    try:
        yield Chaos(store, fleet, faults, ledger, postgres_server)
    finally:
        fleet.cleanup()
        await store.close()
        with contextlib.suppress(psycopg.Error):
            postgres_server.drop_database(name)


def key(token: int) -> str:
    return f"c-{token}"


def make_job(token: int) -> Job:
    long = token % LONG_JOB_EVERY == LONG_JOB_EVERY - 1
    seconds = LONG_JOB_SECONDS if long else SHORT_JOB_SECONDS
    return Job(
        func="tests.fault_tasks:work_async",
        queue=QUEUE,
        kwargs={"key": key(token), "behaviour": "succeed", "seconds": seconds, "kind": "async"},
        max_attempts=20,
        unique_key=f"chaos-{token}",
    )


async def drive(chaos: Chaos, hit: Callable[[WorkerProc], Fault]) -> None:
    """Feed jobs, ``hit`` a worker every few seconds (starting a replacement at once),
    restart PostgreSQL once half the jobs are done; return when all are terminal."""
    rng = random.Random(7)
    for _ in range(WORKERS):
        chaos.fleet.start()
    enqueued, terminal = 0, 0
    restarted = False
    crashes: set[int] = set()
    ready: set[tuple[str, int]] = set()
    started = time.monotonic()
    next_signal = started + SIGNAL_EVERY_SECONDS
    while enqueued < JOBS or terminal < JOBS:
        for proc in chaos.fleet.crashed():
            if proc.pid not in crashes:  # keep going, report it at the end
                crashes.add(proc.pid)
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
            ready = {(w.worker_id, w.pid) for w in await chaos.store.workers()}
            if enqueued < JOBS and ready_jobs < BACKLOG:
                batch = range(enqueued, min(JOBS, enqueued + BACKLOG - ready_jobs))
                await chaos.store.enqueue([make_job(t) for t in batch])
                enqueued = batch.stop
        except SlotfleetError as exc:  # the test's own client rides out the restart too
            print(f"client: store call failed: {exc}")
        if not restarted and terminal >= JOBS // 2:
            began = time.time()
            await asyncio.to_thread(chaos.server.restart)
            chaos.faults.add(Fault(FaultKind.DB_RESTART, began, time.time()))
            restarted = True
            print(f"restarted PostgreSQL at {terminal} terminal jobs")
        elif time.monotonic() >= next_signal and terminal < JOBS:
            # Only workers that have heartbeated: a process still importing has not
            # installed its signal handlers and holds nothing worth testing.
            live = [p for p in chaos.fleet.live() if (p.worker_id, p.pid) in ready]
            if live:
                hit(rng.choice(live))
                chaos.fleet.start()
            next_signal = time.monotonic() + SIGNAL_EVERY_SECONDS
        await asyncio.sleep(0.1)
    print(f"all {JOBS} jobs terminal after {time.monotonic() - started:.1f}s")


async def all_jobs(store: Store) -> list[QueuedJob]:
    jobs: list[QueuedJob] = []
    after = None
    while True:
        page = await store.list_jobs(queue=QUEUE, limit=1000, after_id=after)
        if not page:
            return jobs
        jobs += page
        after = page[-1].id


async def finish(chaos: Chaos, name: str) -> Report:
    """Drain the survivors, check exit codes, gather the data and analyse it."""
    # A replacement started moments ago may still be importing, before its signal
    # handlers exist (SIGTERM would end it with -15, holding nothing): let every live
    # worker check in first, as the signals during the run do.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        beating = {(w.worker_id, w.pid) for w in await chaos.store.workers()}
        if all((p.worker_id, p.pid) in beating for p in chaos.fleet.live()):
            break
        await asyncio.sleep(0.2)
    await asyncio.to_thread(chaos.fleet.stop_all, DRAIN_SECONDS + 15)
    expected = {p.pid: -9 if p.killed else 0 for p in chaos.fleet.procs}
    bad_exits = [
        f"{p.worker_id} (pid {p.pid}) -> {p.popen.returncode}:\n{p.tail()}"
        for p in chaos.fleet.procs
        if p.popen.returncode != expected[p.pid]
    ]
    events = read_events(chaos.ledger)
    report = analyse(
        name,
        events=events,
        executions=executions(events),
        outcomes=[outcome(job) for job in await all_jobs(chaos.store)],
        expects=[Expect(key(t), "succeed", JobState.SUCCEEDED) for t in range(JOBS)],
        faults=chaos.faults,
        workers=chaos.fleet.pids,
        bounds=Bounds(
            lease=LEASE_SECONDS,
            heartbeat=HEARTBEAT_SECONDS,
            grace=DRAIN_SECONDS,
            cancel_poll=1.0,
            margin=MARGIN_SECONDS,
        ),
    )
    report.timeline = []  # dozens of signals: the counts say enough
    if bad_exits:
        print("workers ended badly:\n" + "\n".join(bad_exits))
    REPORTS.append(report)
    print(report.summary())
    assert not bad_exits, "\n".join(bad_exits)
    return report


async def test_sigkilled_workers_lose_no_job_and_run_none_twice(chaos: Chaos) -> None:
    await drive(chaos, chaos.fleet.sigkill)
    report = await finish(chaos, "chaos-sigkill")
    assert report.faults.get("sigkill", 0) >= 3, report.summary()
    assert report.excused, "no kill cut a running job: " + report.summary()
    assert not report.problems, report.summary()


async def test_sigterm_drained_workers_hand_back_without_loss_and_exit_zero(
    chaos: Chaos,
) -> None:
    await drive(chaos, chaos.fleet.terminate)
    report = await finish(chaos, "chaos-sigterm")
    assert report.faults.get("sigterm", 0) >= 3, report.summary()
    handed_back = [
        e for e in executions(read_events(chaos.ledger)) if e.how == "interrupted:released"
    ]
    assert handed_back, "no drain handed a running job back: " + report.summary()
    assert not report.problems, report.summary()
