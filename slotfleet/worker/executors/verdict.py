"""How an attempt ends: the :class:`~slotfleet.models.Completion` for what a job did (its
result, its exception, the reason its cancel token gives), as the outcomes listed in
:mod:`~slotfleet.worker.executors.base` say.

Pure functions of the attempt and the worker's id and clock: they encode the result once
(or take the text a process executor's child encoded), build the failure's
:class:`~slotfleet.models.JobError` and the retry's delay. What this module is not: it
does not hand the completion to the worker, count it or free a slot (the executor base
does), and it never raises for a job's own misbehaviour: :func:`undecided` is the
answer when deciding itself failed.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime
from typing import Any, Protocol

from slotfleet.models.claimed import ClaimedJob
from slotfleet.models.values import Completion, Outcome, check_encoded_payload
from slotfleet.worker.context import JobCancelled
from slotfleet.worker.executors.functions import encode_result
from slotfleet.worker.executors.outcomes import (
    JobReleased,
    UnstorableMetaError,
    describe_error,
    safe_str,
)

log = logging.getLogger(__name__)


class Clocked(Protocol):
    """What a verdict needs of the worker: its id, and its clock for error records."""

    @property
    def worker_id(self) -> str: ...

    def now(self) -> datetime: ...


def decide(
    job: ClaimedJob,
    exc: Exception | None,
    result: Any,
    worker: Clocked,
    *,
    meta: dict[str, Any] | None = None,
    meta_problem: str | None = None,
    result_json: str | None = None,
) -> Completion:
    """The completion for an attempt that ended with ``exc`` or ``result``.

    The result is encoded once, here (or, given as ``result_json``, not at all: a
    process executor's child encoded and checked it), and the store writes that text.

    ``meta`` (checked) is stored with it whatever the outcome. ``meta_problem`` says
    why the job's meta cannot be: it fails an attempt that succeeded otherwise, is
    added to the error of one that failed, and is only logged for a cancelled or
    handed-back attempt; the stored meta stays as it was."""
    worker_id = worker.worker_id
    token = job.lease_token or ""
    if exc is None and meta_problem is not None:
        exc = UnstorableMetaError(meta_problem)
    if exc is None:
        try:
            if result_json is None and result is not None:
                result_json = encode_result(result)
                check_encoded_payload(result, result_json, "result")
        except (TypeError, ValueError) as bad:
            exc = bad
        else:
            return Completion(
                job_id=job.id,
                worker_id=worker_id,
                token=token,
                attempt=job.attempts,
                outcome=Outcome.SUCCEEDED,
                result=result,
                result_json=result_json,
                meta=meta,
            )
    if isinstance(exc, JobCancelled | JobReleased):
        if meta_problem is not None:
            log.warning("job %s: %s; the stored meta is kept", job.id, meta_problem)
        outcome = Outcome.CANCELLED if isinstance(exc, JobCancelled) else Outcome.RELEASED
    else:
        outcome = Outcome.FAILED
    ended = Completion(
        job_id=job.id,
        worker_id=worker_id,
        token=token,
        attempt=job.attempts,
        outcome=outcome,
        meta=meta,
    )
    if outcome is not Outcome.FAILED:
        return ended
    text, tb = describe_error(exc)
    if meta_problem is not None and not isinstance(exc, UnstorableMetaError):
        text = f"{text} (and {meta_problem})"
    from slotfleet.models.jobs import JobError  # a failure's record: off the hot path

    error = JobError(attempt=job.attempts, error=text, traceback=tb, at=worker.now())
    if job.attempts < job.max_attempts:
        delay = job.retry.delay(job.attempts, random.random())
        return ended.replace(outcome=Outcome.RETRY, error=error, retry_delay=delay)
    return ended.replace(error=error)


def undecided(job: ClaimedJob, bad: Exception, worker: Clocked) -> Completion:
    """The completion of an attempt whose outcome could not be decided (``bad`` was
    raised while deciding): a failure saying so, retried after the policy's cap
    while attempts remain. Built from values known to be valid, so it cannot fail."""
    text = f"the attempt's outcome could not be recorded: {type(bad).__name__}: {safe_str(bad)}"
    from slotfleet.models.jobs import JobError

    error = JobError(attempt=job.attempts, error=text, at=worker.now())
    failed = Completion(
        job_id=job.id,
        worker_id=worker.worker_id,
        token=job.lease_token or "",
        attempt=job.attempts,
        outcome=Outcome.FAILED,
        error=error,
    )
    if job.attempts < job.max_attempts:
        return failed.replace(outcome=Outcome.RETRY, retry_delay=job.retry.cap)
    return failed
