"""The client API: ``@job``, :class:`App` (async) and :class:`SyncApp` (blocking).

Names are loaded on first use (PEP 562): a task module's ``from slotfleet import job``
loads the decorator only, not the client and its pydantic models, so a worker importing
its jobs' modules stays without them (see ``decorator.defer_option_checks``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slotfleet._exports import lazy_exports

if TYPE_CHECKING:
    from slotfleet.app.client import App
    from slotfleet.app.decorator import JobFunction, job
    from slotfleet.app.sync import SyncApp

_WHERE = {
    "App": "slotfleet.app.client",
    "JobFunction": "slotfleet.app.decorator",
    "SyncApp": "slotfleet.app.sync",
    "job": "slotfleet.app.decorator",
}


__getattr__ = lazy_exports(__name__, _WHERE, globals())


__all__ = ["App", "JobFunction", "SyncApp", "job"]
