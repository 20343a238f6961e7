"""The authorization request, RFC 6749 §4.1.1 with PKCE (RFC 7636 §4.3).

Builds the URL the browser is sent to: ``response_type=code``, ``client_id``,
``redirect_uri``, ``scope``, ``state``, ``code_challenge`` and
``code_challenge_method=S256``. A query already present in the endpoint is kept (§3.1), but
may not repeat one of these parameters (§3.1: no parameter more than once). Values are
percent-encoded with ``%20`` for spaces, which every server decodes the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pdauth.oauth._syntax import is_http_url, is_printable_token, is_state
from pdauth.oauth.scopes import format_scopes

__all__ = ["build_authorization_url"]

_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
    }
)
# An S256 challenge is the unpadded base64url of 32 bytes: exactly 43 characters.
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
_CLIENT_ID_MAX = 256


def build_authorization_url(
    authorize_endpoint: str,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: str | Iterable[str],
    state: str,
    code_challenge: str,
) -> str:
    """The authorization URL for one flow.

    Raises ValueError for a malformed argument; messages never contain the state or challenge.
    """
    if not is_http_url(authorize_endpoint):
        raise ValueError("authorize_endpoint must be an absolute http(s) URL without a fragment")
    if not is_printable_token(client_id, _CLIENT_ID_MAX):
        raise ValueError("client_id must be 1-256 visible ASCII characters")
    if not is_http_url(redirect_uri):
        raise ValueError("redirect_uri must be an absolute http(s) URL without a fragment")
    scope = format_scopes(scopes)
    if not scope:
        raise ValueError("at least one scope is required")
    if not is_state(state):
        raise ValueError("state must be 1-256 characters of [A-Za-z0-9_-]")
    if not isinstance(code_challenge, str) or not _CHALLENGE.fullmatch(code_challenge):
        raise ValueError("code_challenge must be an S256 challenge (43 base64url characters)")

    parts = urlsplit(authorize_endpoint)
    existing = parse_qsl(parts.query, keep_blank_values=True)
    if any(name in _PARAMS for name, _ in existing):
        raise ValueError("authorize_endpoint already carries an authorization request parameter")
    ours = urlencode(
        [
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("scope", scope),
            ("state", state),
            ("code_challenge", code_challenge),
            ("code_challenge_method", "S256"),
        ],
        quote_via=quote,
    )
    query = f"{parts.query}&{ours}" if parts.query else ours
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
