"""One attempt as an executor holds it (:class:`Run`), the lease that names it, and what
an executor needs from the worker that owns it (:class:`ExecutorHost`).

What this module is not: it decides no outcome and runs nothing (``base.py`` does).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from slotfleet.models.claimed import ClaimedJob
from slotfleet.models.values import Completion
from slotfleet.store import Lease
from slotfleet.worker.context import CancelToken


def lease_of(job: ClaimedJob) -> Lease:
    """The ``(job id, claim token)`` pair naming one attempt of ``job``."""
    return (job.id, job.lease_token or "")


class ExecutorHost(Protocol):
    """What an executor needs from the worker that owns it."""

    @property
    def worker_id(self) -> str:
        """The lease owner written into every completion."""
        ...

    def now(self) -> datetime:
        """The current time (timezone-aware), for retry times and error records."""
        ...

    def job_completed(self, job: ClaimedJob, completion: Completion, duration: float) -> None:
        """Take a finished attempt: batch its completion and count it in the metrics."""
        ...

    def slot_freed(self, queue: str) -> None:
        """A slot of ``queue`` became free: the fetch loop may take another job."""
        ...

    def lease_lost(self, job: ClaimedJob) -> None:
        """An attempt's lease was lost (see :meth:`Executor.lose`): count it."""
        ...


@dataclass(eq=False)
class Run:
    """One attempt in an executor: its job, cancel token and supervising task."""

    job: ClaimedJob
    token: CancelToken = field(default_factory=CancelToken)
    task: asyncio.Task[None] | None = None
    deadline: asyncio.TimerHandle | None = None
    started: float = field(default_factory=time.monotonic)
    state: dict[str, Any] = field(default_factory=dict)
    """Executor-specific bits (the inner task, the child process)."""
    instance: bool = False
    """Whether the job was handed its own instance: its ``meta`` is then stored with the
    attempt's completion."""
