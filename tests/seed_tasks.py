"""Jobs written the way Chancy's own tests write them, for ``test_seed_scenarios.py``.

Chancy declares jobs such as ``def job_with_instance(*, context: QueuedJob)`` and expects
the executor to hand the running job to ``context``. This module is written as a user
porting such jobs would write it, and on purpose in the hardest form for the executors:
``from __future__ import annotations`` makes every annotation a string, and ``QueuedJob``
is imported only for type checkers, so the worker must still resolve ``"QueuedJob"`` to
slotfleet's class (in its own process and in a process executor's child). Each is
registered with ``@job``, since slotfleet's workers run only those by default (a port that
keeps Chancy's undecorated functions runs its queues with ``functions: any``).

Child processes import this module, so it stays importable with only the repository
root on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from slotfleet import job
from slotfleet.models.jobs import MAX_PAYLOAD_BYTES
from slotfleet.worker.context import current_token

if TYPE_CHECKING:
    import slotfleet
    from slotfleet import QueuedJob


@job
def job_to_run() -> None:
    return None


@job
async def async_job_to_run() -> None:
    return None


@job
def job_with_instance(*, context: QueuedJob) -> None:
    context.meta["received_instance"] = True


@job
async def async_job_with_instance(*, context: QueuedJob) -> None:
    context.meta["received_instance"] = True


@job
def job_with_instance_under_other_names(
    steps: int, *, job: slotfleet.QueuedJob | None = None, also: Annotated[QueuedJob, "x"]
) -> int:
    """Any keyword-only name; ``Optional`` and ``Annotated`` forms; a positional kwarg."""
    assert job is also, "both parameters get the same instance"
    assert job is not None
    job.meta["steps"] = steps
    job.meta["seen_kwargs"] = sorted(job.kwargs)
    return steps


@job
def job_with_kwarg_generic(*, hello: list[str]) -> None:
    """Chancy's scenario passes ``hello="world"``: only the signature matters here (a
    generic annotation that is not the instance type must not trip the inspection)."""
    del hello


def _mark(marker: str | None) -> None:
    if marker:
        Path(marker).write_text("started")


@job
async def very_long_job(marker: str | None = None) -> None:
    _mark(marker)
    await asyncio.sleep(60 * 60)


@job
def sync_very_long_job(marker: str | None = None) -> None:
    _mark(marker)
    time.sleep(60)


@job
def slow_job_to_run() -> None:
    time.sleep(3)


@job
def job_that_fails() -> None:
    raise ValueError("This job should fail.")


@job
async def async_job_that_fails() -> None:
    raise ValueError("This job should fail.")


@job
def record(log: str, label: str) -> str:
    """Appends ``label`` to the file ``log``: the order in which jobs ran."""
    with Path(log).open("a") as out:
        out.write(label + "\n")
    return label


@job
async def async_record(log: str, label: str) -> str:
    return record(log, label)


@job
def count_attempts(*, context: QueuedJob) -> None:
    """Counts its attempts in ``meta`` and fails on each: a retry sees what the attempt
    before it stored."""
    context.meta["attempts_seen"] = int(context.meta.get("attempts_seen", 0)) + 1
    raise ConnectionError(f"attempt {context.attempts} fails")


@job
async def async_count_attempts(*, context: QueuedJob) -> None:
    count_attempts(context=context)


@job
def oversized_meta(*, context: QueuedJob) -> str:
    context.meta["blob"] = "x" * MAX_PAYLOAD_BYTES
    return "done"


@job
async def async_oversized_meta(*, context: QueuedJob) -> str:
    return oversized_meta(context=context)


@job
def unserializable_meta(*, context: QueuedJob) -> str:
    context.meta["when"] = object()
    return "done"


@job
async def async_unserializable_meta(*, context: QueuedJob) -> str:
    return unserializable_meta(context=context)


@job
def progress_then_sleep(marker: str, *, context: QueuedJob) -> None:
    """Leaves progress in ``meta``, then waits on its cancel token until stopped (a
    thread returns when the token is set; in a process child SIGTERM raises in it)."""
    context.meta["progress"] = 0.5
    _mark(marker)
    current_token().wait(60)


@job
async def async_progress_then_sleep(marker: str, *, context: QueuedJob) -> None:
    context.meta["progress"] = 0.5
    _mark(marker)
    await asyncio.sleep(60)
