"""The identity service's HTTP plumbing, shared by its authorize and token sides: the URLs as
the client sees them, bounded form parsing (size, field count, repeated parameters), RFC 6749
§5.2 error bodies, and the injected faults of the token endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from pdauth.emulator.state import EmulatorState, Fault, Region

__all__ = [
    "BadForm",
    "api_base_url",
    "dropped",
    "identity_base_url",
    "oauth_error",
    "read_form",
    "scope_string",
    "serve_fault",
]

MAX_BODY = 16 * 1024
MAX_PARAM = 2048
MAX_FIELDS = 64
TOKEN_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}
STATUS_OF_ERROR = {
    "invalid_client": 401,
    "server_error": 500,
    "temporarily_unavailable": 503,
}


def scope_string(scopes: frozenset[str]) -> str:
    """``openid`` first, then the rest sorted, as in PagerDuty's ``"openid write"``."""
    rest = sorted(s for s in scopes if s != "openid")
    return " ".join((["openid"] if "openid" in scopes else []) + rest)


# -- URLs as the client sees them ----------------------------------------------------------


def identity_base_url(state: EmulatorState, request: Request) -> str:
    """The emulator's base URL: ``config.public_url`` or the one this request came to."""
    if state.config.public_url is not None:
        return state.config.public_url.rstrip("/")
    root = request.scope.get("root_path", "")
    return f"{request.url.scheme}://{request.url.netloc}{root}".rstrip("/")


def api_base_url(state: EmulatorState, request: Request, region: Region) -> str:
    """The regional REST base: US at the root, EU under ``/eu`` (the id_token ``aud``)."""
    base = identity_base_url(state, request)
    return base + "/eu" if region == "eu" else base


# -- request plumbing -----------------------------------------------------------------------


class BadForm(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


async def read_form(request: Request) -> tuple[dict[str, str], frozenset[str]]:
    """Parse a small ``application/x-www-form-urlencoded`` body strictly.

    Returns the fields and the names that were repeated (RFC 6749 §3.1: parameters MUST NOT be
    included more than once). Hostile input becomes :class:`BadForm` (413/400), never a crash.
    """
    mime = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if mime != "application/x-www-form-urlencoded":
        raise BadForm(400, "The body must be application/x-www-form-urlencoded.")
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdecimal():
        raise BadForm(400, "Invalid Content-Length.")
    if declared is not None and (len(declared) > 9 or int(declared) > MAX_BODY):
        raise BadForm(413, "The request body is too large.")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise BadForm(413, "The request body is too large.")
    except ClientDisconnect as exc:
        raise BadForm(400, "The request body was cut short.") from exc
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadForm(400, "The body is not valid UTF-8 form data.") from exc
    fields: dict[str, str] = {}
    repeated: set[str] = set()
    for key, value in pairs:
        if key in fields:
            repeated.add(key)
        fields[key] = value
    return fields, frozenset(repeated)


def oauth_error(
    error: str,
    description: str,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An RFC 6749 §5.2 error body (status per the module docstring's assumption)."""
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status or STATUS_OF_ERROR.get(error, 400),
        headers={**TOKEN_HEADERS, **(headers or {})},
    )


async def serve_fault(fault: Fault) -> Response | None:
    """The response for a fault served *before* processing (``drop`` returns None: it is
    served after processing by :func:`dropped`)."""
    if fault.kind == "500":
        return oauth_error("server_error", "Injected fault.")
    if fault.kind == "503":
        return oauth_error("temporarily_unavailable", "Injected fault.")
    if fault.kind == "timeout":
        await anyio.sleep(fault.delay)
        return Response("upstream request timeout", status_code=504, media_type="text/plain")
    return None


def dropped() -> Response:
    """What a load balancer that lost the upstream answer sends: 502, empty, not JSON."""
    return Response(b"", status_code=502, media_type="text/html")
