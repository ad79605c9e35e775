"""The worker's HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

Served by aiohttp on the worker's own event loop, so ``/healthz`` answering at all shows
the loop is alive. ``/readyz`` is 200 once the store is open and the first heartbeat is
written, and 503 (with the reason: "store unreachable", "draining") before that and
while the worker drains (so a Service stops routing scrapes it would
miss anyway, and a rollout waits for the new pod to be really serving).

What this module is not: it computes no metrics (``metrics.py``) and has no control
endpoints; a worker is controlled through the store or its Queue resource.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from slotfleet.models import InvalidSettingsError


@dataclass(frozen=True)
class MetricsServerConfig:
    """Where the worker serves metrics and health."""

    host: str = "127.0.0.1"
    """Address to listen on; in a pod, the pod's IP (or 0.0.0.0)."""
    port: int = 9464
    """TCP port; 0 disables the server."""


class HealthServer:
    """aiohttp server for metrics and probes."""

    def __init__(
        self,
        config: MetricsServerConfig,
        *,
        render_metrics: Callable[[], bytes],
        alive: Callable[[], bool],
        not_ready: Callable[[], str | None],
    ) -> None:
        """``not_ready`` says why the worker is not serving, or ``None`` when it is."""
        self.config = config
        self._render = render_metrics
        self._alive = alive
        self._not_ready = not_ready
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        try:
            await site.start()
        except (OSError, OverflowError, ValueError) as exc:  # in use, bad host, bad port
            await runner.cleanup()
            reason = str(exc)
            if isinstance(exc, OSError):  # "Address already in use", not asyncio's wrapping
                code = exc.errno or 0
                reason = os.strerror(code) if code > 0 else exc.strerror or reason
            raise InvalidSettingsError(
                f"cannot serve metrics on {self.config.host}:{self.config.port}: {reason}"
            ) from exc
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=self._render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        if self._alive():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="worker loop stopped\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        reason = self._not_ready()
        if reason is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"{reason}\n")
