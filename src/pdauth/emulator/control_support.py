"""What every ``/_emulator`` control endpoint shares: reading a bounded JSON object body, typed
fields of it, and one answer for bad input.

An endpoint raises :class:`BadRequest`; :func:`control_route` turns it into the control API's
400 (or the status it names) with ``{"error", "error_description"}``, so no endpoint writes that
mapping itself and none answers bad input with a 500.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from pdauth.emulator.data import Account, Directory

__all__ = [
    "MAX_JSON",
    "BadRequest",
    "control_route",
    "fail",
    "find_account",
    "flag_field",
    "json_body",
    "number_field",
    "required_field",
    "string_field",
]

MAX_JSON = 64 * 1024

Endpoint = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    def __init__(self, description: str, error: str = "invalid_request", status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def fail(err: BadRequest) -> JSONResponse:
    """The control API's error answer."""
    return JSONResponse(
        {"error": err.error, "error_description": err.description}, status_code=err.status
    )


def control_route(path: str, endpoint: Endpoint, *methods: str) -> Route:
    """A route whose endpoint may raise :class:`BadRequest` (answered by :func:`fail`)."""

    @functools.wraps(endpoint)
    async def answer(request: Request) -> Response:
        try:
            return await endpoint(request)
        except BadRequest as err:
            return fail(err)

    return Route(path, answer, methods=list(methods))


async def json_body(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object of at most :data:`MAX_JSON` bytes (``{}`` for an empty body
    when ``optional``)."""
    mime = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_JSON:
                raise BadRequest("The request body is too large.", status=413)
    except ClientDisconnect as exc:
        raise BadRequest("The request body was cut short.") from exc
    if not body.strip() and optional:
        return {}
    if mime not in ("application/json", ""):
        raise BadRequest("The body must be JSON (Content-Type: application/json).")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("The body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object.")
    return data


def find_account(directory: Directory, ref: str) -> Account | None:
    """The account whose id or subdomain is ``ref`` (how the control API names one)."""
    return directory.accounts.get(ref) or directory.account_by_subdomain(ref)


def required_field(data: dict[str, Any], key: str) -> str:
    value = string_field(data, key)
    if value is None:
        raise BadRequest(f"{key} is required.")
    return value


def string_field(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string.")
    return value


def flag_field(data: dict[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{key} must be true or false.")
    return value


def number_field(data: dict[str, Any], key: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{key} must be a number.")
    try:
        number = float(value)
    except OverflowError as exc:
        raise BadRequest(f"{key} is out of range.") from exc
    if not math.isfinite(number):
        raise BadRequest(f"{key} must be finite.")
    return number
