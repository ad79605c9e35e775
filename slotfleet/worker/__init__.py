"""The worker runtime: executors, the worker loop, metrics and health, cancel sources.

Names are loaded on first use: a process executor's child imports
``slotfleet.worker.executors._child`` and task code imports
``slotfleet.worker.context``; neither should pay for prometheus_client, the HTTP server or a
store driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slotfleet._exports import lazy_exports

if TYPE_CHECKING:
    from slotfleet.health_server import MetricsServerConfig
    from slotfleet.worker.cancel import CancelSource, StoreCancelSource, WorkerControl
    from slotfleet.worker.context import CancelToken, JobCancelled, current_token
    from slotfleet.worker.worker import Worker

_EXPORTS = {
    "CancelSource": "slotfleet.worker.cancel",
    "CancelToken": "slotfleet.worker.context",
    "JobCancelled": "slotfleet.worker.context",
    "MetricsServerConfig": "slotfleet.health_server",
    "StoreCancelSource": "slotfleet.worker.cancel",
    "Worker": "slotfleet.worker.worker",
    "WorkerControl": "slotfleet.worker.cancel",
    "current_token": "slotfleet.worker.context",
}


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())


__all__ = [
    "CancelSource",
    "CancelToken",
    "JobCancelled",
    "MetricsServerConfig",
    "StoreCancelSource",
    "Worker",
    "WorkerControl",
    "current_token",
]
