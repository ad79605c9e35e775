"""Chancy's own test scenarios for jobs, queues and workers, carried over to slotfleet.

The seed API (``shared/seeds/executor-api.txt``) is Chancy's executor API; a job written
for Chancy's executors should get on slotfleet what it got there. Each test below names
the Chancy test it carries over (``chancy: tests/test_jobs.py::test_basic_job_sync``),
written anew for slotfleet's API: ``App`` instead of ``Chancy``, a :class:`Worker` given
its queues instead of queues declared in the database. The jobs live in
``tests/seed_tasks.py``, written as Chancy's tests write them.

Every test runs on both stores (``store_dsn``: a SQLite file and a real PostgreSQL), with
a real :class:`Worker` and its real executors (process-executor jobs run in real child
processes). Where slotfleet deliberately differs from what a Chancy test expects (a
cancelled job ends ``cancelled``, not ``failed``), the test says so; docs/decisions.md
lists every such difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest

from slotfleet.app import App, SyncApp
from slotfleet.cli.main import main as cli_main
from slotfleet.models import (
    ExecutorKind,
    Job,
    JobId,
    JobState,
    QueueSettings,
    RetryPolicy,
)
from slotfleet.models.claimed import ClaimedJob
from slotfleet.models.jobs import MAX_PAYLOAD_BYTES
from slotfleet.store import Store
from slotfleet.worker import Worker
from tests.fixtures.stores import StoreFactory
from tests.fixtures.waiting import until

ASYNC, THREADS, PROCESSES = ExecutorKind.ASYNC, ExecutorKind.THREADS, ExecutorKind.PROCESSES
KINDS = [ASYNC, THREADS, PROCESSES]
#: Chancy's ``sync_executor`` fixture: the executors that run plain functions.
SYNC_KINDS = [THREADS, PROCESSES]


def ids(kinds: list[ExecutorKind]) -> list[str]:
    return [k.value for k in kinds]


def fn(name: str, kind: ExecutorKind | None = None) -> str:
    """``tests.seed_tasks`` function ``name``; its ``async_`` twin for the async executor."""
    if kind is ASYNC and not name.startswith("async_"):
        name = "async_" + name
    return f"tests.seed_tasks:{name}"


def queue(name: str, kind: ExecutorKind, **options: Any) -> QueueSettings:
    options.setdefault("polling_interval", 0.1)
    return QueueSettings(name=name, executor=kind, **options)


@pytest.fixture
async def app(store_dsn: str) -> AsyncIterator[App]:
    async with App(store_dsn) as opened:
        yield opened


@contextlib.asynccontextmanager
async def serving(store: Store, *queues: QueueSettings, **options: Any) -> AsyncIterator[Worker]:
    """A real worker serving ``queues`` from ``store`` for the duration of the block."""
    options.setdefault("heartbeat_interval", 0.5)
    options.setdefault("drain_timeout", 2.0)
    worker = Worker(store, list(queues), **options)
    task = asyncio.create_task(worker.run())
    try:
        await until("the worker to start", lambda: worker.ready or task.done())
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 60)


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


class CountsFetches:
    """A real store that counts fetches, to prove a paused worker kept asking."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.fetches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def fetch(
        self, queue: str, worker_id: str, limit: int, lease_seconds: float, *, claim: str
    ) -> list[ClaimedJob]:
        got = await self._store.fetch(queue, worker_id, limit, lease_seconds, claim=claim)
        self.fetches += 1
        return got

    async def more_fetches(self, count: int) -> None:
        """Wait until this store has answered ``count`` more fetches."""
        target = self.fetches + count
        await until(f"{count} more fetches", lambda: self.fetches >= target)

    async def first_fetch(self) -> None:
        """Wait until the worker's first fetch was answered (it may be done already)."""
        await until("the worker's first fetch", lambda: self.fetches >= 1)


async def listening(dsn: str) -> bool:
    """Whether a worker on ``dsn`` is ready to hear of new jobs: on PostgreSQL, a session
    sits in ``LISTEN`` (a NOTIFY sent before it would be lost: the store promises no
    delivery, so Chancy's scenario waits for it); a SQLite worker watches the file from
    its first wait."""
    if not dsn.startswith("postgres"):
        return True
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN %'"
        )
        row = await cur.fetchone()
    return row is not None and row[0] > 0


# -- tests/test_jobs.py ----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=ids(KINDS))
async def test_basic_jobs_run_on_every_executor(kind: ExecutorKind, store: Store, app: App) -> None:
    """chancy: tests/test_jobs.py::test_basic_job_sync, ::test_basic_job_async and
    ::test_async_job_on_sync_executor: a basic job succeeds on every executor, and an
    ``async def`` job also on the thread and process executors."""
    names = ["async_job_to_run"] + ([] if kind is ASYNC else ["job_to_run"])
    async with serving(store, queue("low", kind)):
        refs = [await app.enqueue(Job(func=fn(name), queue="low")) for name in names]
        done = [await app.wait(ref, timeout=30) for ref in refs]
    assert [j.state for j in done] == [JobState.SUCCEEDED] * len(names)


@pytest.mark.parametrize("kind", KINDS, ids=ids(KINDS))
async def test_jobs_asking_for_their_instance_get_it_on_every_executor(
    kind: ExecutorKind, store: Store, app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    """chancy: tests/test_jobs.py::test_job_instance_kwarg, ::test_async_job_instance_kwarg,
    ::test_async_job_instance_kwarg_on_sync_executor and
    ::test_job_signature_with_kwarg_marker: a keyword-only parameter annotated
    ``QueuedJob`` receives the running job, and what the job writes into its ``meta`` is
    stored (beside what was enqueued), visible to ``App.get`` and ``slotfleet jobs``. The
    annotations are strings naming a class imported only for type checkers. A generic
    keyword-only annotation (``list[str]``) is left alone."""
    jobs = [Job(func=fn("async_job_with_instance"), queue="low", meta={"origin": "enqueue"})]
    if kind is not ASYNC:
        jobs += [
            Job(func=fn("job_with_instance"), queue="low", meta={"origin": "enqueue"}),
            Job(
                func=fn("job_with_instance_under_other_names"),
                queue="low",
                kwargs={"steps": 3},
            ),
            Job(func=fn("job_with_kwarg_generic"), queue="low", kwargs={"hello": "world"}),
        ]
    async with serving(store, queue("low", kind)):
        refs = await app.enqueue_many(jobs)
        done = [await app.wait(ref, timeout=30) for ref in refs]
    assert [j.state for j in done] == [JobState.SUCCEEDED] * len(jobs), [j.errors for j in done]
    for found in done[:2]:
        assert found.meta == {"origin": "enqueue", "received_instance": True}
        assert (await app.get(found.id)).meta == found.meta
    if kind is not ASYNC:
        named = done[2]
        assert named.result == 3
        assert named.meta == {"steps": 3, "seen_kwargs": ["steps"]}
        assert done[3].meta == {}

    await asyncio.to_thread(cli_main, ["jobs", str(done[0].id), "--dsn", app.dsn])
    assert '"received_instance": true' in capsys.readouterr().out


async def test_cancelling_long_async_and_process_jobs(
    store: Store, app: App, tmp_path: Path
) -> None:
    """chancy: tests/test_jobs.py::test_job_cancellation: a long ``async`` job and a long
    job in a child process are stopped by a cancel. Chancy marks them ``failed``;
    slotfleet ends them ``cancelled`` (a distinct state: docs/decisions.md)."""
    async_marker, process_marker = tmp_path / "async", tmp_path / "process"
    async with serving(store, queue("async", ASYNC), queue("sync", PROCESSES)):
        long_async = await app.enqueue(
            Job(func=fn("very_long_job"), queue="async", kwargs={"marker": str(async_marker)})
        )
        long_process = await app.enqueue(
            Job(
                func=fn("sync_very_long_job"),
                queue="sync",
                kwargs={"marker": str(process_marker)},
            )
        )
        for ref, marker in ((long_async, async_marker), (long_process, process_marker)):
            await until("the long job to start", marker.exists)
            await app.cancel(ref)
            done = await app.wait(ref, timeout=30)
            assert done.state is JobState.CANCELLED
            assert done.attempts == 1


@pytest.mark.parametrize("kind", KINDS, ids=ids(KINDS))
async def test_failing_job_is_marked_failed(kind: ExecutorKind, store: Store, app: App) -> None:
    """chancy: tests/test_jobs.py::test_failing_job (and test_queues.py's
    ``job_that_fails``): a job that raises ends ``failed``, its error recorded."""
    async with serving(store, queue("default", kind, concurrency=1)):
        ref = await app.enqueue(Job(func=fn("job_that_fails", kind)))
        done = await app.wait(ref, timeout=30)
    assert done.state is JobState.FAILED
    assert [e.error for e in done.errors] == ["ValueError: This job should fail."]
    assert "job_that_fails" in done.errors[0].traceback


@pytest.mark.parametrize("kind", KINDS, ids=ids(KINDS))
async def test_jobs_run_in_push_order_and_by_priority(
    kind: ExecutorKind, store: Store, app: App, tmp_path: Path
) -> None:
    """chancy: tests/test_jobs.py::test_job_ordering: with a concurrency of 1, jobs pushed
    before the queue is served run in the order they were pushed; extended here to
    priorities (higher first, FIFO among equals), which slotfleet orders by too."""
    log = tmp_path / "order.log"
    func = fn("record", kind)
    fifo = [
        Job(func=func, queue="low", kwargs={"log": str(log), "label": f"f{i}"}) for i in range(30)
    ]
    for job in fifo:  # one push at a time, as Chancy's test does
        await app.enqueue(job)
    ranked = [("p5a", 5), ("p-1", -1), ("p10", 10), ("p5b", 5)]
    await app.enqueue_many(
        Job(func=func, queue="low", priority=p, kwargs={"log": str(log), "label": label})
        for label, p in ranked
    )
    async with serving(store, queue("low", kind, concurrency=1)):
        await until("every job to run", lambda: len(lines(log)) == 34)
    order = lines(log)
    assert order == ["p10", "p5a", "p5b", *[f"f{i}" for i in range(30)], "p-1"]


# -- tests/test_queues.py --------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=ids(KINDS))
async def test_default_concurrency_comes_from_the_executor(
    kind: ExecutorKind, store: Store, app: App
) -> None:
    """chancy: tests/test_queues.py::test_default_concurrency_sync and
    ::test_default_concurrency_async: a queue without a concurrency takes its executor's
    default (``get_default_concurrency``: 100 async, ``min(32, cpus + 4)`` threads,
    ``cpus`` processes) and runs jobs."""
    expected = {
        ASYNC: 100,
        THREADS: min(32, (os.cpu_count() or 1) + 4),
        PROCESSES: os.cpu_count() or 1,
    }[kind]
    async with serving(store, queue("default_concurrency", kind)) as worker:
        executor = worker.executors["default_concurrency"]
        assert executor.concurrency == executor.get_default_concurrency() == expected
        refs = await app.enqueue_many(
            Job(func=fn("job_to_run", kind), queue="default_concurrency") for _ in range(5)
        )
        done = [await app.wait(ref, timeout=30) for ref in refs]
    assert [j.state for j in done] == [JobState.SUCCEEDED] * 5


async def test_multiple_queues(store: Store, app: App) -> None:
    """chancy: tests/test_queues.py::test_multiple_queues: one worker serves several
    queues, each with its own executor."""
    async with serving(store, queue("low", THREADS, concurrency=1), queue("high", ASYNC)):
        low = await app.enqueue(Job(func=fn("job_to_run"), queue="low"))
        high = await app.enqueue(Job(func=fn("async_job_to_run"), queue="high"))
        assert (await app.wait(low, timeout=30)).state is JobState.SUCCEEDED
        assert (await app.wait(high, timeout=30)).state is JobState.SUCCEEDED


async def test_paused_queue_runs_nothing_until_resumed(store: Store, app: App) -> None:
    """chancy: tests/test_queues.py::test_queue_auto_resume (first part) and
    ::test_queue_resume_time_tracking: a paused queue's job does not run while its worker
    keeps polling; the pause is visible with no time to resume; resuming runs it."""
    watched = CountsFetches(store)
    pause = await app.pause("paused_queue")
    assert (pause.queue, pause.resume_at, pause.in_effect) == ("paused_queue", None, True)
    (stats,) = await app.queues("paused_queue")
    assert (stats.paused, stats.resume_at) == (True, None)
    async with serving(cast(Store, watched), queue("paused_queue", THREADS, concurrency=1)):
        ref = await app.enqueue(Job(func=fn("job_to_run"), queue="paused_queue"))
        await watched.more_fetches(5)
        assert (await app.get(ref)).state is JobState.PENDING
        assert await app.resume("paused_queue") is True
        assert not (await app.queues("paused_queue"))[0].paused
        assert (await app.wait(ref, timeout=30)).state is JobState.SUCCEEDED
    assert await app.resume("paused_queue") is False, "resuming twice is a no-op"


@pytest.mark.parametrize("how", ["datetime", "timedelta"])
async def test_paused_queue_resumes_at_its_time(store: Store, app: App, how: str) -> None:
    """chancy: tests/test_queues.py::test_queue_auto_resume (second part: ``resume_at`` as
    a datetime, then as a timedelta): a queue paused with a time to resume runs nothing
    before it and its jobs once it has passed, without anyone resuming it. Times are the
    store's (PostgreSQL's ``now()``), so the job starts no earlier than the pause ends."""
    until_: datetime | timedelta = timedelta(seconds=1.5)
    if how == "datetime":
        until_ = datetime.now(UTC) + timedelta(seconds=1.5)
    pause = await app.pause("auto_resume_queue", until=until_)
    assert pause.resume_at is not None
    assert pause.in_effect
    (stats,) = await app.queues("auto_resume_queue")
    assert (stats.paused, stats.resume_at) == (True, pause.resume_at)
    async with serving(store, queue("auto_resume_queue", ASYNC, concurrency=1)):
        ref = await app.enqueue(Job(func=fn("async_job_to_run"), queue="auto_resume_queue"))
        done = await app.wait(ref, timeout=30)
    assert done.state is JobState.SUCCEEDED
    assert done.started_at is not None
    assert done.started_at >= pause.resume_at
    assert not (await app.queues("auto_resume_queue"))[0].paused


async def test_a_pause_is_honoured_by_every_worker_of_the_queue(
    store_factory: StoreFactory, app: App
) -> None:
    """chancy: tests/test_queues.py::test_queue_auto_resume with more than one worker
    (Chancy notes "it may take a few seconds for all workers to notice"): two workers,
    each with its own store connection as separate processes have, both idle when the
    queue is paused; neither starts a job while paused, though both keep polling; both
    run jobs once it is resumed."""
    stores = [CountsFetches(await store_factory()) for _ in range(2)]
    settings = queue("shared", THREADS, concurrency=2)
    async with serving(cast(Store, stores[0]), settings), serving(cast(Store, stores[1]), settings):
        for watched in stores:
            await watched.first_fetch()  # both idle: their first fetch found nothing
        await app.pause("shared")
        refs = await app.enqueue_many(Job(func=fn("job_to_run"), queue="shared") for _ in range(8))
        for watched in stores:
            await watched.more_fetches(5)
        assert {j.state for j in [await app.get(r) for r in refs]} == {JobState.PENDING}
        await app.resume("shared")
        done = [await app.wait(ref, timeout=30) for ref in refs]
    assert {j.state for j in done} == {JobState.SUCCEEDED}


# -- tests/test_worker.py and the client API -------------------------------------------


async def test_waiting_for_a_job_times_out(store: Store, app: App) -> None:
    """chancy: tests/test_jobs.py::test_wait_for_job_timeout: waiting for a job that is
    still running raises ``TimeoutError`` after the timeout; a quick one is waited for."""
    async with serving(store, queue("low", THREADS)):
        quick = await app.enqueue(Job(func=fn("job_to_run"), queue="low"))
        assert (await app.wait(quick, timeout=20)).state is JobState.SUCCEEDED
        slow = await app.enqueue(Job(func=fn("slow_job_to_run"), queue="low"))
        with pytest.raises(TimeoutError):
            await app.wait(slow, timeout=0.1)


async def test_sync_push(store: Store, store_dsn: str, app: App) -> None:
    """chancy: tests/test_jobs.py::test_sync_push: the blocking client queues a job that a
    worker then runs."""

    def push() -> JobId:
        with SyncApp(store_dsn) as sync:
            return sync.enqueue(Job(func=fn("job_to_run"), queue="low")).identifier

    job_id = await asyncio.to_thread(push)
    async with serving(store, queue("low", THREADS)):
        assert (await app.wait(job_id, timeout=30)).state is JobState.SUCCEEDED


async def test_an_idle_worker_takes_a_new_job_without_waiting_out_its_polling_interval(
    store: Store, app: App
) -> None:
    """chancy: tests/test_worker.py::test_immediate_processing: with a polling interval of
    60 s, a job pushed to an idle worker runs within seconds (PostgreSQL wakes it with
    NOTIFY; SQLite workers watch the file)."""
    watched = CountsFetches(store)
    async with serving(cast(Store, watched), queue("test_immediate", ASYNC, polling_interval=60.0)):
        await watched.first_fetch()  # it found nothing: it now waits, up to 60 s
        await until("the worker to listen", lambda: listening(app.dsn))
        ref = await app.enqueue(Job(func=fn("async_job_to_run"), queue="test_immediate"))
        assert (await app.wait(ref, timeout=5)).state is JobState.SUCCEEDED


# -- meta through the instance: every outcome ------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=ids(KINDS))
async def test_meta_is_stored_on_retry_and_failure_and_bounded_in_size(
    kind: ExecutorKind, store: Store, app: App
) -> None:
    """The seed stores the instance's meta however the job ends. A retry sees what its
    previous attempt stored; meta too large (or not JSON) fails its attempt with one
    clear error and keeps the stored meta, and holds up no other completion."""
    quick = RetryPolicy(base=0, jitter=0)
    jobs = [
        Job(func=fn("count_attempts", kind), queue="low", max_attempts=2, retry=quick),
        Job(func=fn("oversized_meta", kind), queue="low", meta={"kept": 1}),
        Job(func=fn("unserializable_meta", kind), queue="low", meta={"kept": 2}),
        Job(func=fn("job_to_run", kind), queue="low"),
    ]
    async with serving(store, queue("low", kind, concurrency=4)):
        refs = await app.enqueue_many(jobs)
        retried, oversized, unserializable, plain = [await app.wait(r, timeout=30) for r in refs]
    assert (retried.state, retried.attempts) == (JobState.FAILED, 2)
    assert retried.meta == {"attempts_seen": 2}
    assert [e.error for e in retried.errors] == [
        "ConnectionError: attempt 1 fails",
        "ConnectionError: attempt 2 fails",
    ]
    assert oversized.state is JobState.FAILED
    assert oversized.meta == {"kept": 1}
    assert oversized.errors[-1].error.startswith("the job's meta cannot be stored: meta is ")
    assert f"the limit is {MAX_PAYLOAD_BYTES}" in oversized.errors[-1].error
    assert unserializable.state is JobState.FAILED
    assert unserializable.meta == {"kept": 2}
    assert "meta must be JSON-serializable" in unserializable.errors[-1].error
    assert plain.state is JobState.SUCCEEDED


@pytest.mark.parametrize("kind", KINDS, ids=ids(KINDS))
async def test_meta_is_stored_when_a_job_is_cancelled(
    kind: ExecutorKind, store: Store, app: App, tmp_path: Path
) -> None:
    """A cancelled attempt's meta is stored too, a process child's included (its SIGTERM
    raises inside the job, and the child still reports the instance's meta)."""
    marker = tmp_path / "started"
    async with serving(store, queue("low", kind)):
        ref = await app.enqueue(
            Job(func=fn("progress_then_sleep", kind), queue="low", kwargs={"marker": str(marker)})
        )
        await until("the job to start", marker.exists)
        await app.cancel(ref)
        done = await app.wait(ref, timeout=30)
    assert done.state is JobState.CANCELLED
    assert done.meta == {"progress": 0.5}
