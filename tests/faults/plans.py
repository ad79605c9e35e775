"""What a fault run enqueues and what each job's behaviour implies, and the run's sizes.

A run serves three queues on every worker, one per executor (``fa`` async, ``ft``
threads, ``fp`` processes), so one fault hits every executor at once; a job's key
starts with its queue (``fp-hold-0``), so every problem names its executor. Jobs run the
``tests.fault_tasks`` bodies with the behaviours of :data:`SPECS`.

Sizes come from the environment so CI and a laptop can pick their own:
``SLOTFLEET_FAULTS_COPIES`` (succeeding jobs per executor, default 4),
``SLOTFLEET_FAULTS_WORKERS`` (worker processes, default 3), ``SLOTFLEET_FAULTS_MARGIN``
(seconds of slack on every bound, for a loaded machine, default 3) and
``SLOTFLEET_FAULTS_DEADLINE`` (seconds the jobs of a run may take to end, default 90).

What this module is not: the driver (``tests.faults.driver``) or the rules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from slotfleet.models import Job, JobState, RetryPolicy
from slotfleet.worker.executors.processes import ProcessExecutor
from tests.faults.model import Bounds, Expect

COPIES = int(os.environ.get("SLOTFLEET_FAULTS_COPIES", "4"))
WORKERS = int(os.environ.get("SLOTFLEET_FAULTS_WORKERS", "3"))
MARGIN = float(os.environ.get("SLOTFLEET_FAULTS_MARGIN", "3"))
DEADLINE = float(os.environ.get("SLOTFLEET_FAULTS_DEADLINE", "90"))

KINDS = ("async", "threads", "processes")
QUEUES = {"async": "fa", "threads": "ft", "processes": "fp"}
SLOTS = {"async": 4, "threads": 4, "processes": 2}
TIMEOUT = 1.0
"""Seconds an ``overrun`` or ``stubborn`` job may run per attempt."""
QUICK = RetryPolicy(base=0, jitter=0)


@dataclass(frozen=True)
class Spec:
    """A behaviour's job options and the final row it implies."""

    state: JobState
    attempts: int | None = None
    error: str | None = None
    max_attempts: int = 1
    seconds: float = 0.0
    timeout: float | None = None
    k: int = 0
    priority: int = 0


SPECS = {
    "succeed": Spec(JobState.SUCCEEDED, seconds=0.05, max_attempts=3),
    "fail": Spec(JobState.FAILED, 2, "planned failure", max_attempts=2),
    "flaky": Spec(JobState.SUCCEEDED, None, "planned failure 1 of 1", max_attempts=4, k=1),
    "overrun": Spec(JobState.FAILED, 2, "timed out", 2, seconds=30.0, timeout=TIMEOUT),
    "stubborn": Spec(JobState.FAILED, 2, "timed out", 2, seconds=TIMEOUT + 2.0, timeout=TIMEOUT),
    "linger": Spec(JobState.CANCELLED, max_attempts=3, seconds=60.0),
    "hold": Spec(JobState.SUCCEEDED, max_attempts=4, priority=10),
    "poison_text": Spec(JobState.FAILED, 2, "cannot open 'report-", max_attempts=2),
    "poison_str": Spec(JobState.FAILED, 2, "UnprintableError", max_attempts=2),
}
"""``hold`` works :attr:`Settings.hold` seconds on its first start only."""

#: Behaviours every run has; a run adds its own (``stubborn``, the poisons).
COMMON = ("succeed", "fail", "flaky", "overrun", "linger", "hold")


@dataclass(frozen=True)
class Settings:
    lease: float = 4.0
    hold: float = 2.0
    """Seconds a ``hold`` job works on its first start (a fault's victim)."""
    hold_again: float = 0.1
    """Seconds a ``hold`` job works on its later starts."""
    drain: float = 2.0
    polling: float = 0.2
    margin: float = MARGIN
    copies: int = COPIES
    workers: int = WORKERS
    deadline: float = DEADLINE

    @property
    def heartbeat(self) -> float:
        return min(self.lease / 3, 10.0)  # the worker's default

    @property
    def stall(self) -> float:
        """Seconds without progress after which a run stops waiting for its jobs."""
        return 2 * (self.lease + self.heartbeat) + self.margin

    def worker_args(self, queues: tuple[str, ...] = ()) -> list[str]:
        """A worker's arguments, serving ``queues`` (``NAME:KIND:SLOTS``; default the
        three queues of a run)."""
        specs = queues or tuple(f"{QUEUES[k]}:{k}:{SLOTS[k]}" for k in KINDS)
        return [
            *(a for spec in specs for a in ("--queue", spec)),
            "--lease-seconds", str(self.lease),
            "--drain-timeout", str(self.drain),
            "--polling-interval", str(self.polling),
            "--log-level", "WARNING",
        ]  # fmt: skip

    def bounds(self) -> Bounds:
        return Bounds(
            lease=self.lease,
            heartbeat=self.heartbeat,
            grace=ProcessExecutor.kill_grace_seconds,
            cancel_poll=min(1.0, self.heartbeat),
            margin=self.margin,
        )


@dataclass(frozen=True)
class Planned:
    job: Job
    expect: Expect
    kind: str

    @property
    def key(self) -> str:
        return self.expect.key


def plan(settings: Settings, extra: tuple[str, ...] = ()) -> list[Planned]:
    """The jobs of a run: :data:`COMMON` plus ``extra`` behaviours on each executor
    (``stubborn`` on threads only: elsewhere an interrupt reaches the body)."""
    planned: list[Planned] = []
    for kind in KINDS:
        for behaviour in (*COMMON, *extra):
            if behaviour == "stubborn" and kind != "threads":
                continue
            copies = settings.copies if behaviour == "succeed" else 1
            planned += [planned_job(settings, kind, behaviour, i) for i in range(copies)]
    return planned


def planned_job(settings: Settings, kind: str, behaviour: str, index: int) -> Planned:
    spec = SPECS[behaviour]
    key = f"{QUEUES[kind]}-{behaviour}-{index}"
    seconds = settings.hold if behaviour == "hold" else spec.seconds
    job = Job(
        func="tests.fault_tasks:work_async" if kind == "async" else "tests.fault_tasks:work",
        queue=QUEUES[kind],
        kwargs={
            "key": key,
            "behaviour": behaviour,
            "kind": kind,
            "seconds": seconds,
            "k": spec.k,
            "again": settings.hold_again,
        },
        max_attempts=spec.max_attempts,
        timeout=spec.timeout,
        priority=spec.priority,
        retry=QUICK,
    )
    max_run = None
    if behaviour == "overrun" and spec.timeout is not None:
        max_run = spec.timeout + ProcessExecutor.kill_grace_seconds + settings.margin
    expect = Expect(key, behaviour, spec.state, spec.attempts, spec.error, max_run)
    return Planned(job, expect, kind)
