"""Exceptions to responses, once, at the app's edge.

Endpoints raise: :class:`~pdauth.service.views.ApiError` for a documented JSON API error,
Starlette's ``HTTPException`` for a plain status, or any :class:`~pdauth.errors.PdauthError`
the Connector raised. :func:`exception_handlers` turns each into the answer its path calls for:
under ``/api/`` the JSON body ``{"error": {"code", "message"}}`` (with a code from
:data:`API_ERRORS` for pdauth's errors), elsewhere a friendly page with the same status. Nothing
of an exception's text reaches a client except an ``ApiError``'s own message, which pdauth
writes and which never holds a secret.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pdauth.errors import (
    ConnectionNotFoundError,
    CryptoError,
    InvalidClientError,
    NeedsReauthError,
    OAuthError,
    PdauthError,
    StoreError,
    TransportError,
)
from pdauth.service.core import service_of
from pdauth.service.views import ApiError, is_api

__all__ = ["API_ERRORS", "api_error_for", "exception_handlers"]

log = logging.getLogger("pdauth.service")

Handler = Callable[[Request, Exception], Awaitable[Response]]

#: pdauth's errors as the JSON API reports them, most specific first.
API_ERRORS: Final[tuple[tuple[type[PdauthError], int, str, str], ...]] = (
    (ConnectionNotFoundError, 404, "not_found", "no such connection"),
    (
        NeedsReauthError,
        409,
        "needs_reauth",
        "the connection needs re-authorization (or was revoked)",
    ),
    (
        InvalidClientError,
        502,
        "configuration_error",
        "PagerDuty refused this application's credentials",
    ),
    (TransportError, 502, "pagerduty_unavailable", "PagerDuty could not be reached"),
    (OAuthError, 502, "pagerduty_unavailable", "PagerDuty could not refresh"),
    (StoreError, 503, "store_unavailable", "the database is unavailable; retry"),
    # A key missing from PDAUTH_ENCRYPTION_KEYS (or a damaged row): fail closed, say so.
    (
        CryptoError,
        503,
        "decryption_failed",
        "a stored token could not be decrypted (check the keys)",
    ),
)


def api_error_for(exc: PdauthError) -> ApiError | None:
    """The documented API error for one of pdauth's errors, or ``None`` (a 500)."""
    for kind, status, code, message in API_ERRORS:
        if isinstance(exc, kind):
            return ApiError(status, code, message)
    return None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, ApiError):
        response: Response = JSONResponse(
            {"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status_code
        )
        if exc.status_code == 401:
            response.headers["www-authenticate"] = "Bearer"
        if exc.headers:
            response.headers.update(exc.headers)
        return response
    response = service_of(request).renderer.error(request.scope, exc.status_code)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _pdauth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PdauthError)
    mapped = api_error_for(exc)
    if mapped is None:
        raise exc  # not a documented outcome: the security middleware's generic 500
    if isinstance(exc, StoreError):
        # The database failed: a retryable 503, with nothing of the error shown.
        log.warning("database error while serving a request: %s", type(exc).__name__)
    if is_api(request.scope):
        return await _http_error(request, mapped)
    return service_of(request).renderer.error(request.scope, mapped.status_code)


def exception_handlers() -> Mapping[type[Exception], Handler]:
    """The handlers ``create_app`` installs (Starlette picks the most specific class)."""
    return {HTTPException: _http_error, PdauthError: _pdauth_error}
