"""slotfleet: a Python job queue whose worker fleet is run by a Kubernetes operator.

The names below are loaded on first use, so importing a submodule (a worker's child
process importing ``slotfleet.models``, say) does not pull in the whole client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slotfleet._exports import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "App": "slotfleet.app",
    "SyncApp": "slotfleet.app",
    "job": "slotfleet.app",
    "Job": "slotfleet.models",
    "QueuedJob": "slotfleet.models",
    "JobState": "slotfleet.models",
    "Reference": "slotfleet.models",
    "RetryPolicy": "slotfleet.models",
    "SlotfleetError": "slotfleet.models",
}

if TYPE_CHECKING:
    from slotfleet.app import App, SyncApp, job
    from slotfleet.models import Job, JobState, QueuedJob, Reference, RetryPolicy, SlotfleetError


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())


__all__ = [
    "App",
    "Job",
    "JobState",
    "QueuedJob",
    "Reference",
    "RetryPolicy",
    "SlotfleetError",
    "SyncApp",
    "job",
]
