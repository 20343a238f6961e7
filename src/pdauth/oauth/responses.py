"""Token and revocation endpoint responses: RFC 6749 §5.1 / §5.2 and RFC 7009 §2.2.

:func:`parse_token_response` turns an HTTP status and body into a :class:`TokenSet`, or
raises the matching :mod:`pdauth.errors` class. The body is hostile until proven
otherwise: its size is checked before it is decoded, its JSON nesting before it is parsed,
and every field's type and alphabet after. Error bodies are reduced to RFC 6749's error
vocabulary and a sanitised description; nothing else of a body reaches an exception.
Expiry is ``now + expires_in`` on the local clock (the server's clock is never consulted),
and ``now`` is always passed in.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pdauth.errors import (
    InsufficientScopeError,
    InvalidClientError,
    InvalidGrantError,
    OAuthError,
    TokenResponseError,
)
from pdauth.oauth._syntax import (
    ERROR_CODE,
    TOKEN_MAX_LEN,
    is_printable_token,
    sanitize_description,
)
from pdauth.oauth.scopes import missing_scopes, parse_scopes

__all__ = ["TokenSet", "parse_revocation_response", "parse_token_response"]

BODY_MAX_BYTES = 64 * 1024
# Token responses are flat objects; anything nested deeper than this is not one.
JSON_MAX_DEPTH = 16
# Ten years: well past any PagerDuty lifetime, and far from float overflow in now + expires_in.
EXPIRES_IN_MAX = 10 * 365 * 86_400
ID_TOKEN_MAX_LEN = 16 * 1024
CLIENT_INFO_MAX_LEN = 1024
_ERROR_CODE_MAX_LEN = 64

# RFC 6749 §5.2 plus RFC 7009 §2.2.1 and the two transient codes servers also send here.
_KNOWN_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "unsupported_token_type",
        "server_error",
        "temporarily_unavailable",
    }
)
UNKNOWN_ERROR = "unknown_error"
_BEARER = "bearer"
_JWS_COMPACT = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class TokenSet:
    """A validated token response. Secrets are kept out of the ``repr``.

    ``expires_at`` is ``received_at + expires_in`` (None when the server gave no lifetime).
    ``scopes`` is what the server reported, or the requested scopes when it reported none
    (RFC 6749 §5.1), or empty when neither is known.
    """

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    token_type: str
    expires_in: int | None
    expires_at: float | None
    scopes: frozenset[str]
    id_token: str | None = field(repr=False)
    client_info: str | None
    received_at: float

    def is_expired(self, now: float, *, leeway: float = 0.0) -> bool:
        """True when the access token is (or within ``leeway`` seconds will be) expired."""
        return self.expires_at is not None and now + leeway >= self.expires_at


def _invalid(description: str) -> TokenResponseError:
    return TokenResponseError("invalid_response", description)


def _too_deep(text: str, limit: int) -> bool:
    """True if the JSON text nests arrays/objects deeper than ``limit``.

    Checked before json.loads so a hostile body cannot make the parser recurse deeply.
    """
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # A repeated member is ambiguous (which access_token wins?), so it is refused.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member")
    return result


def _reject_constant(_name: str) -> object:
    raise ValueError("NaN and Infinity are not JSON")


def _load_json(body: bytes) -> object:
    """Strict JSON: UTF-8, bounded depth, no duplicate members, no NaN. ValueError otherwise."""
    text = body.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if _too_deep(text, JSON_MAX_DEPTH):
        raise ValueError("nested too deeply")
    return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)


def _error_fields(body: bytes) -> tuple[str, str | None] | None:
    """``(error, description)`` from an RFC 6749 §5.2 body, or None if it is not one."""
    if len(body) > BODY_MAX_BYTES:
        return None
    try:
        data = _load_json(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if not isinstance(error, str) or len(error) > _ERROR_CODE_MAX_LEN:
        return None
    if not ERROR_CODE.fullmatch(error):
        return None
    code = error if error in _KNOWN_ERRORS else UNKNOWN_ERROR
    return code, sanitize_description(data.get("error_description"))


def _error_from(status: int, body: bytes, endpoint: str) -> OAuthError:
    fields = _error_fields(body)
    if fields is None:
        description = f"the {endpoint} endpoint answered HTTP {status} without an OAuth error body"
        if status == 401:
            return InvalidClientError("invalid_client", description)
        if status in (429, 503):
            return OAuthError("temporarily_unavailable", description)
        if status >= 500:
            return OAuthError("server_error", description)
        return OAuthError("invalid_response", description)
    error, description_or_none = fields
    if error == "invalid_grant":
        return InvalidGrantError(error, description_or_none)
    if error == "invalid_client":
        return InvalidClientError(error, description_or_none)
    return OAuthError(error, description_or_none)


def _is_json_media_type(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def parse_token_response(
    status: int,
    body: bytes,
    *,
    now: float,
    content_type: str | None = None,
    required_scopes: str | Iterable[str] = (),
    previous_refresh_token: str | None = None,
    requested_scopes: str | Iterable[str] | None = None,
) -> TokenSet:
    """Validate a token endpoint response (code exchange, refresh or client credentials).

    - non-2xx: ``InvalidGrantError`` (``invalid_grant``), ``InvalidClientError``
      (``invalid_client``, or a 401 without an RFC 6749 error body), else ``OAuthError``
      with the RFC error code (``unknown_error`` for others) or, for a body that is not an
      OAuth error, ``temporarily_unavailable`` (429, 503), ``server_error`` (5xx) or
      ``invalid_response``;
    - 2xx that breaks RFC 6749 §5.1 or our limits: ``TokenResponseError``;
    - granted scopes lacking ``required_scopes``: ``InsufficientScopeError``. When the
      response has no ``scope`` the server granted what was asked (§5.1), so the check is
      skipped and ``scopes`` is ``requested_scopes`` (or empty).

    A response without ``refresh_token`` keeps ``previous_refresh_token`` (RFC 6749 §6).
    """
    if not math.isfinite(now):
        raise ValueError("now must be a finite number of seconds")
    required = parse_scopes(required_scopes)
    requested = None if requested_scopes is None else parse_scopes(requested_scopes)

    data = _token_document(status, body, content_type)
    access_token, refresh_token = _tokens(data, previous_refresh_token)
    expires_in = _expires_in(data)
    scope_sent, scopes = _granted_scopes(data, requested)
    id_token = _id_token(data)
    client_info = _client_info(data)
    if scope_sent:
        missing = missing_scopes(required, scopes)
        if missing:
            raise InsufficientScopeError(sorted(missing), sorted(scopes))

    return TokenSet(
        access_token=access_token,
        refresh_token=refresh_token,
        token_type=_BEARER,
        expires_in=expires_in,
        expires_at=None if expires_in is None else now + expires_in,
        scopes=scopes,
        id_token=id_token,
        client_info=client_info,
        received_at=now,
    )


def _token_document(status: int, body: bytes, content_type: str | None) -> dict[str, Any]:
    """The JSON object of a successful token response, or the error the response means."""
    if not 200 <= status < 300:
        raise _error_from(status, body, "token")
    if len(body) > BODY_MAX_BYTES:
        raise _invalid(f"the token response is larger than {BODY_MAX_BYTES} bytes")
    if content_type is not None and not _is_json_media_type(content_type):
        raise _invalid("the token response is not application/json")
    try:
        data = _load_json(body)
    except ValueError:
        raise _invalid("the token response is not strict JSON") from None
    if not isinstance(data, dict):
        raise _invalid("the token response is not a JSON object")
    return data


def _tokens(data: dict[str, Any], previous_refresh_token: str | None) -> tuple[str, str | None]:
    token_type = data.get("token_type")
    # isascii first: str.lower maps some non-ASCII letters onto ASCII ones.
    if not isinstance(token_type, str) or not token_type.isascii() or token_type.lower() != _BEARER:
        raise _invalid("token_type is not bearer")
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not is_printable_token(access_token, TOKEN_MAX_LEN):
        raise _invalid(f"access_token is missing or not 1-{TOKEN_MAX_LEN} visible ASCII characters")
    # Absent and JSON null mean the same for every optional member.
    raw_refresh = data.get("refresh_token")
    if raw_refresh is None:
        return access_token, previous_refresh_token
    if not isinstance(raw_refresh, str) or not is_printable_token(raw_refresh, TOKEN_MAX_LEN):
        raise _invalid(f"refresh_token is not 1-{TOKEN_MAX_LEN} visible ASCII characters")
    return access_token, raw_refresh


def _expires_in(data: dict[str, Any]) -> int | None:
    raw_expires = data.get("expires_in")
    if raw_expires is None:
        return None
    # JSON true would pass as the int 1; 3600.0 is not an integer on the wire.
    if (
        isinstance(raw_expires, bool)
        or not isinstance(raw_expires, int)
        or not 0 < raw_expires <= EXPIRES_IN_MAX
    ):
        raise _invalid(f"expires_in is not an integer between 1 and {EXPIRES_IN_MAX}")
    return raw_expires


def _granted_scopes(
    data: dict[str, Any], requested: frozenset[str] | None
) -> tuple[bool, frozenset[str]]:
    """(whether the server sent ``scope``, the granted scopes)."""
    raw_scope = data.get("scope")
    if raw_scope is None:
        return False, requested if requested is not None else frozenset()
    if not isinstance(raw_scope, str):
        raise _invalid("scope is not a string")
    try:
        return True, parse_scopes(raw_scope)
    except ValueError:
        raise _invalid("scope is not an RFC 6749 scope string") from None


def _id_token(data: dict[str, Any]) -> str | None:
    id_token = data.get("id_token")
    if id_token is not None and (
        not isinstance(id_token, str)
        or len(id_token) > ID_TOKEN_MAX_LEN
        or not _JWS_COMPACT.fullmatch(id_token)
    ):
        raise _invalid("id_token is not a compact JWS")
    return id_token


def _client_info(data: dict[str, Any]) -> str | None:
    # client_info is undocumented (PagerDuty sends "prefix_legacy_app"); a malformed one is
    # dropped rather than failing a flow over a field nothing depends on.
    raw = data.get("client_info")
    if isinstance(raw, str) and is_printable_token(raw, CLIENT_INFO_MAX_LEN):
        return raw
    return None


def parse_revocation_response(status: int, body: bytes) -> None:
    """Accept an RFC 7009 §2.2 answer or raise.

    2xx is success, including for a token the server did not know. 503 raises
    ``OAuthError("temporarily_unavailable")``: the token may still be valid, so retry
    (§2.2.1). Other statuses raise as for the token endpoint (``InvalidClientError`` for a
    rejected client, ``OAuthError`` otherwise).
    """
    if 200 <= status < 300:
        return
    if status == 503:
        raise OAuthError(
            "temporarily_unavailable", "the revocation endpoint answered HTTP 503; retry later"
        )
    raise _error_from(status, body, "revocation")
