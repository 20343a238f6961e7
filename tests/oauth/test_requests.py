"""Token, refresh, client-credentials and revocation requests as FormRequest values."""

from __future__ import annotations

import base64
from urllib.parse import parse_qsl, unquote_plus

import pytest
from hypothesis import given, settings, strategies as st

from pdauth.oauth import (
    FormRequest,
    client_credentials_request,
    code_exchange_request,
    generate_code_verifier,
    refresh_request,
    revocation_request,
)
from pdauth.oauth.requests import ClientAuthMethod

TOKEN_URL = "https://identity.pagerduty.com/oauth/token"
SECRET = "s3cr3t+/=value"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
REFRESH = "pdus+_1XBPWQQ_f85dd2f1-0000-4000-8000-000000000000"
FORM_HEADERS = (
    ("Accept", "application/json"),
    ("Content-Type", "application/x-www-form-urlencoded"),
)


def decoded(request: FormRequest) -> list[tuple[str, str]]:
    return parse_qsl(request.body().decode("ascii"), keep_blank_values=True, strict_parsing=True)


def test_code_exchange() -> None:
    request = code_exchange_request(
        TOKEN_URL,
        client_id="client-1",
        client_secret=SECRET,
        code="c+de/1",
        redirect_uri="https://app.example.com/callback",
        code_verifier=VERIFIER,
    )
    assert (request.method, request.url, request.headers) == ("POST", TOKEN_URL, FORM_HEADERS)
    assert decoded(request) == [
        ("grant_type", "authorization_code"),
        ("code", "c+de/1"),
        ("redirect_uri", "https://app.example.com/callback"),
        ("client_id", "client-1"),
        ("client_secret", SECRET),
        ("code_verifier", VERIFIER),
    ]
    assert list(request.form) == decoded(request)
    for secret in (SECRET, "c+de/1", VERIFIER):
        assert secret not in repr(request)
    assert b"s3cr3t%2B%2F%3Dvalue" in request.body()


def test_code_exchange_for_a_public_client_sends_no_secret() -> None:
    request = code_exchange_request(
        TOKEN_URL,
        client_id="client-1",
        client_secret=None,
        code="abc",
        redirect_uri="http://127.0.0.1:8000/callback",
        code_verifier=VERIFIER,
    )
    assert "client_secret" not in dict(decoded(request))


def test_refresh() -> None:
    request = refresh_request(
        TOKEN_URL, client_id="client-1", client_secret=SECRET, refresh_token=REFRESH
    )
    assert decoded(request) == [
        ("grant_type", "refresh_token"),
        ("refresh_token", REFRESH),
        ("client_id", "client-1"),
        ("client_secret", SECRET),
    ]
    assert b"pdus%2B_1XBPWQQ" in request.body()
    assert REFRESH not in repr(request)


def test_client_credentials() -> None:
    request = client_credentials_request(
        TOKEN_URL,
        client_id="client-1",
        client_secret=SECRET,
        scopes=["services.read", "as_account-eu.acme", "incidents.read"],
    )
    assert decoded(request) == [
        ("grant_type", "client_credentials"),
        ("scope", "as_account-eu.acme incidents.read services.read"),
        ("client_id", "client-1"),
        ("client_secret", SECRET),
    ]


@pytest.mark.parametrize(
    "scopes",
    [
        "incidents.read",
        "as_account-us.acme as_account-eu.acme",
        "as_account-ap.acme incidents.read",
        "as_account-us.Acme",
    ],
)
def test_client_credentials_need_exactly_one_account_scope(scopes: str) -> None:
    with pytest.raises(ValueError, match="as_account"):
        client_credentials_request(
            TOKEN_URL, client_id="client-1", client_secret=SECRET, scopes=scopes
        )


def test_client_credentials_need_a_secret() -> None:
    with pytest.raises(ValueError, match="client_secret"):
        client_credentials_request(
            TOKEN_URL,
            client_id="client-1",
            client_secret=None,  # type: ignore[arg-type]
            scopes="as_account-us.acme",
        )


@pytest.mark.parametrize("hint", ["refresh_token", "access_token"])
def test_revocation(hint: str) -> None:
    request = revocation_request(
        "https://identity.example/oauth/revoke",
        client_id="client-1",
        client_secret=SECRET,
        token=REFRESH,
        token_type_hint=hint,  # type: ignore[arg-type]
    )
    assert request.url == "https://identity.example/oauth/revoke"
    assert decoded(request) == [
        ("token", REFRESH),
        ("token_type_hint", hint),
        ("client_id", "client-1"),
        ("client_secret", SECRET),
    ]


def test_revocation_rejects_other_hints() -> None:
    with pytest.raises(ValueError, match="token_type_hint"):
        revocation_request(
            TOKEN_URL,
            client_id="c",
            client_secret=None,
            token="t",
            token_type_hint="id_token",  # type: ignore[arg-type]
        )


GOOD_EXCHANGE: dict[str, object] = {
    "client_id": "client-1",
    "client_secret": SECRET,
    "code": "abc",
    "redirect_uri": "https://app.example.com/callback",
    "code_verifier": VERIFIER,
}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("token_url", "/oauth/token", "token_url"),
        ("token_url", "https://x/token#f", "token_url"),
        ("client_id", "", "client_id"),
        ("client_id", "a b", "client_id"),
        ("client_id", "x" * 257, "client_id"),
        ("client_secret", "", "client_secret"),
        ("client_secret", "sec ret", "client_secret"),
        ("code", "", "code"),
        ("code", "x" * 1025, "code"),
        ("code", "a\nb", "code"),
        ("redirect_uri", "app.example.com/callback", "redirect_uri"),
        ("code_verifier", "short", "code verifier"),
    ],
)
def test_code_exchange_rejects_bad_arguments(field: str, value: str, message: str) -> None:
    args = dict(GOOD_EXCHANGE)
    token_url = TOKEN_URL
    if field == "token_url":
        token_url = value
    else:
        args[field] = value
    with pytest.raises(ValueError, match=message) as info:
        code_exchange_request(token_url, **args)  # type: ignore[arg-type]
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("token", ["", "a b", "x" * 4097, "tok\u00e9n", None])
def test_refresh_and_revocation_reject_bad_tokens(token: object) -> None:
    with pytest.raises(ValueError, match="refresh_token"):
        refresh_request(TOKEN_URL, client_id="c", client_secret=None, refresh_token=token)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="token"):
        revocation_request(
            TOKEN_URL,
            client_id="c",
            client_secret=None,
            token=token,  # type: ignore[arg-type]
            token_type_hint="refresh_token",
        )


def test_form_request_is_a_frozen_value() -> None:
    request = refresh_request(TOKEN_URL, client_id="c", client_secret=None, refresh_token="r")
    with pytest.raises(AttributeError):
        request.url = "https://evil.example"  # type: ignore[misc]
    assert request == refresh_request(
        TOKEN_URL, client_id="c", client_secret=None, refresh_token="r"
    )


VISIBLE_ASCII = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=200
)


@settings(max_examples=150, deadline=None)
@given(token=VISIBLE_ASCII, secret=VISIBLE_ASCII)
def test_every_visible_ascii_token_survives_the_form_encoding(token: str, secret: str) -> None:
    refresh = refresh_request(
        TOKEN_URL, client_id="client-1", client_secret=secret, refresh_token=token
    )
    assert dict(decoded(refresh))["refresh_token"] == token
    assert dict(decoded(refresh))["client_secret"] == secret
    revoke = revocation_request(
        TOKEN_URL,
        client_id="client-1",
        client_secret=secret,
        token=token,
        token_type_hint="access_token",
    )
    assert dict(decoded(revoke))["token"] == token
    # In a form body a literal "+" means a space, so a token's "+" must travel as %2B.
    assert b"+" not in refresh.body()


def test_verifiers_pass_through_unchanged() -> None:
    verifier = generate_code_verifier(96)
    request = code_exchange_request(
        TOKEN_URL,
        client_id="c",
        client_secret=None,
        code="abc",
        redirect_uri="https://a.example/cb",
        code_verifier=verifier,
    )
    assert dict(decoded(request))["code_verifier"] == verifier


# -- client authentication: client_secret_post (default) or client_secret_basic ----------


def basic_credentials(request: FormRequest) -> tuple[str, str]:
    """The RFC 6749 §2.3.1 user name and password of a Basic header, form-decoded."""
    headers = dict(request.headers)
    scheme, _, credentials = headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    user, _, password = base64.b64decode(credentials, validate=True).decode("ascii").partition(":")
    return unquote_plus(user), unquote_plus(password)


def each_builder(client_secret: str | None, auth_method: ClientAuthMethod) -> list[FormRequest]:
    return [
        code_exchange_request(
            TOKEN_URL,
            client_id="client:1+",
            client_secret=client_secret,
            code="abc",
            redirect_uri="https://app.example.com/callback",
            code_verifier=VERIFIER,
            auth_method=auth_method,
        ),
        refresh_request(
            TOKEN_URL,
            client_id="client:1+",
            client_secret=client_secret,
            refresh_token=REFRESH,
            auth_method=auth_method,
        ),
        revocation_request(
            TOKEN_URL,
            client_id="client:1+",
            client_secret=client_secret,
            token=REFRESH,
            token_type_hint="refresh_token",
            auth_method=auth_method,
        ),
    ]


def test_post_is_the_default_and_sends_no_authorization_header() -> None:
    for request in each_builder(SECRET, "client_secret_post"):
        assert request.headers == FORM_HEADERS
        assert dict(decoded(request))["client_id"] == "client:1+"
        assert dict(decoded(request))["client_secret"] == SECRET


def test_basic_puts_the_form_encoded_credentials_in_the_header_only() -> None:
    for request in each_builder(SECRET, "client_secret_basic"):
        assert request.headers[: len(FORM_HEADERS)] == FORM_HEADERS
        assert basic_credentials(request) == ("client:1+", SECRET)
        # One authentication method per request: nothing of the client in the body.
        names = [name for name, _ in decoded(request)]
        assert "client_id" not in names
        assert "client_secret" not in names
        assert SECRET not in repr(request)
        assert dict(request.headers)["Authorization"] not in repr(request)


def test_basic_encodes_reserved_characters_before_base64() -> None:
    # RFC 6749 §2.3.1 / Appendix B: ":" in the id and "+" "/" "=" in the secret are escaped,
    # so the colon that separates user from password stays unambiguous.
    request = refresh_request(
        TOKEN_URL,
        client_id="a:b",
        client_secret="p:w+/=x",
        refresh_token="r",
        auth_method="client_secret_basic",
    )
    raw = base64.b64decode(dict(request.headers)["Authorization"].removeprefix("Basic "))
    assert raw == b"a%3Ab:p%3Aw%2B%2F%3Dx"


def test_client_credentials_with_basic() -> None:
    request = client_credentials_request(
        TOKEN_URL,
        client_id="client-1",
        client_secret=SECRET,
        scopes="as_account-us.acme incidents.read",
        auth_method="client_secret_basic",
    )
    assert basic_credentials(request) == ("client-1", SECRET)
    assert [name for name, _ in decoded(request)] == ["grant_type", "scope"]


def test_basic_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="client_secret_basic needs a client_secret"):
        each_builder(None, "client_secret_basic")


def test_public_clients_send_their_id_in_the_body() -> None:
    for request in each_builder(None, "client_secret_post"):
        assert request.headers == FORM_HEADERS
        assert dict(decoded(request))["client_id"] == "client:1+"
        assert "client_secret" not in dict(decoded(request))


def test_unknown_auth_methods_are_refused() -> None:
    with pytest.raises(ValueError, match="auth_method"):
        each_builder(SECRET, "private_key_jwt")  # type: ignore[arg-type]


@settings(max_examples=100, deadline=None)
@given(client_id=VISIBLE_ASCII, secret=VISIBLE_ASCII)
def test_every_visible_ascii_credential_survives_basic(client_id: str, secret: str) -> None:
    request = refresh_request(
        TOKEN_URL,
        client_id=client_id[:256],
        client_secret=secret,
        refresh_token="r",
        auth_method="client_secret_basic",
    )
    assert basic_credentials(request) == (client_id[:256], secret)
