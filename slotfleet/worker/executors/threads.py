"""The threaded executor: plain functions on a thread pool, for blocking I/O.

Default slots: ``min(32, cpu + 4)``, as ``concurrent.futures`` does. A thread cannot be
stopped from outside, so cancellation is cooperative: the job's
:func:`~slotfleet.worker.context.current_token` is set, and the job ends ``cancelled``
when its code returns, whatever it returns. A job that never looks at its token runs
to its end.

At the deadline the token is set. A timeout that ends the job (no attempts left) is
recorded as failed ("timed out after Ns") at once; one that leads to a retry is
recorded when the thread returns, because a job must not run again (here or on another
worker) while its first attempt's code still runs. Either way the slot stays busy until
the thread really returns: ``free_slots`` never counts a thread that is still running as
free, and the lease is renewed while the attempt is unreported.

On :meth:`stop` (drain timeout passed) running jobs are handed back at once and their
threads are left to finish on their own; a stopping worker process that still has such
threads exits without waiting for them (see ``slotfleet.cli.worker_cmd``). A handed-back
job may therefore run twice if its code ignores the token.

What this module is not: it does not run coroutines concurrently; an ``async def`` job
given to it runs with ``asyncio.run`` inside its thread.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slotfleet.models import QueueSettings
from slotfleet.models.claimed import ClaimedJob
from slotfleet.worker.context import use_token
from slotfleet.worker.executors.base import ConcurrentExecutor, ExecutorHost, Run
from slotfleet.worker.executors.outcomes import JobReleased, await_job, call_job


def _call(run: Run, any_callable: bool) -> Any:
    """Runs in a pool thread: find the function and call it with the token current
    (a ``SystemExit`` from the job becomes :class:`JobExitError`, a failed attempt).
    Marks the run when the job is handed its own instance (its meta is then stored)."""
    with use_token(run.token):
        func, kwargs = ThreadedExecutor.get_function_and_kwargs(run.job, any_callable=any_callable)
        run.instance = run.job.has_instance
        if inspect.iscoroutinefunction(func):
            return asyncio.run(await_job(func(**kwargs)))
        return call_job(func, kwargs)


class ThreadedExecutor(ConcurrentExecutor):
    """Runs jobs on a :class:`~concurrent.futures.ThreadPoolExecutor`."""

    reports_final_timeout_at_deadline = True

    def __init__(self, worker: ExecutorHost, queue: QueueSettings) -> None:
        super().__init__(worker, queue)
        self._pool = ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix=f"slotfleet-{queue.name}"
        )

    def get_default_concurrency(self) -> int:
        return min(32, (os.cpu_count() or 1) + 4)

    async def push(self, job: ClaimedJob) -> None:
        job = await self.on_job_starting(job)
        run = self.begin(job)
        run.task = asyncio.get_running_loop().create_task(
            self._supervise(run), name=f"slotfleet-job-{job.id}"
        )

    async def stop(self) -> None:
        self._stopping = True
        for run in list(self._runs.values()):
            self.interrupt(run, "released")
        # Give cooperative jobs a moment to notice their token, then hand back the rest
        # now: a thread cannot be killed, and the worker must not wait for it.
        await self.wait_runs(min(1.0, self.stop_grace_seconds))
        for run in list(self._runs.values()):
            await self.on_job_completed(job=run.job, exc=JobReleased())
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _supervise(self, run: Run) -> None:
        exc: Exception | None = None
        result: Any = None
        try:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._pool, _call, run, self.any_callable)
        except Exception as error:
            exc = error
        await self.finish(run, exc, result)
