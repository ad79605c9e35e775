"""Worker-side queue settings and the figures workers and stores report about queues.

:class:`QueueSettings` is what one worker needs to serve one queue. The Kubernetes
``Queue`` resource (``slotfleet.models.resource``) carries the same settings for a
whole fleet; the worker never needs to know which of the two it was given.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, NewType

from pydantic import BaseModel, ConfigDict, Field

WorkerId = NewType("WorkerId", str)

QUEUE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"
_QUEUE_NAME = re.compile(QUEUE_NAME_PATTERN)


def check_queue_name(name: str) -> str:
    """``name``, or ``ValueError`` saying what a queue name may be."""
    if not (isinstance(name, str) and len(name) <= 63 and _QUEUE_NAME.fullmatch(name)):
        raise ValueError(
            f"{name!r} is not a queue name (up to 63 lowercase letters, digits, '-', '_' "
            "and '.', starting and ending with a letter or digit)"
        )
    return name


class ExecutorKind(StrEnum):
    """Where a queue's jobs run."""

    ASYNC = "async"
    """Coroutines on the worker's event loop; for I/O-bound async functions."""
    THREADS = "threads"
    """A thread pool; for blocking I/O in plain functions."""
    PROCESSES = "processes"
    """A pool of child processes, reused between jobs; for CPU-bound work."""


class FunctionPolicy(StrEnum):
    """Which functions a worker runs for the jobs it claims."""

    REGISTERED = "registered"
    """Only functions registered with ``@job`` (the default): a job naming anything else,
    ``os:system`` say, fails with an error saying so."""
    ANY = "any"
    """Any importable callable, as Chancy does: whoever can enqueue can run code."""


class RateLimit(BaseModel):
    """At most ``count`` job starts per ``period`` seconds, across every worker of the queue."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    count: Annotated[int, Field(ge=1, le=1_000_000)]
    """Job starts allowed in one window."""
    period: Annotated[float, Field(gt=0, le=86_400)] = 1.0
    """Window length in seconds."""


class QueueSettings(BaseModel):
    """How one worker serves one queue."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=QUEUE_NAME_PATTERN)]
    """The queue's name, as jobs are enqueued to it."""
    executor: ExecutorKind = ExecutorKind.ASYNC
    """Which executor runs this queue's jobs."""
    concurrency: Annotated[int, Field(ge=1, le=10_000)] | None = None
    """Jobs run at once by one worker; ``None`` takes the executor's default."""
    polling_interval: Annotated[float, Field(gt=0, le=3600)] = 1.0
    """Seconds between fetches when nothing wakes the worker earlier."""
    rate_limit: RateLimit | None = None
    """Starts allowed per window across all workers; ``None`` means unlimited."""
    paused: bool = False
    """A paused queue fetches nothing; running jobs finish."""
    functions: FunctionPolicy = FunctionPolicy.REGISTERED
    """Which functions this queue's jobs may name (``@job``-registered ones, or any)."""

    @classmethod
    def parse(cls, text: str) -> QueueSettings:
        """Parse the CLI form ``name[:executor[:concurrency]]`` (``emails:threads:8``)."""
        name, _, rest = text.partition(":")
        kind, _, conc = rest.partition(":")
        data: dict[str, object] = {"name": name}
        if kind:
            data["executor"] = kind
        if conc:
            data["concurrency"] = conc
        return cls.model_validate(data)


class QueueStats(BaseModel):
    """A queue's backlog and slots as the store sees them now."""

    model_config = ConfigDict(frozen=True)

    queue: str
    ready: int = 0
    """Pending or retrying jobs whose time has come: what a free slot would take now."""
    scheduled: int = 0
    """Pending or retrying jobs due later."""
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    workers: int = 0
    """Live workers (fresh heartbeat) serving the queue."""
    slots_total: int = 0
    slots_busy: int = 0
    paused: bool = False
    """Paused in the store (``slotfleet pause``): no worker fetches from it now. A Queue
    resource's ``spec.paused`` is separate (see docs/decisions.md)."""
    resume_at: datetime | None = None
    """When that pause ends by itself; ``None`` while paused until resumed."""

    @property
    def slots_free(self) -> int:
        return max(0, self.slots_total - self.slots_busy)


class QueuePause(BaseModel):
    """A queue paused in the store: no worker of any fleet fetches from it until
    ``resume_at`` (by the store's clock), or until it is resumed when that is ``None``."""

    model_config = ConfigDict(frozen=True)

    queue: str
    paused_at: datetime
    """When it was paused (the store's clock)."""
    resume_at: datetime | None = None
    """When it resumes by itself; ``None``: only ``slotfleet resume`` ends it."""

    @property
    def in_effect(self) -> bool:
        """Whether it still pauses the queue as of ``paused_at`` (a time given to
        ``pause`` that had already passed pauses nothing)."""
        return self.resume_at is None or self.resume_at > self.paused_at


class WorkerHeartbeat(BaseModel):
    """What a worker writes on every heartbeat: who it is and its slots per queue."""

    model_config = ConfigDict(frozen=True)

    worker_id: str
    hostname: str = ""
    pid: int = 0
    queues: dict[str, tuple[int, int]] = Field(default_factory=dict)
    """queue name -> (total slots, busy slots)."""
    started_at: datetime | None = None
    last_seen: datetime | None = None
    draining: bool = False
    retiring: str | None = None
    """The retirement mark (a Queue's ``status.retiring[].since``) this worker confirms:
    it has stopped claiming jobs and claims none until the mark is lifted."""
