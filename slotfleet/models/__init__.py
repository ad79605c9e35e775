"""Plain data shared by every layer: jobs, references, queue settings, errors.

This package is the bottom of the stack. It performs no I/O and imports nothing else
from slotfleet, so the store, the worker, the operator and the CLI can all speak in
the same terms without depending on one another.

Names are loaded on first use (PEP 562): ``from slotfleet.models import JobId`` loads
only the pydantic-free ``values`` module. ``claimed``, ``values``, ``queues``, ``fleet``
and ``errors`` need no pydantic, and they are all a worker builds: a worker loads none
(the job models of ``jobs`` and the CRD's of ``resource`` are pydantic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slotfleet._exports import lazy_exports

if TYPE_CHECKING:
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
    from slotfleet.models.fleet import FleetSnapshot, QueueSnapshot
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

_WHERE = {
    "Completion": "slotfleet.models.values",
    "ExecutorKind": "slotfleet.models.queues",
    "FinishedCounts": "slotfleet.models.jobs",
    "FleetSnapshot": "slotfleet.models.fleet",
    "FunctionNotAllowedError": "slotfleet.models.errors",
    "FunctionPolicy": "slotfleet.models.queues",
    "InvalidJobError": "slotfleet.models.errors",
    "InvalidSettingsError": "slotfleet.models.errors",
    "Job": "slotfleet.models.jobs",
    "JobError": "slotfleet.models.jobs",
    "JobId": "slotfleet.models.values",
    "JobNotFoundError": "slotfleet.models.errors",
    "JobState": "slotfleet.models.values",
    "JobSummary": "slotfleet.models.jobs",
    "Outcome": "slotfleet.models.values",
    "QueuePause": "slotfleet.models.queues",
    "QueueSnapshot": "slotfleet.models.fleet",
    "QueueSettings": "slotfleet.models.queues",
    "QueueStats": "slotfleet.models.queues",
    "QueuedJob": "slotfleet.models.jobs",
    "RateLimit": "slotfleet.models.queues",
    "Reference": "slotfleet.models.jobs",
    "RetryPolicy": "slotfleet.models.jobs",
    "SUMMARY_ERROR_CHARS": "slotfleet.models.values",
    "SlotfleetError": "slotfleet.models.errors",
    "StoreError": "slotfleet.models.errors",
    "StoreUnavailableError": "slotfleet.models.errors",
    "TERMINAL_STATES": "slotfleet.models.values",
    "UnknownFunctionError": "slotfleet.models.errors",
    "WorkerHeartbeat": "slotfleet.models.queues",
    "WorkerId": "slotfleet.models.queues",
    "describe_validation_error": "slotfleet.models.errors",
}


__getattr__ = lazy_exports(__name__, _WHERE, globals())


__all__ = [
    "SUMMARY_ERROR_CHARS",
    "TERMINAL_STATES",
    "Completion",
    "ExecutorKind",
    "FinishedCounts",
    "FleetSnapshot",
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
    "QueueSnapshot",
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
