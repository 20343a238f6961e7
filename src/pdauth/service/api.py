"""The JSON API under ``/api/v1`` for the host application's backend.

Authenticated with ``Authorization: Bearer <API key>`` (``PDAUTH_API_KEYS``, kept hashed; see
``apikeys.py``). It mints connect sessions, lists and shows connections (never a secret),
vends a fresh access token for the host's other services, disconnects, and pages through the
event log by cursor. Inputs are validated strictly — JSON bodies only, at most 16 KiB, no
unknown fields, bounded strings and integers — and every error is a JSON body
``{"error": {"code", "message"}}`` with a 4xx status, or 502/503 when PagerDuty or the database
is at fault (mapped once, in ``edge.py``); the OpenAPI document at ``/api/v1/openapi.json``
(``openapi.py``) describes exactly this. Each endpoint is a module-level function that finds the
app's :class:`~pdauth.service.core.Service` through its request.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pdauth.connections import Connection
from pdauth.returnto import MAX_RETURN_TO_LENGTH
from pdauth.service.connect_sessions import validate_owner
from pdauth.service.core import service_of
from pdauth.service.openapi import EVENT_TYPE_PATTERN, ID_PATTERN, openapi_document
from pdauth.service.views import ApiError, event_json, iso_time

__all__ = ["ROUTES", "authenticate", "connection_id_of", "json_body"]

MAX_JSON_BODY = 16 * 1024
_CONNECTION_ID = re.compile(ID_PATTERN.strip("^$"))
_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN.strip("^$"))
_STATUSES = ("active", "needs_reauth", "revoked")


def _single(params: QueryParams, name: str) -> str | None:
    values = params.getlist(name)
    if len(values) > 1:
        raise ApiError(400, "invalid_request", f"the parameter {name!r} is repeated")
    return values[0] if values else None


def _int_param(params: QueryParams, name: str, *, low: int, high: int | None, default: int) -> int:
    text = _single(params, name)
    if text is None:
        return default
    if not re.fullmatch(r"[0-9]{1,12}", text):
        raise ApiError(400, "invalid_request", f"{name} must be a non-negative integer")
    value = int(text)
    if value < low or (high is not None and value > high):
        bound = f" and at most {high}" if high is not None else ""
        raise ApiError(400, "invalid_request", f"{name} must be at least {low}{bound}")
    return value


def _pattern_param(params: QueryParams, name: str, pattern: re.Pattern[str]) -> str | None:
    text = _single(params, name)
    if text is not None and pattern.fullmatch(text) is None:
        raise ApiError(400, "invalid_request", f"{name} is malformed (see the OpenAPI document)")
    return text


def _owner_param(params: QueryParams) -> str | None:
    text = _single(params, "owner")
    if text is not None and validate_owner(text) is None:
        raise ApiError(400, "invalid_request", "owner must be 1-255 characters, no controls")
    return text


def connection_id_of(request: Request) -> str:
    value = request.path_params["connection_id"]
    if not isinstance(value, str) or _CONNECTION_ID.fullmatch(value) is None:
        raise ApiError(404, "not_found", "no such connection")
    return value


async def json_body(request: Request) -> Any:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BODY:
            raise ApiError(413, "too_large", f"the body must be at most {MAX_JSON_BODY} bytes")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_request", "the body is not valid JSON") from None


def authenticate(request: Request) -> None:
    """Refuse (401) a request without a valid API key."""
    if not service_of(request).api_keys.verify(request.headers.get("authorization")):
        raise ApiError(401, "unauthorized", "a valid API key is required (Bearer)")


async def create_connect_session(request: Request) -> Response:
    authenticate(request)
    service = service_of(request)
    wait = await service.rate_limited(request, "connect_session")
    if wait:
        raise ApiError(
            429,
            "rate_limited",
            "too many connect sessions from this client; retry later",
            headers={"retry-after": str(int(wait))},
        )
    data = await json_body(request)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object")
    unknown = set(data) - {"owner", "return_to", "expected_account", "expected_user"}
    if unknown:
        raise ApiError(400, "invalid_request", "unknown fields in the body")
    owner = validate_owner(data.get("owner"))
    if owner is None:
        raise ApiError(400, "invalid_request", "owner must be 1-255 printable characters")
    return_to = data.get("return_to")
    if return_to is not None and (
        not isinstance(return_to, str) or len(return_to) > MAX_RETURN_TO_LENGTH
    ):
        raise ApiError(
            400,
            "invalid_request",
            f"return_to must be a string of at most {MAX_RETURN_TO_LENGTH} characters",
        )
    expected = {k: data.get(k) for k in ("expected_account", "expected_user")}
    for name, value in expected.items():
        if value is not None and validate_owner(value) is None:
            raise ApiError(400, "invalid_request", f"{name} must be 1-255 printable characters")
    token, link = service.connect_sessions.issue(
        owner,
        return_to,
        expected_account=expected["expected_account"],
        expected_user=expected["expected_user"],
    )
    url = service.absolute_url(request.scope, "connect_session") + "?" + urlencode({"token": token})
    return JSONResponse(
        {
            "url": url,
            "expires_at": iso_time(link.expires_at),
            "owner": link.owner,
            "return_to": link.return_to,
            "expected_account": link.expected_account,
            "expected_user": link.expected_user,
        },
        status_code=201,
    )


async def list_connections(request: Request) -> Response:
    authenticate(request)
    service = service_of(request)
    params = request.query_params
    owner = _owner_param(params)
    status = _single(params, "status")
    if status is not None and status not in _STATUSES:
        raise ApiError(400, "invalid_request", "status must be one of " + ", ".join(_STATUSES))
    limit = _int_param(params, "limit", low=1, high=100, default=100)
    after = _pattern_param(params, "after", _CONNECTION_ID)
    connector = await service.connector()
    rows = await connector.store.list_connections(
        owner=owner, status=status, limit=limit + 1, after_id=after
    )
    page = [
        Connection.from_row(r, service.settings.api_base_urls, service.settings.scopes)
        for r in rows[:limit]
    ]
    return JSONResponse(
        {
            "connections": [c.to_json() for c in page],
            "next_after": page[-1].id if len(rows) > limit and page else None,
        }
    )


async def get_connection(request: Request) -> Response:
    authenticate(request)
    connector = await service_of(request).connector()
    connection = await connector.get(connection_id_of(request))
    return JSONResponse({"connection": connection.to_json()})


async def delete_connection(request: Request) -> Response:
    authenticate(request)
    connection_id = connection_id_of(request)
    connector = await service_of(request).connector()
    await connector.disconnect(connection_id)
    connection = await connector.get(connection_id)
    return JSONResponse({"connection": connection.to_json()})


async def vend_access_token(request: Request) -> Response:
    authenticate(request)
    connection_id = connection_id_of(request)
    connector = await service_of(request).connector()
    token = await connector.access_token(connection_id)
    connection = await connector.get(connection_id)
    return JSONResponse(
        {
            "connection_id": connection.id,
            "access_token": token,
            "token_type": "bearer",
            "expires_at": iso_time(connection.access_expires_at),
            "api_base_url": connection.api_base_url,
        }
    )


async def list_events(request: Request) -> Response:
    authenticate(request)
    params = request.query_params
    cursor = _int_param(params, "cursor", low=0, high=None, default=0)
    limit = _int_param(params, "limit", low=1, high=500, default=100)
    owner = _owner_param(params)
    event_type = _pattern_param(params, "type", _EVENT_TYPE)
    connector = await service_of(request).connector()
    events = await connector.store.list_events(
        after_id=cursor, limit=limit, owner=owner, type=event_type
    )
    return JSONResponse(
        {
            "events": [event_json(e) for e in events],
            "next_cursor": events[-1].id if events else cursor,
        }
    )


async def openapi(request: Request) -> Response:
    server = service_of(request).path(request.scope, "home").rstrip("/") + "/api/v1"
    return JSONResponse(openapi_document(server or "/api/v1"))


_ONE = "/api/v1/connections/{connection_id}"

ROUTES: list[Route] = [
    Route("/api/v1/openapi.json", openapi, methods=["GET"], name="api_openapi"),
    Route(
        "/api/v1/connect-sessions",
        create_connect_session,
        methods=["POST"],
        name="api_connect_sessions",
    ),
    Route("/api/v1/connections", list_connections, methods=["GET"], name="api_connections"),
    Route(_ONE, get_connection, methods=["GET"], name="api_connection"),
    Route(_ONE, delete_connection, methods=["DELETE"], name="api_connection_delete"),
    Route(_ONE + "/access-token", vend_access_token, methods=["POST"], name="api_access_token"),
    Route("/api/v1/events", list_events, methods=["GET"], name="api_events"),
]
