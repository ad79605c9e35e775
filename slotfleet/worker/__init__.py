"""The worker runtime: executors, the worker loop, metrics and health, cancel sources.

Names are loaded on first use: a process executor's child imports
``slotfleet.worker.executors._child`` and task code imports
``slotfleet.worker.context``; neither should pay for prometheus_client, the HTTP server or a
store driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


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
