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
import functools
import inspect
from typing import TYPE_CHECKING, Any

from slotfleet.models.claimed import ClaimedJob
from slotfleet.models.errors import SlotfleetError
from slotfleet.worker.context import JobCancelled, context_with_token
from slotfleet.worker.executors.base import Executor, Run
from slotfleet.worker.executors.outcomes import await_job

if TYPE_CHECKING:
    from slotfleet.models.jobs import Reference


class NotACoroutineError(SlotfleetError, TypeError):
    """The async executor runs only coroutine functions."""


#: Function -> whether it is a coroutine function (asked once per function, not per job).
_is_coroutine: dict[Any, bool] = {}


def is_coroutine_function(func: Any) -> bool:
    try:
        return _is_coroutine[func]
    except KeyError:
        found = _is_coroutine[func] = inspect.iscoroutinefunction(func)
        return found
    except TypeError:  # an unhashable callable
        return inspect.iscoroutinefunction(func)


class AsyncExecutor(Executor):
    """Runs coroutine functions as tasks on the running event loop: one task per job
    (the job's own coroutine, in a context whose cancel token is the job's), reported
    by the task's done callback, so a cancel of the job never cancels its reporting."""

    def get_default_concurrency(self) -> int:
        return 100

    async def push(self, job: ClaimedJob) -> None:
        job = await self.on_job_starting(job)
        run = self.begin(job)
        loop = asyncio.get_running_loop()
        try:
            func, kwargs = self.get_function_and_kwargs(job, any_callable=self.any_callable)
            run.instance = job.has_instance
            if not is_coroutine_function(func):
                raise NotACoroutineError(
                    f"{job.func} is not an async function; the async executor runs "
                    "only coroutine functions (use a 'threads' or 'processes' queue)"
                )
            inner = loop.create_task(
                await_job(func(**kwargs)), context=context_with_token(run.token)
            )
        except Exception as error:  # reported once push has returned, as a job's failure
            loop.call_soon(self._end, run, error, None)
            return
        run.state["inner"] = inner
        run.task = inner
        inner.add_done_callback(functools.partial(self._done, run))

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

    def _done(self, run: Run, inner: asyncio.Task[Any]) -> None:
        exc: Exception | None = None
        result: Any = None
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
        self._end(run, exc, result)

    def _end(self, run: Run, exc: Exception | None, result: Any) -> None:
        if self.reports_directly:
            self.finish_now(run, exc, result)
        else:  # a subclass's on_job_completed may await: give it a task
            self.spawn(self.finish(run, exc, result))
