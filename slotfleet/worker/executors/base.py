"""The executor contract and the completion logic every executor shares.

An executor runs the jobs of one queue for one worker. It keeps the public shape of the
seed API (``Executor(worker, queue)``, ``push``, ``cancel``, ``stop``, ``concurrency``,
``free_slots``, ``get_function_and_kwargs``, ``on_job_starting``, ``on_job_completed``),
and this base owns what happens when an attempt ends: :meth:`Executor.on_job_completed`
turns a result or an exception into a :class:`~slotfleet.models.Completion` (succeeded,
retry with backoff, failed, cancelled or released) and hands it to the worker, which
batches the writes. Subclasses only decide *where* a job runs and *how* it is
interrupted.

Slot accounting: a slot is busy from ``push`` until the job's code has really stopped
running (a thread that ignores its cancel token keeps its slot), so ``free_slots`` never
promises capacity the executor does not have.

Outcomes, in one place (decided by :mod:`~slotfleet.worker.executors.verdict`):

- a return value must encode as strict JSON (within the store's payload limits); if it
  does not, the attempt fails with "result of type X is not JSON-serializable";
- an exception fails the attempt: ``retry`` at ``now + job.retry.delay(attempt)``
  while attempts remain, else ``failed``; the error is recorded as "ExcType: message"
  with its traceback;
- a function that cannot be imported (missing module or attribute, or its module
  raised on import), or is not registered with ``@job`` while the queue runs only those
  (``QueueSettings.functions``, the default), is an ordinary failure, retries included:
  during a rolling deploy the retry may well land on a worker that has the new code.
  With the default ``max_attempts=1`` it fails at once;
- ``SystemExit`` or ``KeyboardInterrupt`` raised by a job's code (``sys.exit()`` in a
  job, a library that "exits" on error) is a bug in the job, not a request to stop the
  worker: it fails the attempt like any exception ("SystemExit: 3"), retries included.
  Executors route the job's code through :func:`call_job` / :func:`await_job`, which
  turn them into :class:`JobExitError` before they reach the event loop. A real Ctrl-C
  never lands there: the CLI handles SIGINT (and ``asyncio.run`` does too);
- a timeout fails the attempt with "timed out after Ns" (retry rules apply); a cancel
  ends it ``cancelled``; a drain hands it back (``released``, attempt not counted);
- an attempt whose lease the store says is gone (:meth:`Executor.lose`: the worker was
  paused past its lease and the job was taken back) is interrupted and reports nothing:
  its completion would be refused anyway, and the job belongs to another attempt now;
- a job handed its own instance (:meth:`Executor.get_function_and_kwargs`: a keyword-only
  parameter annotated ``QueuedJob``) has its ``meta`` stored with the completion, whatever
  the outcome; meta that cannot be stored (not JSON, past the payload limits) fails an
  attempt that succeeded otherwise, is added to the error of one that failed, and keeps
  the stored meta;
- anything that goes wrong while deciding the outcome (an exception whose ``__str__``
  raises, a result that cannot be checked) still ends the attempt, as a failure that
  says so: a supervising task never dies leaving its job ``running``.

Every completion carries the attempt's claim token (``job.lease_token``); the store
applies it only while the row still carries that token.

What this module is not: it does not fetch jobs, talk to the store or decide how many
jobs to push; that is the worker's loop.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from slotfleet.models import FunctionPolicy, JobId, QueueSettings
from slotfleet.models.claimed import ClaimedJob
from slotfleet.store import Lease
from slotfleet.worker.context import JobCancelled
from slotfleet.worker.executors.attempt import ExecutorHost, Run, lease_of
from slotfleet.worker.executors.functions import resolve_function
from slotfleet.worker.executors.instance import instance_params, meta_problem
from slotfleet.worker.executors.outcomes import JobReleased, JobTimeout, format_seconds

if TYPE_CHECKING:
    from slotfleet.models.jobs import Reference
from slotfleet.worker.executors.verdict import decide, undecided

__all__ = ["ConcurrentExecutor", "Executor", "ExecutorHost", "Run", "lease_of"]


class Executor(ABC):
    """Runs the jobs of one queue. Subclasses implement ``push``, ``cancel``, ``stop``
    and ``get_default_concurrency``; completion handling is shared."""

    #: Whether a timeout that ends the job (no attempts left) is reported when the
    #: deadline passes, although the job's code may still be running (holding its slot),
    #: rather than when the code has stopped. A timeout that leads to a retry is always
    #: reported once the code has stopped: the job must not run again while it runs here.
    reports_final_timeout_at_deadline = False

    #: Seconds :meth:`stop` waits for interrupted jobs to end before giving up on them.
    stop_grace_seconds = 5.0

    def __init__(self, worker: ExecutorHost, queue: QueueSettings) -> None:
        self.worker = worker
        self.queue = queue
        self._concurrency = queue.concurrency or self.get_default_concurrency()
        self._busy = 0
        self._runs: dict[Lease, Run] = {}
        self._open: dict[Lease, float] = {}
        """Attempts not reported yet (by lease), with when they started."""
        self._background: set[asyncio.Task[Any]] = set()
        self._stopping = False

    # -- the seed API -------------------------------------------------------------

    @property
    def concurrency(self) -> int:
        """Jobs this executor runs at once."""
        return self._concurrency

    @property
    def free_slots(self) -> int:
        """Jobs it can take now: ``concurrency`` minus slots still occupied."""
        return max(0, self._concurrency - self._busy)

    @abstractmethod
    def get_default_concurrency(self) -> int:
        """Slots when the queue's settings leave ``concurrency`` unset."""

    @abstractmethod
    async def push(self, job: ClaimedJob) -> None:
        """Start running ``job`` (already claimed by the worker); return at once."""

    @abstractmethod
    async def cancel(self, ref: Reference) -> None:
        """Ask the running job ``ref`` to stop; it ends ``cancelled``. No-op if unknown."""

    @abstractmethod
    async def stop(self) -> None:
        """Hand back every job still running (``released``) and free the resources."""

    @staticmethod
    def get_function_and_kwargs(
        job: ClaimedJob, *, any_callable: bool = False
    ) -> tuple[Callable[..., Any], dict[str, Any]]:
        """The callable behind ``job.func`` (unwrapping ``@job``) and its kwargs, with
        the job's own :class:`~slotfleet.models.QueuedJob` (``job.instance()``, built only
        here) under every keyword-only parameter annotated ``QueuedJob`` (whatever its
        name; see :mod:`~slotfleet.worker.executors.instance`). What the job writes into
        its instance's ``meta`` is stored with the attempt's completion. A function not
        registered with ``@job`` is refused unless ``any_callable`` (the executors pass
        their queue's ``functions: any``)."""
        func = resolve_function(job.func, any_callable=any_callable)
        kwargs = dict(job.kwargs)
        names = instance_params(func)
        if names:
            instance = job.instance()
            for name in names:
                kwargs[name] = instance
        return func, kwargs

    @property
    def any_callable(self) -> bool:
        """Whether this queue's jobs may name any importable callable."""
        return self.queue.functions is FunctionPolicy.ANY

    async def on_job_starting(self, job: ClaimedJob) -> ClaimedJob:
        """Called before a job runs; marks the attempt open so it is reported once."""
        self._open[lease_of(job)] = time.monotonic()
        return job

    async def on_job_completed(
        self,
        *,
        job: ClaimedJob,
        exc: Exception | None = None,
        result: Any = None,
        result_json: str | None = None,
    ) -> None:
        """Decide the attempt's outcome and hand it to the worker. Reported once:
        later calls for the same attempt (a timed-out thread returning, an attempt
        whose lease was lost) do nothing."""
        self.report(job=job, exc=exc, result=result, result_json=result_json)

    def report(
        self,
        *,
        job: ClaimedJob,
        exc: Exception | None = None,
        result: Any = None,
        result_json: str | None = None,
    ) -> None:
        """What :meth:`on_job_completed` does, called directly (not awaited) where an
        executor finishes an attempt in a callback and the hook is not overridden."""
        lease = lease_of(job)
        started = self._open.pop(lease, None)
        if started is None:
            return
        try:
            run = self._runs.get(lease)
            if run is not None and run.instance:
                problem = run.state.get("meta_problem") or meta_problem(job.meta)
                meta = None if problem else job.meta
                completion = decide(
                    job, exc, result, self.worker, meta=meta, meta_problem=problem,
                    result_json=result_json,
                )  # fmt: skip
            else:
                completion = decide(job, exc, result, self.worker, result_json=result_json)
        except Exception as bad:  # never leave the job running for want of a verdict
            completion = undecided(job, bad, self.worker)
        self.worker.job_completed(job, completion, time.monotonic() - started)

    # -- extras used by the worker ------------------------------------------------

    @property
    def busy_slots(self) -> int:
        """Slots occupied, including code still running after a reported timeout."""
        return self._busy

    @property
    def kind(self) -> str:
        return self.queue.executor.value

    def holds(self, job_id: JobId) -> bool:
        """Whether an unreported attempt of ``job_id`` runs here."""
        return any(k[0] == job_id for k in self._open)

    def held(self) -> list[Lease]:
        """The leases of the attempts not reported yet: what the heartbeat renews."""
        return list(self._open)

    def lose(self, lease: Lease) -> bool:
        """The store no longer gives this attempt its lease (the worker was paused past
        it and the job was taken back, or it was claimed again): stop its code and
        never report it. Returns whether the attempt was held here."""
        if self._open.pop(lease, None) is None:
            return False
        run = self._runs.get(lease)
        if run is not None:
            self.interrupt(run, "lost")
            self.worker.lease_lost(run.job)
        return True

    # -- shared machinery ---------------------------------------------------------

    def begin(self, job: ClaimedJob) -> Run:
        """Occupy a slot for ``job`` and arm its timeout."""
        run = Run(job=job)
        self._runs[lease_of(job)] = run
        self._busy += 1
        if job.timeout is not None:
            loop = asyncio.get_running_loop()
            run.deadline = loop.call_later(job.timeout, self._on_deadline, run)
        return run

    async def finish(
        self, run: Run, exc: Exception | None, result: Any = None, result_json: str | None = None
    ) -> None:
        """Report the attempt (the token's reason wins over what the code did) and free
        its slot."""
        exc, result, result_json = self._verdict(run, exc, result, result_json)
        try:
            if self.reports_directly:  # this class's hook: hand it the encoded result too
                await self.on_job_completed(
                    job=run.job, exc=exc, result=result, result_json=result_json
                )
            else:  # an override may have the seed's signature (job, exc, result) only
                await self.on_job_completed(job=run.job, exc=exc, result=result)
        finally:
            self._free(run)

    def finish_now(
        self, run: Run, exc: Exception | None, result: Any = None, result_json: str | None = None
    ) -> None:
        """:meth:`finish` without awaiting, for an executor that ends attempts in a done
        callback: valid only while :meth:`on_job_completed` is not overridden (see
        :attr:`reports_directly`)."""
        exc, result, result_json = self._verdict(run, exc, result, result_json)
        try:
            self.report(job=run.job, exc=exc, result=result, result_json=result_json)
        finally:
            self._free(run)

    @property
    def reports_directly(self) -> bool:
        """Whether attempts may be reported with :meth:`finish_now` (the seed API's
        ``on_job_completed`` hook is this class's own, so nothing needs awaiting). An
        override is called with the seed's keywords only (``job``, ``exc``, ``result``):
        a subclass written for the seed's executors does not take ``result_json``."""
        return type(self).on_job_completed is Executor.on_job_completed

    def _verdict(
        self, run: Run, exc: Exception | None, result: Any, result_json: str | None
    ) -> tuple[Exception | None, Any, str | None]:
        if run.deadline is not None:
            run.deadline.cancel()
        reason = run.token.reason
        if not reason:
            return exc, result, result_json
        if reason == "cancelled":
            exc = JobCancelled()
        elif reason == "released":
            exc = JobReleased()
        elif reason == "timeout":
            exc = self.timeout_error(run.job)
        return exc, None, None

    def _free(self, run: Run) -> None:
        self._runs.pop(lease_of(run.job), None)
        self._busy -= 1
        self.worker.slot_freed(self.queue.name)

    def find(self, job_id: JobId) -> list[Run]:
        return [r for k, r in self._runs.items() if k[0] == job_id]

    @staticmethod
    def timeout_error(job: ClaimedJob) -> JobTimeout:
        return JobTimeout(f"timed out after {format_seconds(job.timeout or 0)}")

    def interrupt(self, run: Run, reason: str) -> None:
        """Set the run's token and ask its code to stop (see :meth:`signal`)."""
        if run.token.cancelled:
            return
        run.token.cancel(reason)
        self.signal(run, reason)

    def signal(self, run: Run, reason: str) -> None:  # noqa: B027 - optional hook
        """Executor-specific part of an interrupt; the token is already set. Threads
        need nothing more (the token is all they get)."""

    def _on_deadline(self, run: Run) -> None:
        if run.token.cancelled:
            return
        self.interrupt(run, "timeout")
        final = run.job.attempts >= run.job.max_attempts
        if final and self.reports_final_timeout_at_deadline:
            self.spawn(self.on_job_completed(job=run.job, exc=self.timeout_error(run.job)))

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` as a task this executor keeps a reference to."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def wait_runs(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for every supervising task to end."""
        tasks = [r.task for r in self._runs.values() if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout)


class ConcurrentExecutor(Executor, ABC):
    """Base of executors that run jobs on pool workers outside the event loop (threads,
    child processes). It owns ``cancel``: the job's token is set and :meth:`signal`
    reaches the code the way the pool allows."""

    async def cancel(self, ref: Reference) -> None:
        for run in self.find(ref.identifier):
            self.interrupt(run, "cancelled")
