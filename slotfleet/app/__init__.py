"""The client API: ``@job``, :class:`App` (async) and :class:`SyncApp` (blocking)."""

from slotfleet.app.client import App
from slotfleet.app.decorator import JobFunction, job
from slotfleet.app.sync import SyncApp

__all__ = ["App", "JobFunction", "SyncApp", "job"]
