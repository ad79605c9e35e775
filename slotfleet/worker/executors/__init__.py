"""Executors: where a queue's jobs run (coroutines, threads or child processes).

The public shape follows the seed API exactly (``Executor(worker, queue)`` with
``push``/``cancel``/``stop``, ``concurrency``/``free_slots``, ``get_function_and_kwargs``,
``on_job_starting``/``on_job_completed``). Names are loaded on first use so that a
process executor's child, which imports ``slotfleet.worker.executors._child``, does not
pay for the other executors.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from slotfleet.models import ExecutorKind

if TYPE_CHECKING:
    from slotfleet.worker.executors.async_ import AsyncExecutor
    from slotfleet.worker.executors.base import ConcurrentExecutor, Executor, ExecutorHost
    from slotfleet.worker.executors.outcomes import JobReleased, JobTimeout
    from slotfleet.worker.executors.processes import ProcessExecutor
    from slotfleet.worker.executors.threads import ThreadedExecutor

_EXPORTS = {
    "AsyncExecutor": "slotfleet.worker.executors.async_",
    "ConcurrentExecutor": "slotfleet.worker.executors.base",
    "Executor": "slotfleet.worker.executors.base",
    "ExecutorHost": "slotfleet.worker.executors.base",
    "JobReleased": "slotfleet.worker.executors.outcomes",
    "JobTimeout": "slotfleet.worker.executors.outcomes",
    "ProcessExecutor": "slotfleet.worker.executors.processes",
    "ThreadedExecutor": "slotfleet.worker.executors.threads",
}

_BY_KIND = {
    ExecutorKind.ASYNC: "AsyncExecutor",
    ExecutorKind.THREADS: "ThreadedExecutor",
    ExecutorKind.PROCESSES: "ProcessExecutor",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def executor_class(kind: ExecutorKind) -> type[Executor]:
    """The executor class for a queue's ``executor`` setting."""
    cls: type[Executor] = __getattr__(_BY_KIND[kind])
    return cls


__all__ = [
    "AsyncExecutor",
    "ConcurrentExecutor",
    "Executor",
    "ExecutorHost",
    "JobReleased",
    "JobTimeout",
    "ProcessExecutor",
    "ThreadedExecutor",
    "executor_class",
]
