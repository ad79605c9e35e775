"""The dashboard as an ASGI application (Starlette): routes, errors, security headers.

Three kinds of route share one set of views: pages (``/``, ``/jobs``, ``/jobs/ID``), the
fragments those pages fetch to update themselves in place (``/fragments/...``: the same
templates, without the frame), and the JSON API (``/api/...``; see docs/operations.md).
Actions (``POST /api/...``) are in ``actions``. Errors are one line: JSON for the API,
a small page or fragment otherwise; a store that cannot be reached is a 503, never a
traceback.

What this module is not: a place for figures (``views``) or markup (the templates).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slotfleet.dashboard import actions, api, pages
from slotfleet.dashboard.context import Dashboard
from slotfleet.dashboard.settings import DashboardSettings
from slotfleet.models import (
    InvalidJobError,
    InvalidSettingsError,
    JobNotFoundError,
    SlotfleetError,
    StoreUnavailableError,
)

log = logging.getLogger(__name__)

#: Scripts and styles only from this server, no inline code, no frames, no forms
#: elsewhere: a job's text that slipped past escaping still could not run.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response (static files are cached)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                extra = [
                    (name, value)
                    for name, value in SECURITY_HEADERS
                    if name not in names and not (static and name == b"cache-control")
                ]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


def status_of(exc: SlotfleetError) -> int:
    if isinstance(exc, actions.ActionRefused):
        return exc.status
    if isinstance(exc, JobNotFoundError):
        return 404
    if isinstance(exc, InvalidSettingsError):
        return 400
    if isinstance(exc, InvalidJobError):
        return 409
    if isinstance(exc, StoreUnavailableError):
        return 503
    return 500


async def on_error(request: Request, exc: Exception) -> Response:
    """One line for the user, in the form the route speaks."""
    if not isinstance(exc, SlotfleetError):
        raise exc
    status = status_of(exc)
    message = str(exc)
    if status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, message)
    path = request.url.path
    if path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    dash: Dashboard = request.app.state.dashboard
    if path.startswith("/fragments/"):
        html = dash.templates.get_template("_error.html").render(message=message)
        return HTMLResponse(html, status_code=status)
    html = dash.templates.get_template("error.html").render(
        message=message, status=status, **pages.frame(dash, "error")
    )
    return HTMLResponse(html, status_code=status)


async def favicon(request: Request) -> Response:
    """No icon: answered so browsers do not log a 404 on every page."""
    return Response(status_code=204)


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return PlainTextResponse("ok\n")


async def readyz(request: Request) -> Response:
    """Readiness: the store answers."""
    dash: Dashboard = request.app.state.dashboard
    try:
        await (await dash.app()).now()
    except SlotfleetError as exc:
        return PlainTextResponse(f"store not ready: {exc}\n", status_code=503)
    return PlainTextResponse("ok\n")


def create_app(settings: DashboardSettings, dashboard: Dashboard | None = None) -> Starlette:
    """The ASGI application for ``settings`` (``dashboard`` for a caller that opened one
    already, as ``server`` does to report the store's state before listening)."""
    dash = dashboard or Dashboard(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await dash.close()

    routes = [
        Route("/", pages.overview_page),
        Route("/jobs", pages.jobs_page),
        Route("/jobs/{job_id:int}", pages.job_page),
        Route("/fragments/overview", pages.overview_fragment),
        Route("/fragments/jobs", pages.jobs_fragment),
        Route("/fragments/jobs/{job_id:int}", pages.job_fragment),
        Route("/api/overview", api.overview),
        Route("/api/jobs", api.jobs),
        Route("/api/jobs/{job_id:int}", api.job),
        Route("/api/jobs/{job_id:int}/cancel", actions.cancel, methods=["POST"]),
        Route("/api/jobs/{job_id:int}/retry", actions.retry, methods=["POST"]),
        Route("/api/purge", actions.purge, methods=["POST"]),
        Route("/favicon.ico", favicon),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Mount("/static", StaticFiles(packages=[("slotfleet.dashboard", "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={SlotfleetError: on_error},
        lifespan=lifespan,
    )
    app.state.dashboard = dash
    app.add_middleware(SecurityHeaders)
    return app
