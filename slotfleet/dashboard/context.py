"""The state one dashboard process keeps between requests: its settings, its ``App``
(opened lazily, so a dashboard started while the database is down serves an error page
and recovers by itself), the page templates, and the overview shared by every viewer.

The overview is computed by one request at a time and shared for half the refresh
interval, or four times as long as it last took to compute when that is longer: ten open
pages poll the store no more than one does, and a store whose queue counts are slow (they
count every job; about half a second per million on PostgreSQL) spends at most a fifth
of its time on them while someone watches.

What this module is not: a cache of jobs. A listing or a job page always reads the store.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

import jinja2

from slotfleet.app import App
from slotfleet.dashboard.settings import DashboardSettings
from slotfleet.dashboard.views import Overview, overview
from slotfleet.models import StoreUnavailableError


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    """``0.4 s``, ``12 s``, ``3m 05s``, ``2h 10m``, ``3d 4h``."""
    if value is None:
        return ""
    if value < 10:
        return f"{value:.1f} s"
    whole = int(value)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def templates() -> jinja2.Environment:
    """The page templates, escaping every value (a job's kwargs, result and errors are
    untrusted input) and refusing an undefined name instead of rendering it empty."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("slotfleet.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, seconds=_seconds, percent=_percent, pretty=_pretty)
    return env


class Dashboard:
    """Per-process state behind every request."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.templates = templates()
        self._app = App(settings.dsn)
        self._opened = False
        self._open_lock = asyncio.Lock()
        self._overview: tuple[float, Overview] | None = None
        self._overview_lock = asyncio.Lock()
        self._overview_cost = 0.0

    @property
    def location(self) -> str:
        return self._app.location

    async def app(self) -> App:
        """The open ``App``; opening it again after the store was unreachable."""
        if not self._opened:
            async with self._open_lock:
                if not self._opened:
                    await self._app.open()
                    self._opened = True
        return self._app

    async def try_open(self) -> str | None:
        """Open at start; the reason it could not (the store unreachable), else ``None``.
        Other errors (a DSN no backend understands) are raised: they will not heal."""
        try:
            await self.app()
        except StoreUnavailableError as exc:
            return str(exc)
        return None

    async def overview(self) -> Overview:
        max_age = max(self.settings.refresh_seconds / 2, 4 * self._overview_cost)
        cached = self._overview
        if cached is not None and time.monotonic() - cached[0] < max_age:
            return cached[1]
        async with self._overview_lock:
            cached = self._overview
            if cached is not None and time.monotonic() - cached[0] < max_age:
                return cached[1]
            started = time.monotonic()
            fresh = await overview(await self.app(), self.settings.view)
            done = time.monotonic()
            self._overview, self._overview_cost = (done, fresh), done - started
            return fresh

    async def close(self) -> None:
        if self._opened:
            self._opened = False
            await self._app.close()
