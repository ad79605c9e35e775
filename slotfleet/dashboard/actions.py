"""The dashboard's actions: cancel a job, retry a failed or cancelled one, purge finished
jobs. Each is the ``App`` verb the command line runs (``slotfleet cancel``, ``retry``,
``purge``), with the same words for what happened.

Off unless the dashboard was started with actions on; then every request must carry
``Authorization: Bearer TOKEN``. A header, not a cookie: another site's page cannot make
a browser send it, so no cross-site request can act. Tokens are compared in constant
time. Refusals are 403 (actions off) and 401 (no or wrong token), one line each.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from slotfleet.app.durations import parse_duration
from slotfleet.app.outcomes import cancel_outcome, retry_outcome
from slotfleet.dashboard.pages import dashboard
from slotfleet.models import InvalidSettingsError, SlotfleetError

#: Largest action request body read (a purge's two fields).
MAX_BODY_BYTES = 4096


class ActionRefused(SlotfleetError):
    """The action was refused."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def authorize(request: Request) -> None:
    settings = dashboard(request).settings
    if not settings.actions or settings.token is None:
        raise ActionRefused(
            403, "actions are off on this dashboard (start it with --enable-actions)"
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = settings.token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise ActionRefused(401, "this action needs the dashboard's token (Authorization: Bearer)")


async def body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidSettingsError(f"the request body is over {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidSettingsError("the request body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidSettingsError("the request body must be a JSON object")
    return data


async def cancel(request: Request) -> JSONResponse:
    authorize(request)
    app = await dashboard(request).app()
    job = await app.cancel(int(request.path_params["job_id"]))
    return JSONResponse({"message": cancel_outcome(job), "job": job.model_dump(mode="json")})


async def retry(request: Request) -> JSONResponse:
    authorize(request)
    app = await dashboard(request).app()
    job = await app.retry(int(request.path_params["job_id"]))
    return JSONResponse({"message": retry_outcome(job), "job": job.model_dump(mode="json")})


async def purge(request: Request) -> JSONResponse:
    """``{"older_than": "7d", "queue": "emails"}``; ``queue`` empty or absent: all."""
    authorize(request)
    data = await body(request)
    unknown = sorted(set(data) - {"older_than", "queue"})
    if unknown:
        raise InvalidSettingsError(f"unknown field {unknown[0]!r} (use older_than, queue)")
    older_than = data.get("older_than")
    queue = data.get("queue") or None
    if not isinstance(older_than, str) or (queue is not None and not isinstance(queue, str)):
        raise InvalidSettingsError('purge needs {"older_than": "7d"} and optionally a queue')
    age = parse_duration(older_than)
    app = await dashboard(request).app()
    deleted = await app.purge(age, queue=queue)
    where = f" from queue {queue}" if queue else ""
    message = f"deleted {deleted} finished job(s){where} older than {age}"
    return JSONResponse({"message": message, "deleted": deleted})
