"""The async executor: coroutine jobs as tasks on the worker's own event loop.

For I/O-bound ``async def`` functions; default 100 slots. Cancel and timeout cancel the
job's task (its :func:`~slotfleet.worker.context.current_token` is set first, so code
that polls the token sees it too). A timeout is enforced with a loop timer rather than
``asyncio.timeout`` inside the job, so cancellation, timeout and drain all take one path
and the token always says why.

Plain (non-async) functions are refused with a clear error instead of being run on the
loop (they would block every other job) or silently moved to a thread (they could not
be cancelled): put them on a ``threads`` or ``processes`` queue.

What this module is not: it does not protect the loop from a coroutine that blocks.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from slotfleet.models import Reference
from slotfleet.models.claimed import ClaimedJob
from slotfleet.models.errors import SlotfleetError
from slotfleet.worker.context import JobCancelled, context_with_token
from slotfleet.worker.executors.base import Executor, Run
from slotfleet.worker.executors.outcomes import await_job


class NotACoroutineError(SlotfleetError, TypeError):
    """The async executor runs only coroutine functions."""


class AsyncExecutor(Executor):
    """Runs coroutine functions as tasks on the running event loop."""

    def get_default_concurrency(self) -> int:
        return 100

    async def push(self, job: ClaimedJob) -> None:
        job = await self.on_job_starting(job)
        run = self.begin(job)
        run.task = asyncio.get_running_loop().create_task(
            self._supervise(run), name=f"slotfleet-job-{job.id}"
        )

    async def cancel(self, ref: Reference) -> None:
        for run in self.find(ref.identifier):
            self.interrupt(run, "cancelled")

    async def stop(self) -> None:
        self._stopping = True
        for run in list(self._runs.values()):
            self.interrupt(run, "released")
        await self.wait_runs(self.stop_grace_seconds)

    def signal(self, run: Run, reason: str) -> None:
        inner: asyncio.Task[Any] | None = run.state.get("inner")
        if inner is not None:
            inner.cancel()

    async def _supervise(self, run: Run) -> None:
        # The job runs in an inner task so that cancelling it never cancels this
        # supervisor, which must still report the outcome and free the slot.
        exc: Exception | None = None
        result: Any = None
        try:
            func, kwargs = self.get_function_and_kwargs(run.job, any_callable=self.any_callable)
            run.instance = run.job.has_instance
            if not inspect.iscoroutinefunction(func):
                raise NotACoroutineError(
                    f"{run.job.func} is not an async function; the async executor runs "
                    "only coroutine functions (use a 'threads' or 'processes' queue)"
                )
            if not run.token.cancelled:
                inner = asyncio.get_running_loop().create_task(
                    await_job(func(**kwargs)), context=context_with_token(run.token)
                )
                run.state["inner"] = inner
                await asyncio.wait([inner])
                if inner.cancelled():
                    exc = JobCancelled()
                else:
                    raised = inner.exception()
                    if isinstance(raised, Exception):
                        exc = raised
                    elif raised is not None:
                        exc = RuntimeError(f"job raised {type(raised).__name__}: {raised}")
                    else:
                        result = inner.result()
        except Exception as error:
            exc = error
        await self.finish(run, exc, result)
