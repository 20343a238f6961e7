"""The receiver of PagerDuty's v3 webhooks: ``POST <public base>/pagerduty/webhooks/{key}``.

Each subscription pdauth makes delivers here under its own unguessable key
(:mod:`pdauth.subscriptions`). The body is read up to 256 KB (more is a 413), then
:meth:`pdauth.subscriptions.PagerDutyEvents.receive` checks and records it, and the answer goes
out at once: 2xx for a delivery recorded now or before (a repeated ``X-Webhook-Id``), a 4xx
PagerDuty will not retry for a bad or missing signature, an unknown key or a body that is no
v3 event, and 503 (retried) when the database is unavailable. The Python hooks run after the
answer, as a background task, so PagerDuty's 5-second limit never waits on them.
"""

from __future__ import annotations

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pdauth.service.core import service_of
from pdauth.subscriptions import RECEIVER_PATH, events_of

__all__ = ["ROUTES", "receive"]


async def receive(request: Request) -> Response:
    """One delivery from PagerDuty (see the module docstring)."""
    # The service's security middleware has already refused a body over MAX_BODY (413) on
    # this route, by its Content-Length or as it streamed; receive() checks it again as the
    # library's entry point.
    body = await request.body()
    events = events_of(await service_of(request).connector())
    result = await events.receive(request.path_params["key"], request.headers, body)
    task = None if result.notice is None else BackgroundTask(events.dispatch, result.notice)
    return JSONResponse({"status": result.reason}, status_code=result.status, background=task)


ROUTES: list[Route] = [
    Route(RECEIVER_PATH + "{key}", receive, methods=["POST"], name="pagerduty_webhooks"),
]
