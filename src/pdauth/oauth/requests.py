"""Requests to the token and revocation endpoints, as plain values.

RFC 6749 §4.1.3 (code exchange, with RFC 7636 §4.5's ``code_verifier``), §6 (refresh),
§4.4 (client credentials) and RFC 7009 §2.1 (revocation). Each builder returns a
:class:`FormRequest`; the I/O layer sends it as it is. The client authenticates
(RFC 6749 §2.3.1) with ``client_id`` and ``client_secret`` in the form body
(``client_secret_post``, what PagerDuty documents and the default) or with HTTP Basic
(``client_secret_basic``, which every compliant server must support): the form-urlencoded
client id and secret as user name and password, and neither in the body. A public client has
no secret and sends only its ``client_id`` in the body. Values are form-encoded, never
concatenated: PagerDuty tokens contain ``+``, which an unencoded body would turn into a space.
The form and the headers hold secrets, so both are left out of the ``repr``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote_plus, urlencode

from pdauth.oauth._syntax import TOKEN_MAX_LEN, is_http_url, is_printable_token
from pdauth.oauth.pkce import validate_code_verifier
from pdauth.oauth.scopes import (
    format_scopes,
    is_app_token_scope,
    parse_scopes,
    split_app_token_scope,
)

__all__ = [
    "CLIENT_AUTH_METHODS",
    "FORM_HEADERS",
    "ClientAuthMethod",
    "FormRequest",
    "client_credentials_request",
    "code_exchange_request",
    "refresh_request",
    "revocation_request",
]

FORM_HEADERS: tuple[tuple[str, str], ...] = (
    ("Accept", "application/json"),
    ("Content-Type", "application/x-www-form-urlencoded"),
)
ClientAuthMethod = Literal["client_secret_post", "client_secret_basic"]
CLIENT_AUTH_METHODS: tuple[ClientAuthMethod, ...] = ("client_secret_post", "client_secret_basic")
_CODE_MAX_LEN = 1024
_CLIENT_ID_MAX_LEN = 256
_SECRET_MAX_LEN = 1024


@dataclass(frozen=True)
class FormRequest:
    """An ``application/x-www-form-urlencoded`` POST, ready to send."""

    method: str
    url: str
    form: tuple[tuple[str, str], ...] = field(repr=False)
    # With client_secret_basic the headers carry the client secret.
    headers: tuple[tuple[str, str], ...] = field(default=FORM_HEADERS, repr=False)

    def body(self) -> bytes:
        """The form, percent-encoded (``+`` in a value becomes ``%2B``)."""
        return urlencode(self.form).encode("ascii")


def _check_url(url: str, name: str) -> None:
    if not is_http_url(url):
        raise ValueError(f"{name} must be an absolute http(s) URL without a fragment")


@dataclass(frozen=True)
class _ClientAuth:
    """How the client authenticates: form fields and extra headers (RFC 6749 §2.3.1)."""

    form: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...] = ()


def _client_auth(
    client_id: str,
    client_secret: str | None,
    auth_method: ClientAuthMethod,
    *,
    secret_required: bool = False,
) -> _ClientAuth:
    if not is_printable_token(client_id, _CLIENT_ID_MAX_LEN):
        raise ValueError(f"client_id must be 1-{_CLIENT_ID_MAX_LEN} visible ASCII characters")
    if auth_method not in CLIENT_AUTH_METHODS:
        raise ValueError("auth_method must be 'client_secret_post' or 'client_secret_basic'")
    if client_secret is None:
        if secret_required or auth_method == "client_secret_basic":
            raise ValueError(f"{auth_method} needs a client_secret")
        # A public client identifies itself in the body (RFC 6749 §4.1.3, §3.2.1).
        return _ClientAuth(form=(("client_id", client_id),))
    if not is_printable_token(client_secret, _SECRET_MAX_LEN):
        raise ValueError(f"client_secret must be 1-{_SECRET_MAX_LEN} visible ASCII characters")
    if auth_method == "client_secret_post":
        return _ClientAuth(form=(("client_id", client_id), ("client_secret", client_secret)))
    # RFC 6749 §2.3.1: both are form-urlencoded (Appendix B) before going into Basic, so a
    # ":" or "+" in either survives; only one authentication method per request, so neither
    # goes into the body as well.
    userpass = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode("ascii")
    credentials = base64.b64encode(userpass).decode("ascii")
    return _ClientAuth(form=(), headers=(("Authorization", f"Basic {credentials}"),))


def _check_token(token: str, name: str) -> None:
    if not is_printable_token(token, TOKEN_MAX_LEN):
        raise ValueError(f"{name} must be 1-{TOKEN_MAX_LEN} visible ASCII characters")


def _post(url: str, form: list[tuple[str, str]], auth: _ClientAuth) -> FormRequest:
    return FormRequest(
        method="POST", url=url, form=tuple(form), headers=(*FORM_HEADERS, *auth.headers)
    )


def code_exchange_request(
    token_url: str,
    *,
    client_id: str,
    client_secret: str | None,
    code: str,
    redirect_uri: str,
    code_verifier: str,
    auth_method: ClientAuthMethod = "client_secret_post",
) -> FormRequest:
    """``grant_type=authorization_code`` with the PKCE verifier (RFC 6749 §4.1.3).

    ``redirect_uri`` must be byte-identical to the one in the authorization request.
    ``client_secret`` is None for a public (Classic, PKCE-only) client, which must use the
    default ``auth_method``.
    """
    _check_url(token_url, "token_url")
    if not is_printable_token(code, _CODE_MAX_LEN):
        raise ValueError(f"code must be 1-{_CODE_MAX_LEN} visible ASCII characters")
    if not is_http_url(redirect_uri):
        raise ValueError("redirect_uri must be an absolute http(s) URL without a fragment")
    validate_code_verifier(code_verifier)
    auth = _client_auth(client_id, client_secret, auth_method)
    return _post(
        token_url,
        [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            *auth.form,
            ("code_verifier", code_verifier),
        ],
        auth,
    )


def refresh_request(
    token_url: str,
    *,
    client_id: str,
    client_secret: str | None,
    refresh_token: str,
    auth_method: ClientAuthMethod = "client_secret_post",
) -> FormRequest:
    """``grant_type=refresh_token`` (RFC 6749 §6). PagerDuty answers with a new refresh token."""
    _check_url(token_url, "token_url")
    _check_token(refresh_token, "refresh_token")
    auth = _client_auth(client_id, client_secret, auth_method)
    return _post(
        token_url,
        [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            *auth.form,
        ],
        auth,
    )


def client_credentials_request(
    token_url: str,
    *,
    client_id: str,
    client_secret: str,
    scopes: str | Iterable[str],
    auth_method: ClientAuthMethod = "client_secret_post",
) -> FormRequest:
    """``grant_type=client_credentials`` for an app token (RFC 6749 §4.4).

    PagerDuty requires exactly one ``as_account-<region>.<subdomain>`` among the scopes
    (without it the token endpoint answers ``invalid_request``), so that is checked here.
    """
    _check_url(token_url, "token_url")
    scope_set = parse_scopes(scopes)
    accounts = [scope for scope in scope_set if is_app_token_scope(scope)]
    if len(accounts) != 1:
        raise ValueError("scopes must hold exactly one as_account-<us|eu>.<subdomain> scope")
    split_app_token_scope(accounts[0])
    auth = _client_auth(client_id, client_secret, auth_method, secret_required=True)
    return _post(
        token_url,
        [
            ("grant_type", "client_credentials"),
            ("scope", format_scopes(scope_set)),
            *auth.form,
        ],
        auth,
    )


def revocation_request(
    revocation_url: str,
    *,
    client_id: str,
    client_secret: str | None,
    token: str,
    token_type_hint: Literal["refresh_token", "access_token"],
    auth_method: ClientAuthMethod = "client_secret_post",
) -> FormRequest:
    """An RFC 7009 §2.1 revocation request (revoking the refresh token ends the grant)."""
    _check_url(revocation_url, "revocation_url")
    _check_token(token, "token")
    if token_type_hint not in ("refresh_token", "access_token"):
        raise ValueError("token_type_hint must be 'refresh_token' or 'access_token'")
    auth = _client_auth(client_id, client_secret, auth_method)
    return _post(
        revocation_url,
        [
            ("token", token),
            ("token_type_hint", token_type_hint),
            *auth.form,
        ],
        auth,
    )
