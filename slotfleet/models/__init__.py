"""Plain data shared by every layer: jobs, references, queue settings, errors.

This package is the bottom of the stack. It performs no I/O and imports nothing else
from slotfleet, so the store, the worker, the operator and the CLI can all speak in
the same terms without depending on one another.
"""

from slotfleet.models.errors import (
    FunctionNotAllowedError,
    InvalidJobError,
    InvalidSettingsError,
    JobNotFoundError,
    SlotfleetError,
    StoreError,
    StoreUnavailableError,
    UnknownFunctionError,
    describe_validation_error,
)
from slotfleet.models.jobs import (
    SUMMARY_ERROR_CHARS,
    TERMINAL_STATES,
    Completion,
    FinishedCounts,
    Job,
    JobError,
    JobId,
    JobState,
    JobSummary,
    Outcome,
    QueuedJob,
    Reference,
    RetryPolicy,
)
from slotfleet.models.queues import (
    ExecutorKind,
    FunctionPolicy,
    QueuePause,
    QueueSettings,
    QueueStats,
    RateLimit,
    WorkerHeartbeat,
    WorkerId,
)

__all__ = [
    "SUMMARY_ERROR_CHARS",
    "TERMINAL_STATES",
    "Completion",
    "ExecutorKind",
    "FinishedCounts",
    "FunctionNotAllowedError",
    "FunctionPolicy",
    "InvalidJobError",
    "InvalidSettingsError",
    "Job",
    "JobError",
    "JobId",
    "JobNotFoundError",
    "JobState",
    "JobSummary",
    "Outcome",
    "QueuePause",
    "QueueSettings",
    "QueueStats",
    "QueuedJob",
    "RateLimit",
    "Reference",
    "RetryPolicy",
    "SlotfleetError",
    "StoreError",
    "StoreUnavailableError",
    "UnknownFunctionError",
    "WorkerHeartbeat",
    "WorkerId",
    "describe_validation_error",
]
