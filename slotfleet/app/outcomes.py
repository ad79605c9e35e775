"""What an action did to a job, in the words every front end shows (``slotfleet cancel``,
``slotfleet retry`` and the dashboard's buttons), written once."""

from __future__ import annotations

from slotfleet.models import JobState, QueuedJob


def cancel_outcome(job: QueuedJob) -> str:
    """The result of ``App.cancel`` for ``job`` (the job as it returned)."""
    if job.state is JobState.CANCELLED:
        return f"{job.id}: cancelled"
    if job.is_terminal:
        return f"{job.id}: already {job.state}, nothing to cancel"
    return f"{job.id}: cancel requested; its worker will stop it"


def retry_outcome(job: QueuedJob) -> str:
    """The result of ``App.retry`` for ``job`` (the job as it returned)."""
    return f"{job.id}: queued again on {job.queue}"
