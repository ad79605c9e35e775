"""The HTML pages and the fragments they refresh themselves with.

A page is its frame (header, navigation, the action token box when actions are on) around
a live region; the region's fragment is rendered by the same template alone, and the
page's script fetches it every refresh interval and swaps it in. So the first paint and
every update are one rendering, escaped by the template engine.

What this module is not: figures (``views``) or the JSON API (``api``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse

from slotfleet.dashboard.charts import stacked_bars
from slotfleet.dashboard.context import Dashboard
from slotfleet.dashboard.views import JobFilter, job_detail, listing
from slotfleet.models import JobState

#: States in the listing's filter, in the order a job lives through them.
STATES = [s.value for s in JobState]


def dashboard(request: Request) -> Dashboard:
    dash: Dashboard = request.app.state.dashboard
    return dash


def frame(dash: Dashboard, page: str) -> dict[str, Any]:
    """What the frame of every page needs."""
    settings = dash.settings
    return {
        "page": page,
        "store": dash.location,
        "refresh_ms": int(settings.refresh_seconds * 1000),
        "actions": settings.actions,
    }


def render(dash: Dashboard, template: str, **context: Any) -> HTMLResponse:
    """``template`` with ``context``; whether actions are on is known to every template."""
    context.setdefault("actions", dash.settings.actions)
    return HTMLResponse(dash.templates.get_template(template).render(**context))


def job_filter(request: Request, dash: Dashboard) -> JobFilter:
    query = {key: request.query_params.getlist(key) for key in request.query_params}
    return JobFilter.from_query(query, dash.settings.page_size)


async def overview_context(dash: Dashboard) -> dict[str, Any]:
    ov = await dash.overview()
    chart = stacked_bars(ov.throughput.buckets)
    return {"ov": ov, "chart": chart}


async def overview_page(request: Request) -> HTMLResponse:
    dash = dashboard(request)
    context = await overview_context(dash)
    return render(dash, "overview.html", **frame(dash, "overview"), **context)


async def overview_fragment(request: Request) -> HTMLResponse:
    dash = dashboard(request)
    return render(dash, "_overview.html", **await overview_context(dash))


async def jobs_context(request: Request, dash: Dashboard) -> dict[str, Any]:
    wanted = job_filter(request, dash)
    page = await listing(await dash.app(), wanted)
    older = None
    if page.next_after is not None:
        older = "/jobs?" + urlencode(wanted.query(after=page.next_after), doseq=True)
    newest = "/jobs?" + urlencode(wanted.query(after=None), doseq=True)
    return {
        "listing": page,
        "older": older,
        "newest": newest if wanted.after is not None else None,
        "live": "/fragments/jobs?" + urlencode(wanted.query(), doseq=True),
        "states": STATES,
    }


async def jobs_page(request: Request) -> HTMLResponse:
    dash = dashboard(request)
    context = await jobs_context(request, dash)
    return render(dash, "jobs.html", **frame(dash, "jobs"), **context)


async def jobs_fragment(request: Request) -> HTMLResponse:
    dash = dashboard(request)
    return render(dash, "_jobs.html", **await jobs_context(request, dash))


async def job_context(request: Request, dash: Dashboard) -> dict[str, Any]:
    detail = await job_detail(await dash.app(), int(request.path_params["job_id"]))
    return {"detail": detail, "job": detail.job}


async def job_page(request: Request) -> HTMLResponse:
    dash = dashboard(request)
    context = await job_context(request, dash)
    return render(dash, "job.html", **frame(dash, "job"), **context)


async def job_fragment(request: Request) -> HTMLResponse:
    dash = dashboard(request)
    return render(dash, "_job.html", **await job_context(request, dash))
