"""What the client makes of PagerDuty's answers: the JSON of a success, the typed error of a
failure (from PagerDuty's error envelope when there is one), the ``ratelimit-*`` headers, and
the error of an attempt that got no answer at all.

Messages carry the method and the path only (never the query, a token or a body beyond
PagerDuty's own bounded error text).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from pdauth.client.retry import FailureKind
from pdauth.errors import (
    AuthenticationError,
    DeadlineExceededError,
    PagerDutyAPIError,
    ScopeError,
    TransportError,
)

__all__ = ["Failure", "api_error", "parse_success", "ratelimit_fields", "transport_failure"]


def parse_success(response: httpx.Response, method: str, where: str) -> Any:
    """The parsed JSON of a 2xx answer; None for an empty one."""
    content = response.content
    if response.status_code == 204 or not content or content.isspace():  # isspace: no copy
        return None
    try:
        return response.json()
    except (ValueError, RecursionError):  # not JSON, or nested beyond reason
        raise PagerDutyAPIError(
            response.status_code,
            "PagerDuty answered with a body that is not JSON",
            method=method,
            path=where,
        ) from None


def api_error(response: httpx.Response, method: str, where: str) -> PagerDutyAPIError:
    """The typed error for a non-2xx answer, from PagerDuty's error envelope if any."""
    status = response.status_code
    message = response.reason_phrase or f"HTTP {status}"
    code: int | None = None
    errors: list[str] = []
    scopes: list[str] = []
    try:
        body = response.json() if response.content.strip() else None
    except (ValueError, RecursionError):
        body = None
    if isinstance(body, Mapping):
        envelope = body.get("error")
        if isinstance(envelope, Mapping):
            if isinstance(envelope.get("message"), str):
                message = envelope["message"][:500]
            if isinstance(envelope.get("code"), int) and not isinstance(envelope.get("code"), bool):
                code = envelope["code"]
            raw_errors = envelope.get("errors")
            if isinstance(raw_errors, list):
                errors = [str(e)[:500] for e in raw_errors[:20]]
            scopes = _scopes(envelope.get("required_scopes"))
        elif isinstance(envelope, str):
            message = envelope[:500]
        scopes = scopes or _scopes(body.get("required_scopes"))
    if 300 <= status < 400:
        message = "PagerDuty answered with a redirect, which pdauth never follows"
    if status == 401:
        return AuthenticationError(status, message, code, errors, method, where)
    if status == 403:
        return ScopeError(status, message, code, errors, method, where, required_scopes=scopes)
    return PagerDutyAPIError(status, message, code, errors, method, where)


def ratelimit_fields(response: httpx.Response) -> dict[str, str]:
    """The ``ratelimit-*`` headers in one pass (httpx's case-insensitive lookups cost more)."""
    found: dict[str, str] = {}
    for name, value in response.headers.raw:
        lowered = name.lower()
        if lowered.startswith(b"ratelimit-"):
            found[lowered.decode("latin-1")] = value.decode("latin-1")
    return found


def _scopes(value: Any) -> list[str]:
    """``required_scopes`` as PagerDuty sends it: a space- or comma-separated string, or a list."""
    if isinstance(value, str):
        return [s for s in value.replace(",", " ").split() if s][:50]
    if isinstance(value, list):
        return [s for s in value if isinstance(s, str)][:50]
    return []


class Failure:
    """An attempt that got no HTTP answer: whether it may have been sent, and the error."""

    __slots__ = ("error", "kind")

    def __init__(self, kind: FailureKind, error: TransportError) -> None:
        self.kind = kind
        self.error = error


def transport_failure(
    exc: httpx.TransportError | TimeoutError,
    method: str,
    where: str,
    attempt_timeout: float,
    left: float,
) -> Failure:
    """The failure of an attempt that raised ``exc``; a timeout that used up the call's
    deadline is a :class:`DeadlineExceededError`."""
    # Nothing was sent if the connection never came up (or no pooled one was free).
    kind: FailureKind = (
        "not_sent"
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        else "unknown"
    )
    timed_out = isinstance(exc, httpx.TimeoutException | TimeoutError)
    what = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
    error: TransportError
    if timed_out and attempt_timeout >= left:
        error = DeadlineExceededError(f"{method} {where}: the call's deadline passed ({what})")
    else:
        error = TransportError(f"{method} {where}: could not reach PagerDuty ({what})")
    error.__cause__ = exc
    return Failure(kind, error)
