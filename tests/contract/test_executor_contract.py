"""One suite for every executor (async, threads, processes), chancy style.

Most tests drive an executor directly with a fake worker that collects completions; the
last ones run jobs through a real :class:`~slotfleet.worker.Worker` on the SQLite store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

import slotfleet
from slotfleet.models import (
    Completion,
    ExecutorKind,
    FunctionPolicy,
    Job,
    JobId,
    JobState,
    Outcome,
    QueuedJob,
    QueueSettings,
    Reference,
    RetryPolicy,
    StoreUnavailableError,
)
from slotfleet.models.claimed import ClaimedJob
from slotfleet.store import Store
from slotfleet.worker import Worker
from slotfleet.worker.executors import Executor, ProcessExecutor, executor_class
from tests.fixtures.stores import StoreFactory

KINDS = [ExecutorKind.ASYNC, ExecutorKind.THREADS, ExecutorKind.PROCESSES]


def fn(kind: ExecutorKind, name: str) -> str:
    """``tests.tasks`` function ``name`` in the flavour the executor runs."""
    if kind is ExecutorKind.ASYNC and name in {
        "add",
        "fail",
        "sleep",
        "opaque",
        "decorated_add",
        "poison",
    }:
        name = "async_" + name
    return f"tests.tasks:{name}"


class FakeWorker:
    """Just enough of a worker for an executor: collects completions and freed slots."""

    worker_id = "fake-worker"

    def __init__(self) -> None:
        self.completions: list[Completion] = []
        self.lost: list[ClaimedJob] = []
        self.durations: list[float] = []
        self.freed = 0
        self._changed = asyncio.Event()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def job_completed(self, job: ClaimedJob, completion: Completion, duration: float) -> None:
        self.completions.append(completion)
        self.durations.append(duration)
        self._changed.set()

    def slot_freed(self, queue: str) -> None:
        self.freed += 1
        self._changed.set()

    def lease_lost(self, job: ClaimedJob) -> None:
        self.lost.append(job)
        self._changed.set()

    async def until(self, check: Callable[[], bool], timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self._changed.clear()
                await self._changed.wait()

    async def completion(self, job_id: int, timeout: float = 15.0) -> Completion:
        await self.until(lambda: any(c.job_id == job_id for c in self.completions), timeout)
        return next(c for c in self.completions if c.job_id == job_id)


_ids = iter(range(1, 1_000_000))


def make_job(func: str, **fields: Any) -> ClaimedJob:
    data: dict[str, Any] = {
        "id": JobId(next(_ids)),
        "lease_token": f"claim-{next(_ids)}",
        "func": func,
        "state": JobState.RUNNING,
        "attempts": 1,
        "created_at": datetime.now(UTC),
        "retry": RetryPolicy(base=10, jitter=0),
    }
    data.update(fields)
    return ClaimedJob.of(QueuedJob.model_validate(data))


@pytest.fixture(params=KINDS, ids=[k.value for k in KINDS])
def kind(request: pytest.FixtureRequest) -> ExecutorKind:
    return ExecutorKind(request.param)


@pytest.fixture
def worker() -> FakeWorker:
    return FakeWorker()


@pytest.fixture
async def executor(kind: ExecutorKind, worker: FakeWorker) -> AsyncIterator[Executor]:
    queue = QueueSettings(name="contract", executor=kind, concurrency=2)
    ex = executor_class(kind)(worker, queue)
    if isinstance(ex, ProcessExecutor):
        ex.kill_grace_seconds = 0.5
    yield ex
    await ex.stop()


async def wait_started(marker: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(marker.exists):
        assert time.monotonic() < deadline, "the job never started"
        await asyncio.sleep(0.02)


async def test_success_returns_result(
    kind: ExecutorKind, executor: Executor, worker: FakeWorker
) -> None:
    job = make_job(fn(kind, "add"), kwargs={"a": 2, "b": 3})
    await executor.push(job)
    done = await worker.completion(job.id)
    assert done.outcome is Outcome.SUCCEEDED
    assert done.result == 5
    assert done.worker_id == "fake-worker"


async def test_job_decorator_is_unwrapped(
    kind: ExecutorKind, executor: Executor, worker: FakeWorker
) -> None:
    job = make_job(fn(kind, "decorated_add"), kwargs={"a": 1, "b": 1})
    await executor.push(job)
    assert (await worker.completion(job.id)).result == 2


async def test_failure_retries_with_backoff(
    kind: ExecutorKind, executor: Executor, worker: FakeWorker
) -> None:
    job = make_job(fn(kind, "fail"), kwargs={"message": "nope"}, max_attempts=3)
    await executor.push(job)
    done = await worker.completion(job.id)
    assert done.outcome is Outcome.RETRY
    assert (done.token, done.attempt) == (job.lease_token, 1)
    assert done.error is not None
    assert done.error.error == "ValueError: nope"
    assert done.error.attempt == 1
    assert "ValueError" in done.error.traceback
    # RetryPolicy(base=10, jitter=0): ten seconds after the first failed attempt, counted
    # by the store's clock (the completion carries the delay, not a time).
    assert done.retry_delay == 10


async def test_failure_on_last_attempt_fails(
    kind: ExecutorKind, executor: Executor, worker: FakeWorker
) -> None:
    job = make_job(fn(kind, "fail"), max_attempts=2, attempts=2)
    await executor.push(job)
    done = await worker.completion(job.id)
    assert done.outcome is Outcome.FAILED
    assert done.error is not None
    assert done.error.error == "ValueError: boom"


async def test_timeout_fails_the_attempt(
    kind: ExecutorKind, executor: Executor, worker: FakeWorker
) -> None:
    job = make_job(fn(kind, "sleep"), kwargs={"seconds": 30}, timeout=0.3, max_attempts=2)
    await executor.push(job)
    done = await worker.completion(job.id)
    assert done.outcome is Outcome.RETRY
    assert done.error is not None
    assert done.error.error == "timed out after 0.3s"
    await worker.until(lambda: executor.free_slots == executor.concurrency)


async def test_cancel_running_job(
    kind: ExecutorKind, executor: Executor, worker: FakeWorker, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    job = make_job(fn(kind, "sleep"), kwargs={"seconds": 30, "marker": str(marker)})
    await executor.push(job)
    await wait_started(marker)
    await executor.cancel(Reference(identifier=job.id))
    done = await worker.completion(job.id)
    assert done.outcome is Outcome.CANCELLED
    await worker.until(lambda: executor.free_slots == executor.concurrency)


async def test_cancel_unknown_job_is_a_no_op(executor: Executor) -> None:
    await executor.cancel(Reference(identifier=JobId(987654)))
    assert executor.free_slots == executor.concurrency


async def test_slots_accounting(
    kind: ExecutorKind, executor: Executor, worker: FakeWorker, tmp_path: Path
) -> None:
    assert executor.concurrency == 2
    assert executor.free_slots == 2
    markers = [tmp_path / "a", tmp_path / "b"]
    jobs = [make_job(fn(kind, "sleep"), kwargs={"seconds": 30, "marker": str(m)}) for m in markers]
    await executor.push(jobs[0])
    assert executor.free_slots == 1
    await executor.push(jobs[1])
    assert executor.free_slots == 0
    for m in markers:
        await wait_started(m)
    assert executor.free_slots == 0
    await executor.cancel(jobs[0].ref)
    await worker.completion(jobs[0].id)
    await worker.until(lambda: executor.free_slots == 1)
    await executor.cancel(jobs[1].ref)
    await worker.until(lambda: executor.free_slots == 2)


async def test_non_json_result_fails_readably(
    kind: ExecutorKind, executor: Executor, worker: FakeWorker
) -> None:
    job = make_job(fn(kind, "opaque"))
    await executor.push(job)
    done = await worker.completion(job.id)
    assert done.outcome is Outcome.FAILED
    assert done.error is not None
    assert "result of type Opaque is not JSON-serializable" in done.error.error


async def test_unknown_function_fails_and_executor_keeps_working(
    kind: ExecutorKind, executor: Executor, worker: FakeWorker
) -> None:
    missing = make_job("tests.tasks:no_such_function")
    no_module = make_job("tests.no_such_module:f")
    for job in (missing, no_module):
        await executor.push(job)
        done = await worker.completion(job.id)
        assert done.outcome is Outcome.FAILED
        assert done.error is not None
        assert job.func in done.error.error
        assert done.error.error.startswith("UnknownFunctionError: cannot import")
    ok = make_job(fn(kind, "add"), kwargs={"a": 1, "b": 2})
    await executor.push(ok)
    assert (await worker.completion(ok.id)).result == 3


async def test_functions_not_registered_with_job_are_refused_and_never_run(
    kind: ExecutorKind, executor: Executor, worker: FakeWorker, tmp_path: Path
) -> None:
    """Regression: any importable callable ran (``os:system`` did). By default a worker
    runs only @job functions; a refused job fails with an error that says why and how
    to open it up, and the executor keeps working."""
    marker = tmp_path / "ran"
    refused = [
        make_job("os:system", kwargs={"command": f"touch {marker}"}),
        make_job("tests.tasks:plain_add", kwargs={"a": 1, "b": 2}),
    ]
    for job_ in refused:
        await executor.push(job_)
        done = await worker.completion(job_.id)
        assert done.outcome is Outcome.FAILED
        assert done.error is not None
        assert done.error.error.startswith(
            f"FunctionNotAllowedError: {job_.func!r} is not registered with @job"
        )
        assert "--functions any" in done.error.error
    assert not marker.exists()
    ok = make_job(fn(kind, "add"), kwargs={"a": 1, "b": 2})
    await executor.push(ok)
    assert (await worker.completion(ok.id)).result == 3


async def test_a_process_job_stopped_while_its_module_imports_never_starts(
    worker: FakeWorker, tmp_path: Path
) -> None:
    """Regression: a SIGTERM (timeout, cancel) that reached a child while it imported the
    job's module was dropped, and the job then ran on until its SIGKILL. A task module
    that imports slotfleet (``@job``) takes long enough to import for that to happen."""
    from tests.slow_import_tasks import IMPORT_SECONDS

    queue = QueueSettings(name="slow", executor=ExecutorKind.PROCESSES, concurrency=1)
    executor = ProcessExecutor(worker, queue)
    executor.kill_grace_seconds = IMPORT_SECONDS + 5  # the child answers; nobody kills it
    try:
        warm = make_job("tests.tasks:add", kwargs={"a": 1, "b": 1})
        await executor.push(warm)  # a child is running and idle
        assert (await worker.completion(warm.id)).result == 2
        marker = tmp_path / "ran"
        timeout = IMPORT_SECONDS / 4  # fires while the child imports the module
        slow = make_job(
            "tests.slow_import_tasks:mark", kwargs={"path": str(marker)}, timeout=timeout
        )
        await executor.push(slow)
        done = await worker.completion(slow.id, timeout=IMPORT_SECONDS + 10)
        assert done.outcome is Outcome.FAILED
        assert done.error is not None
        assert done.error.error == f"timed out after {timeout:g}s"
        assert not marker.exists(), "the job started after its timeout"
        assert executor.processes == 1  # the child answered; it was not killed
    finally:
        await executor.stop()


async def test_a_queue_that_runs_any_function_runs_an_unregistered_one(
    kind: ExecutorKind, worker: FakeWorker
) -> None:
    queue = QueueSettings(name="any", executor=kind, concurrency=1, functions=FunctionPolicy.ANY)
    executor = executor_class(kind)(worker, queue)
    try:
        name = "plain_async_add" if kind is ExecutorKind.ASYNC else "plain_add"
        job_ = make_job(f"tests.tasks:{name}", kwargs={"a": 2, "b": 3})
        await executor.push(job_)
        assert (await worker.completion(job_.id)).result == 5
    finally:
        await executor.stop()


@slotfleet.job
def raise_base(what: str) -> None:
    """A job that raises SystemExit or KeyboardInterrupt (run by the executors below)."""
    raise SystemExit(3) if what == "exit" else KeyboardInterrupt()


@slotfleet.job
async def async_raise_base(what: str) -> None:
    raise_base(what)


@pytest.mark.parametrize(
    ("what", "error"), [("exit", "SystemExit: 3"), ("interrupt", "KeyboardInterrupt")]
)
async def test_job_raising_system_exit_or_keyboard_interrupt_fails_the_attempt(
    kind: ExecutorKind, executor: Executor, worker: FakeWorker, what: str, error: str
) -> None:
    """Raised by a job's code they are the job's failure, not a reason to stop the worker
    (an asyncio task raising them would stop the event loop)."""
    prefix = "async_" if kind is ExecutorKind.ASYNC else ""
    job = make_job(f"{__name__}:{prefix}raise_base", kwargs={"what": what}, max_attempts=2)
    await executor.push(job)
    done = await worker.completion(job.id)
    assert done.outcome is Outcome.RETRY
    assert done.error is not None
    assert done.error.error == error
    assert "raise_base" in done.error.traceback
    ok = make_job(fn(kind, "add"), kwargs={"a": 1, "b": 2})
    await executor.push(ok)
    assert (await worker.completion(ok.id)).result == 3


async def test_stop_releases_running_jobs(
    kind: ExecutorKind, executor: Executor, worker: FakeWorker, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    job = make_job(fn(kind, "sleep"), kwargs={"seconds": 30, "marker": str(marker)})
    await executor.push(job)
    await wait_started(marker)
    await executor.stop()
    done = await worker.completion(job.id)
    assert done.outcome is Outcome.RELEASED


async def test_lost_lease_stops_the_attempt_and_reports_nothing(
    kind: ExecutorKind, executor: Executor, worker: FakeWorker, tmp_path: Path
) -> None:
    """Regression (issue 9): a worker told by the store that an attempt's lease is gone
    (it was paused past the lease; the job went to another attempt) stops that attempt
    and never reports it, so its slot comes back and no stale completion is written."""
    marker = tmp_path / "started"
    job = make_job(fn(kind, "sleep"), kwargs={"seconds": 60, "marker": str(marker)})
    await executor.push(job)
    await wait_started(marker)
    assert executor.held() == [(job.id, job.lease_token)]
    assert executor.lose((job.id, "some-other-attempt")) is False
    assert executor.lose((job.id, str(job.lease_token))) is True
    await worker.until(lambda: executor.free_slots == 2)
    assert executor.held() == []
    assert [j.id for j in worker.lost] == [job.id]
    assert worker.completions == [], "a lost attempt must not report an outcome"


@pytest.mark.parametrize("what", ["text", "unprintable"])
async def test_poison_error_text_still_ends_the_attempt_readably(
    kind: ExecutorKind, executor: Executor, worker: FakeWorker, what: str
) -> None:
    """Regression (issue 9): an error message holding a lone surrogate and a NUL, or an
    exception whose ``__str__`` raises, still ends the attempt with text every store
    keeps (it once killed the supervising task, or blocked the completion batcher)."""
    job = make_job(fn(kind, "poison"), kwargs={"kind": what}, max_attempts=2)
    await executor.push(job)
    done = await worker.completion(job.id)
    assert done.outcome is Outcome.RETRY
    assert done.error is not None
    text = done.error.error + done.error.traceback
    text.encode("utf-8")  # no lone surrogate left
    assert "\x00" not in text
    if what == "text":
        assert done.error.error.startswith("OSError: cannot open b'caf")
        assert "\\udce9" in done.error.error
        assert "\\x00" in done.error.error
    else:
        assert done.error.error.startswith("Unprintable: <message unavailable")
    await worker.until(lambda: executor.free_slots == 2)


async def test_retry_delay_never_overflows(
    kind: ExecutorKind, executor: Executor, worker: FakeWorker
) -> None:
    """Regression (issue 9): at a high attempt count ``factor ** attempt`` overflows a
    float; the delay is the policy's cap instead of a dead supervising task."""
    policy = RetryPolicy(base=1, factor=100, cap=60, jitter=0)
    job = make_job(fn(kind, "fail"), attempts=900, max_attempts=1000, retry=policy)
    await executor.push(job)
    done = await worker.completion(job.id)
    assert (done.outcome, done.retry_delay) == (Outcome.RETRY, 60)


# -- executor-specific behaviour ------------------------------------------------------


@pytest.mark.parametrize("kind", [ExecutorKind.THREADS], ids=["threads"])
async def test_thread_timeout_keeps_slot_until_thread_returns(
    executor: Executor, worker: FakeWorker
) -> None:
    job = make_job("tests.tasks:stubborn_sleep", kwargs={"seconds": 1.5}, timeout=0.2)
    await executor.push(job)
    done = await worker.completion(job.id)
    assert done.error is not None
    assert done.error.error == "timed out after 0.2s"
    assert executor.free_slots == 1, "the thread still runs: its slot is still busy"
    await worker.until(lambda: executor.free_slots == 2)
    assert len(worker.completions) == 1, "the returning thread must not report again"


@pytest.mark.parametrize("kind", [ExecutorKind.THREADS], ids=["threads"])
async def test_thread_timeout_with_a_retry_waits_for_the_thread(
    executor: Executor, worker: FakeWorker, tmp_path: Path
) -> None:
    """Regression (issue 9): a timed-out thread job with attempts left is reported (and
    so handed back for its retry) only once its thread has returned; reported at the
    deadline, the retry ran beside the first attempt's still-running code."""
    returned = tmp_path / "returned"
    job = make_job(
        "tests.tasks:stubborn_sleep_then_mark",
        kwargs={"seconds": 1.0, "marker": str(returned)},
        timeout=0.2,
        max_attempts=3,
    )
    await executor.push(job)
    done = await worker.completion(job.id)
    assert returned.exists(), "the retry was reported while the thread still ran"
    assert done.outcome is Outcome.RETRY
    assert done.error is not None
    assert done.error.error == "timed out after 0.2s"
    assert executor.held() == []


@pytest.mark.parametrize("kind", [ExecutorKind.THREADS], ids=["threads"])
async def test_thread_cancel_ends_cancelled_whatever_it_returns(
    executor: Executor, worker: FakeWorker
) -> None:
    job = make_job("tests.tasks:stubborn_sleep", kwargs={"seconds": 0.5})
    await executor.push(job)
    await executor.cancel(job.ref)
    assert executor.free_slots == 1
    done = await worker.completion(job.id)
    assert done.outcome is Outcome.CANCELLED


@pytest.mark.parametrize("kind", [ExecutorKind.PROCESSES], ids=["processes"])
async def test_process_children_are_reused(executor: Executor, worker: FakeWorker) -> None:
    first, second = make_job("tests.tasks:pid"), make_job("tests.tasks:pid")
    await executor.push(first)
    pid = (await worker.completion(first.id)).result
    await worker.until(lambda: executor.free_slots == 2)
    await executor.push(second)
    assert (await worker.completion(second.id)).result == pid


@pytest.mark.parametrize("kind", [ExecutorKind.PROCESSES], ids=["processes"])
async def test_process_child_death_fails_attempt_and_is_replaced(
    executor: Executor, worker: FakeWorker
) -> None:
    poison = make_job("tests.tasks:exit_hard", kwargs={"code": 3}, max_attempts=2)
    await executor.push(poison)
    done = await worker.completion(poison.id)
    assert done.outcome is Outcome.RETRY
    assert done.error is not None
    assert done.error.error == "worker process exited with code 3"
    last = make_job("tests.tasks:exit_hard", kwargs={"code": 3}, max_attempts=2, attempts=2)
    await executor.push(last)
    assert (await worker.completion(last.id)).outcome is Outcome.FAILED
    ok = make_job("tests.tasks:add", kwargs={"a": 2, "b": 2})
    await executor.push(ok)
    assert (await worker.completion(ok.id)).result == 4
    await worker.until(lambda: executor.free_slots == 2)


@pytest.mark.parametrize("kind", [ExecutorKind.PROCESSES], ids=["processes"])
async def test_process_ignoring_sigterm_is_killed_after_grace(
    executor: Executor, worker: FakeWorker
) -> None:
    assert isinstance(executor, ProcessExecutor)
    job = make_job("tests.tasks:ignore_sigterm", kwargs={"seconds": 30})
    await executor.push(job)
    await asyncio.sleep(1.0)  # let the child install its handler
    started = time.monotonic()
    await executor.cancel(job.ref)
    done = await worker.completion(job.id)
    assert done.outcome is Outcome.CANCELLED
    assert time.monotonic() - started < 5
    await worker.until(lambda: executor.free_slots == 2)
    ok = make_job("tests.tasks:add", kwargs={"a": 1, "b": 1})
    await executor.push(ok)
    assert (await worker.completion(ok.id)).result == 2


@pytest.mark.parametrize("kind", [ExecutorKind.ASYNC], ids=["async"])
async def test_async_executor_refuses_plain_functions(
    executor: Executor, worker: FakeWorker
) -> None:
    job = make_job("tests.tasks:add", kwargs={"a": 1, "b": 1})
    await executor.push(job)
    done = await worker.completion(job.id)
    assert done.outcome is Outcome.FAILED
    assert done.error is not None
    assert "is not an async function" in done.error.error


@pytest.mark.parametrize("kind", [ExecutorKind.THREADS], ids=["threads"])
async def test_token_is_current_in_thread_jobs(executor: Executor, worker: FakeWorker) -> None:
    job = make_job("tests.tasks:token_state")
    await executor.push(job)
    assert (await worker.completion(job.id)).result is False


class SeedHooks(Executor):
    """The seed API's hooks overridden with the seed's own signatures (as a subclass
    written for Chancy's executors does), each calling ``super()``."""

    seen: list[tuple[str, JobId, Any]]

    async def on_job_starting(self, job: ClaimedJob) -> ClaimedJob:
        self.seen.append(("starting", job.id, None))
        return await super().on_job_starting(job)

    async def on_job_completed(  # type: ignore[override]  # the seed's signature, on purpose
        self, *, job: ClaimedJob, exc: Exception | None = None, result: Any = None
    ) -> None:
        self.seen.append(("completed", job.id, result if exc is None else type(exc).__name__))
        await super().on_job_completed(job=job, exc=exc, result=result)


async def test_hooks_overridden_with_the_seed_signature_see_and_report_every_attempt(
    kind: ExecutorKind, worker: FakeWorker
) -> None:
    """The base passes its own ``on_job_completed`` the result it already encoded; an
    override with the seed's signature must not be handed that extra keyword (it raised
    TypeError and the attempt was never reported)."""
    hooked = cast(type[SeedHooks], type("Hooked", (SeedHooks, executor_class(kind)), {"seen": []}))
    ex = hooked(worker, QueueSettings(name="contract", executor=kind, concurrency=2))
    try:
        ok = make_job(fn(kind, "add"), kwargs={"a": 2, "b": 3})
        bad = make_job(fn(kind, "fail"), kwargs={"message": "boom"}, max_attempts=1)
        await ex.push(ok)
        await ex.push(bad)
        assert (await worker.completion(ok.id, timeout=5)).result == 5
        assert (await worker.completion(bad.id, timeout=5)).outcome is Outcome.FAILED
        assert sorted(ex.seen) == sorted(
            [("starting", ok.id, None), ("completed", ok.id, 5),
             ("starting", bad.id, None), ("completed", bad.id, "RemoteJobError"
                                          if kind is ExecutorKind.PROCESSES else "ValueError")]
        )  # fmt: skip
    finally:
        await ex.stop()


# -- through a real Worker and store ---------------------------------------------------


async def wait_state(
    store: Store, job_id: JobId, states: set[JobState], timeout: float = 20.0
) -> QueuedJob:
    deadline = time.monotonic() + timeout
    while True:
        job = await store.get(job_id)
        assert job is not None
        if job.state in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck in {job.state}"
        await asyncio.sleep(0.05)


def worker_for(store: Store, kind: ExecutorKind, **options: Any) -> Worker:
    queue = QueueSettings(name="work", executor=kind, concurrency=2, polling_interval=0.1)
    options.setdefault("heartbeat_interval", 0.5)
    return Worker(store, [queue], **options)


async def test_worker_burst_runs_jobs_to_their_end(
    kind: ExecutorKind, store_factory: StoreFactory, tmp_path: Path
) -> None:
    store = await store_factory()
    quick = RetryPolicy(base=0, jitter=0)
    queued = await store.enqueue(
        [
            Job(func=fn(kind, "add"), queue="work", kwargs={"a": 20, "b": 22}),
            Job(func=fn(kind, "fail"), queue="work", max_attempts=2, retry=quick),
            Job(func=fn(kind, "opaque"), queue="work"),
            Job(func="tests.tasks:missing", queue="work"),
        ]
    )
    await worker_for(store, kind).run(burst=True)
    ok, failed, opaque, missing = [await store.get(j.id) for j in queued]
    assert ok is not None
    assert ok.state is JobState.SUCCEEDED
    assert ok.result == 42
    assert failed is not None
    assert failed.state is JobState.FAILED
    assert failed.attempts == 2
    assert [e.error for e in failed.errors] == ["ValueError: boom"] * 2
    assert opaque is not None
    assert opaque.state is JobState.FAILED
    assert "result of type Opaque is not JSON-serializable" in opaque.errors[-1].error
    assert missing is not None
    assert missing.state is JobState.FAILED
    assert "tests.tasks:missing" in missing.errors[-1].error
    assert await store.workers() == [], "a stopped worker forgets its heartbeat"


async def test_worker_cancels_running_and_pending_jobs(
    kind: ExecutorKind, store_factory: StoreFactory, tmp_path: Path
) -> None:
    store = await store_factory()
    marker = tmp_path / "started"
    running, pending = await store.enqueue(
        [
            Job(
                func=fn(kind, "sleep"),
                queue="work",
                kwargs={"seconds": 60, "marker": str(marker)},
            ),
            Job(func=fn(kind, "add"), queue="idle", kwargs={"a": 1, "b": 1}),
        ]
    )
    cancelled = await store.request_cancel(pending.id)
    assert cancelled is not None
    assert cancelled.state is JobState.CANCELLED
    worker = worker_for(store, kind)
    task = asyncio.create_task(worker.run())
    try:
        await wait_started(marker)
        assert worker.executors["work"].free_slots == 1
        await store.request_cancel(running.id)
        job = await wait_state(store, running.id, {JobState.CANCELLED})
        assert job.state is JobState.CANCELLED
    finally:
        worker.request_stop()
        await task


async def test_worker_drain_hands_back_unfinished_jobs(
    kind: ExecutorKind, store_factory: StoreFactory, tmp_path: Path
) -> None:
    store = await store_factory()
    marker = tmp_path / "started"
    (job,) = await store.enqueue(
        [Job(func=fn(kind, "sleep"), queue="work", kwargs={"seconds": 60, "marker": str(marker)})]
    )
    worker = worker_for(store, kind, drain_timeout=0.2)
    task = asyncio.create_task(worker.run())
    await wait_started(marker)
    worker.request_stop()
    await asyncio.wait_for(task, 20)
    back = await store.get(job.id)
    assert back is not None
    assert back.state is JobState.PENDING
    assert back.attempts == 0, "a released attempt is given back"


class LosesOneFetchReply:
    """A real store whose first fetch commits its claim, then fails as if the reply had
    been lost on the way back (the connection dropped after the server committed)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.lost: list[JobId] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def fetch(
        self, queue: str, worker_id: str, limit: int, lease_seconds: float, *, claim: str
    ) -> list[ClaimedJob]:
        got = await self._store.fetch(queue, worker_id, limit, lease_seconds, claim=claim)
        if got and not self.lost:
            self.lost = [j.id for j in got]
            raise StoreUnavailableError("cannot reach the database: connection lost")
        return got


async def test_worker_hands_back_a_claim_whose_reply_was_lost(
    store_factory: StoreFactory,
) -> None:
    """Regression (issue 9, finding 2): the jobs of a fetch whose reply was lost stayed
    ``running`` under the worker (its heartbeat renewed them) and ended ``failed`` without
    ever running. The worker now hands that claim back before fetching again: the jobs
    run here, on their first attempt, without waiting out a lease."""
    store = await store_factory()
    queued = await store.enqueue(
        [Job(func="tests.tasks:async_add", queue="work", kwargs={"a": i, "b": 1}) for i in range(3)]
    )
    lossy = LosesOneFetchReply(store)
    worker = worker_for(cast(Store, lossy), ExecutorKind.ASYNC, lease_seconds=3600)
    await asyncio.wait_for(worker.run(burst=True), 60)
    assert lossy.lost, "no fetch reply was lost"
    assert set(lossy.lost) <= {j.id for j in queued}
    for job in queued:
        done = await store.get(job.id)
        assert done is not None
        assert (done.state, done.attempts, done.errors) == (JobState.SUCCEEDED, 1, [])
