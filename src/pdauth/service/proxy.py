"""A PagerDuty proxy for backends not written in Python:
``ANY /api/v1/connections/{connection_id}/proxy/{path}``.

A host backend holding an API key (Node, Go, …) calls PagerDuty's REST API *through* a
connection without ever seeing its token: the call goes out through the connection's
:class:`~pdauth.client.PagerDutyClient` (paced per credential, refreshed once after a 401,
retried after 5xx and 429 within a 20 s deadline) and PagerDuty's status and JSON body come back.

What is forwarded: the method (GET, POST, PUT, PATCH, DELETE), the query string, a JSON body
(``application/json``, at most :data:`MAX_PROXY_BODY` bytes) and a ``From`` header (an email
address, which PagerDuty asks of some writes). What comes back: the status, the body, and only
``Content-Type``, ``Retry-After`` and the rate-limit headers (hop-by-hop headers, cookies and
everything else are dropped). Only PagerDuty REST paths are proxied: the first segment must be
one of PagerDuty's REST resources (:data:`REST_RESOURCES`) and every segment plain
``[A-Za-z0-9_-]`` once decoded — no dot segments, empty segments, schemes or hosts — so a
call can never reach the identity host (``/oauth/token``) or anything outside the API base.
A connection that needs re-authorization (or was revoked) answers 409 like the other routes.
"""

from __future__ import annotations

import contextvars
import json
import math
import re
from typing import Any, Final

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pdauth.errors import PagerDutyAPIError, RequestRefusedError
from pdauth.service.api import authenticate, connection_id_of
from pdauth.service.core import Service, service_of
from pdauth.service.views import ApiError

__all__ = ["MAX_PROXY_BODY", "REST_RESOURCES", "ROUTES", "proxied_path"]

MAX_PROXY_BODY: Final = 32 * 1024
MAX_PROXY_PATH: Final = 1024
METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: The first path segments of PagerDuty's REST API (its published OpenAPI document).
REST_RESOURCES: Final = frozenset(
    {
        "abilities", "addons", "alert_grouping_settings", "analytics", "audit",
        "automation_actions", "business_services", "change_events", "enrichment",
        "escalation_policies", "event_orchestrations", "extension_schemas", "extensions",
        "incident_workflows", "incidents", "ip_allow_lists", "license_allocations", "licenses",
        "log_entries", "maintenance_windows", "notifications", "oauth_delegations", "oncalls",
        "paused_incident_reports", "priorities", "recommendations", "rulesets", "schedules",
        "service_dependencies", "services", "session_configurations", "sre_agent", "standards",
        "status_dashboards", "status_pages", "tags", "teams", "templates", "users", "v3",
        "vendors", "webhook_subscriptions", "workflows",
    }
)  # fmt: skip
_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,128}")
_FROM = re.compile(r"[^\s@<>\"\\]{1,200}@[^\s@<>\"\\]{1,118}")
_PASSED_HEADERS: Final = (
    "content-type",
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
)
_ANSWERS: contextvars.ContextVar[list[httpx.Response] | None] = contextvars.ContextVar(
    "pdauth_proxy_answers", default=None
)


def proxied_path(path: object) -> str | None:
    """``/<path>`` when ``path`` is a plain PagerDuty REST path, else ``None``."""
    if not isinstance(path, str) or not 0 < len(path) <= MAX_PROXY_PATH:
        return None
    segments = path.split("/")
    if segments[0] not in REST_RESOURCES:
        return None
    if not all(_SEGMENT.fullmatch(segment) for segment in segments):
        return None
    return "/" + path


async def _record(response: httpx.Response) -> None:
    answers = _ANSWERS.get()
    if answers is not None:
        answers.append(response)


def _http(service: Service) -> httpx.AsyncClient:
    """The proxy's connection pool: records each answer of the current call (the client
    returns parsed bodies; the proxy returns PagerDuty's own status and bytes)."""
    if service.proxy_http is None:
        service.proxy_http = httpx.AsyncClient(
            transport=service.transport,
            follow_redirects=False,
            timeout=10.0,
            event_hooks={"response": [_record]},
        )
    return service.proxy_http


async def proxy(request: Request) -> Response:
    authenticate(request)
    service = service_of(request)
    connection_id = connection_id_of(request)
    # Checked decoded: an escape can only decode to a character the segments refuse (or to
    # "/", which then separates segments like any other).
    path = proxied_path(request.path_params.get("path"))
    if path is None:
        raise ApiError(400, "invalid_path", "only PagerDuty REST API paths can be proxied")
    body = await _body(request)
    headers = _from_header(request)
    connector = await service.connector()
    connection = await connector.get(connection_id)
    client = await connector.client(connection, http=_http(service), timeout=10.0, deadline=20.0)
    answers: list[httpx.Response] = []
    retry_after: float | None = None
    token = _ANSWERS.set(answers)
    try:
        async with client:
            await client.request(
                request.method, path, params=_params(request), json=body, headers=headers
            )
    except RequestRefusedError:
        raise ApiError(
            400, "invalid_path", "only PagerDuty REST API paths can be proxied"
        ) from None
    except PagerDutyAPIError as exc:
        if not answers or answers[-1].status_code != exc.status:
            return _synthesized(exc)
        retry_after = getattr(exc, "retry_after", None)
    finally:
        _ANSWERS.reset(token)
    return _relayed(answers[-1], retry_after)


async def _body(request: Request) -> Any:
    chunks = b""
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > MAX_PROXY_BODY:
            raise ApiError(413, "too_large", f"the body must be at most {MAX_PROXY_BODY} bytes")
    if not chunks.strip():
        return None
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        return json.loads(chunks)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_request", "the body is not valid JSON") from None


def _from_header(request: Request) -> dict[str, str]:
    values = request.headers.getlist("from")
    if not values:
        return {}
    if len(values) > 1 or _FROM.fullmatch(values[0]) is None:
        raise ApiError(400, "invalid_request", "From must be one PagerDuty user's email address")
    return {"From": values[0]}


def _params(request: Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    return params


def _relayed(answer: httpx.Response, retry_after: float | None = None) -> Response:
    headers = {name: answer.headers[name] for name in _PASSED_HEADERS if name in answer.headers}
    if retry_after is not None and "retry-after" not in headers:
        # The client's reading of PagerDuty's rate-limit headers, for callers that only know
        # Retry-After.
        headers["retry-after"] = _seconds(retry_after)
    if answer.status_code == 204 or not answer.content:
        headers.pop("content-type", None)
        return Response(status_code=answer.status_code, headers=headers)
    return Response(answer.content, status_code=answer.status_code, headers=headers)


def _synthesized(exc: PagerDutyAPIError) -> Response:
    # No answer of PagerDuty's to relay (e.g. the pacer knew the window was spent): the error
    # as PagerDuty shapes its own.
    error = {"message": exc.message, "code": exc.code, "errors": list(exc.errors)}
    response = JSONResponse({"error": error}, status_code=exc.status)
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int | float):
        response.headers["retry-after"] = _seconds(retry_after)
    return response


def _seconds(value: float) -> str:
    return str(max(1, math.ceil(value))) if math.isfinite(value) else "60"


ROUTES: list[Route] = [
    Route(
        "/api/v1/connections/{connection_id}/proxy/{path:path}",
        proxy,
        methods=list(METHODS),
        name="api_proxy",
    )
]
