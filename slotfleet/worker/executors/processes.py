"""The process executor: a small pool of child processes, reused between jobs.

For CPU-bound work; default slots ``os.cpu_count()``. ``concurrent.futures``'
``ProcessPoolExecutor`` is not used on purpose: one child killed from outside breaks
that pool as a whole. Here each child is independent (a ``spawn`` process with a pipe,
see ``_child.py``), started on demand up to ``concurrency`` and reused; a child that dies
is simply replaced by the next job that needs one.

- Cancel or timeout: the child gets SIGTERM, which raises inside the job; if it has not
  answered within :attr:`ProcessExecutor.kill_grace_seconds` it is SIGKILLed and
  replaced. The attempt ends ``cancelled`` (or failed, "timed out after Ns").
- A child that dies while running a job (``os._exit``, a segfault, the OOM killer):
  the attempt fails with "worker process exited with code X" and counts, so a poison
  job ends ``failed`` after ``max_attempts``.
- Kwargs go to the child, and results and the instance's ``meta`` come back, as JSON
  text, so nothing but JSON ever crosses the pipe. A job that asks for its instance
  (``get_function_and_kwargs``) gets one rebuilt in the child: the child asks for the
  job's fields (``("instance?",)``) only then, so other jobs cost no encoding of them.
  What it writes into ``meta`` is sent back with the outcome (unless the child dies)
  and stored with the completion, as on the other executors.
- The result is encoded (and checked against the payload limits) once, in the child;
  the parent decodes it once for the completion and the store writes the child's text.
- A worker that dies takes its children with it (``_child.die_with_parent``), so a
  job never keeps running in an orphan while the store gives it to another worker.

What this module is not: it does not share memory or state between jobs beyond what
the child's imported modules keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from slotfleet.models import QueueSettings
from slotfleet.models.claimed import ClaimedJob
from slotfleet.worker.executors import _child
from slotfleet.worker.executors.base import ConcurrentExecutor, ExecutorHost, Run
from slotfleet.worker.executors.outcomes import AttemptError, RemoteJobError


class ChildExitedError(AttemptError):
    """The worker process running the job exited."""


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker process was killed by {name}"
    return f"worker process exited with code {code}"


class _Child:
    """One child process, its pipe and a reader thread that hands replies to the loop."""

    def __init__(self, context: Any, loop: asyncio.AbstractEventLoop, name: str) -> None:
        parent_end, child_end = context.Pipe(duplex=True)
        self.process: BaseProcess = context.Process(
            target=_child.main, args=(child_end, os.getpid()), name=name, daemon=False
        )
        self.process.start()
        child_end.close()
        self.conn: Connection = parent_end
        self.loop = loop
        self.dead = False
        self.reply: asyncio.Future[tuple[Any, ...]] | None = None
        self._lock = threading.Lock()
        threading.Thread(target=self._read, name=f"{name}-reader", daemon=True).start()

    def call(self, message: tuple[Any, ...] | str) -> asyncio.Future[tuple[Any, ...]]:
        """Send ``message`` (a job, or the instance a running job asked for) and return
        the future of the child's next reply."""
        future: asyncio.Future[tuple[Any, ...]] = self.loop.create_future()
        with self._lock:
            self.reply = future
        # A dead child: the reader thread sees EOF and fails the future with the exit code.
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(message)
        return future

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                break
            self._deliver(message)
        self.process.join(5)
        self._deliver(None)

    def _deliver(self, message: tuple[Any, ...] | None) -> None:
        def settle() -> None:
            with self._lock:
                future, self.reply = self.reply, None
                if message is None:
                    self.dead = True
            if future is not None and not future.done():
                if message is None:
                    future.set_exception(ChildExitedError(_exit_text(self.process.exitcode)))
                else:
                    future.set_result(message)

        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self.loop.call_soon_threadsafe(settle)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()

    def terminate(self) -> None:
        pid = self.process.pid
        if pid is not None and self.process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(None)
        self.conn.close()


class ProcessExecutor(ConcurrentExecutor):
    """Runs jobs in reused child processes."""

    #: Seconds a signalled child has to stop its job before it is killed and replaced.
    kill_grace_seconds = 2.0

    #: The multiprocessing start method; ``spawn`` gives children a clean interpreter.
    start_method = "spawn"

    def __init__(self, worker: ExecutorHost, queue: QueueSettings) -> None:
        super().__init__(worker, queue)
        self._idle: list[_Child] = []
        self._children: set[_Child] = set()
        self._available = asyncio.Condition()
        self._context = multiprocessing.get_context(self.start_method)

    def get_default_concurrency(self) -> int:
        return os.cpu_count() or 1

    @property
    def processes(self) -> int:
        """Live child processes (idle and busy)."""
        return sum(1 for c in self._children if not c.dead)

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
        await self.wait_runs(self.kill_grace_seconds + self.stop_grace_seconds)
        children = list(self._children)
        for child in children:
            child.close()
        await asyncio.to_thread(self._reap, children)
        self._children.clear()
        self._idle.clear()

    @staticmethod
    def _reap(children: list[_Child]) -> None:
        for child in children:
            child.process.join(1)
            if child.process.is_alive():
                child.kill()
                child.process.join(1)

    def signal(self, run: Run, reason: str) -> None:
        child: _Child | None = run.state.get("child")
        if child is None:
            return  # not dispatched yet; _supervise sees the token
        child.terminate()
        asyncio.get_running_loop().call_later(self.kill_grace_seconds, self._kill_late, run, child)

    def _kill_late(self, run: Run, child: _Child) -> None:
        if run.state.get("child") is child and not child.dead:
            child.kill()

    async def _acquire(self) -> _Child:
        async with self._available:
            while True:
                while self._idle:
                    child = self._idle.pop()
                    if not child.dead and child.process.is_alive():
                        return child
                    self._children.discard(child)
                live = {c for c in self._children if not c.dead}
                self._children = live
                if len(live) < self.concurrency:
                    # Spawned from the event loop's thread, which lives as long as the
                    # worker: PR_SET_PDEATHSIG fires when the *thread* that spawned the
                    # child ends, so spawning from a short-lived helper thread would kill
                    # children early (see _child.die_with_parent).
                    name = f"slotfleet-{self.queue.name}-{len(live)}"
                    child = _Child(self._context, asyncio.get_running_loop(), name)
                    self._children.add(child)
                    return child
                await self._available.wait()

    async def _release(self, child: _Child, reusable: bool) -> None:
        async with self._available:
            if reusable and not child.dead and not self._stopping:
                self._idle.append(child)
            else:
                if not child.dead:
                    child.kill()
                self._children.discard(child)
            self._available.notify()

    @staticmethod
    def _take_meta(run: Run, meta: tuple[str, str] | None) -> None:
        """The child's word on the instance it built: ``None`` (the job did not ask for
        it), ``("meta", json)`` (what it left in ``meta``) or ``("problem", text)``."""
        if meta is None:
            return
        run.instance = True
        kind, text = meta
        if kind == "meta":
            left = json.loads(text)
            run.job.meta.clear()
            run.job.meta.update(left)
        else:
            run.state["meta_problem"] = text

    async def _supervise(self, run: Run) -> None:
        exc: Exception | None = None
        result: Any = None
        result_json: str | None = None
        child: _Child | None = None
        reusable = True
        try:
            if not run.token.cancelled:
                child = await self._acquire()
            # Interrupted while waiting for a child: do not start it at all.
            if child is not None and not run.token.cancelled:
                run.state["child"] = child
                job = run.job
                reply = await child.call((job.func, json.dumps(job.kwargs), self.any_callable))
                if reply[0] == "instance?":  # the job asks for its own instance
                    reply = await child.call(job.instance_json())
                if reply[0] == "ok":
                    result_json = reply[1]
                    result = json.loads(result_json)
                else:
                    exc = RemoteJobError(reply[1], reply[2], reply[3])
                self._take_meta(run, reply[-1])
        except Exception as error:  # ChildExitedError, or a broken pipe: replace the child
            exc, reusable = error, False
        finally:
            run.state.pop("child", None)
            if child is not None:
                await self._release(child, reusable)
        await self.finish(run, exc, result, result_json)
