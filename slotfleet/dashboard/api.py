"""The JSON API: the views as they are, for scripts and for anything else that wants the
dashboard's figures (documented in docs/operations.md, "The dashboard's JSON API").

``GET /api/overview``, ``GET /api/jobs?queue=&state=&func=&after=&limit=`` and
``GET /api/jobs/ID``. Times are ISO 8601 in UTC, by the store's clock. Actions are in
``actions``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from slotfleet.dashboard.pages import dashboard, job_filter
from slotfleet.dashboard.views import job_detail, listing


async def overview(request: Request) -> JSONResponse:
    return JSONResponse((await dashboard(request).overview()).model_dump(mode="json"))


async def jobs(request: Request) -> JSONResponse:
    dash = dashboard(request)
    page = await listing(await dash.app(), job_filter(request, dash))
    return JSONResponse(page.model_dump(mode="json"))


async def job(request: Request) -> JSONResponse:
    dash = dashboard(request)
    detail = await job_detail(await dash.app(), int(request.path_params["job_id"]))
    return JSONResponse(detail.model_dump(mode="json"))
