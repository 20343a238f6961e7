"""pdauth.oauth: the pure OAuth 2.0 protocol core (RFC 6749, RFC 7636, RFC 7009, RFC 9207).

PKCE, state, the authorization URL, callback parsing, token/refresh/revocation requests as
plain values, token-response validation, and id_token claims to account and region. No I/O:
no sockets, no database, no clock reads ("now" is always a parameter), no logging; only the
standard library and :mod:`pdauth.errors` are imported (``tests/oauth/test_purity.py``
enforces it). The layers above send the requests and read the clock.
"""

from __future__ import annotations

from pdauth.oauth.authorize import build_authorization_url
from pdauth.oauth.callback import (
    AuthorizationDenied,
    AuthorizationGranted,
    CallbackQuery,
    parse_callback,
)
from pdauth.oauth.idtoken import (
    AccountIdentity,
    AppAccount,
    Region,
    identity_from_app_scope,
    identity_from_claims,
)
from pdauth.oauth.pkce import generate_code_verifier, s256_challenge, validate_code_verifier
from pdauth.oauth.requests import (
    FormRequest,
    client_credentials_request,
    code_exchange_request,
    refresh_request,
    revocation_request,
)
from pdauth.oauth.responses import TokenSet, parse_revocation_response, parse_token_response
from pdauth.oauth.scopes import (
    CLASSIC_SCOPES,
    app_token_scope,
    format_scopes,
    is_scoped_scope,
    missing_scopes,
    parse_scopes,
    scoped_scope,
    split_app_token_scope,
)
from pdauth.oauth.state import constant_time_equals, generate_state, state_digest, validate_state

__all__ = [
    "CLASSIC_SCOPES",
    "AccountIdentity",
    "AppAccount",
    "AuthorizationDenied",
    "AuthorizationGranted",
    "CallbackQuery",
    "FormRequest",
    "Region",
    "TokenSet",
    "app_token_scope",
    "build_authorization_url",
    "client_credentials_request",
    "code_exchange_request",
    "constant_time_equals",
    "format_scopes",
    "generate_code_verifier",
    "generate_state",
    "identity_from_app_scope",
    "identity_from_claims",
    "is_scoped_scope",
    "missing_scopes",
    "parse_callback",
    "parse_revocation_response",
    "parse_scopes",
    "parse_token_response",
    "refresh_request",
    "revocation_request",
    "s256_challenge",
    "scoped_scope",
    "split_app_token_scope",
    "state_digest",
    "validate_code_verifier",
    "validate_state",
]
