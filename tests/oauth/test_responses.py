"""Token and revocation responses (RFC 6749 §5.1, §5.2; RFC 7009 §2.2)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import parse_qsl

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from pdauth.errors import (
    InsufficientScopeError,
    InvalidClientError,
    InvalidGrantError,
    OAuthError,
    TokenResponseError,
)
from pdauth.oauth import (
    TokenSet,
    parse_revocation_response,
    parse_token_response,
    refresh_request,
)

NOW = 1_800_000_000.0
ACCESS = "pdus+_0XBPWQQ_b2b2060b-0000-4000-8000-000000000000"
REFRESH = "pdus+_1XBPWQQ_f85dd2f1-0000-4000-8000-000000000000"
ID_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJQSVlLREJOIn0.c2lnbmF0dXJl"

# The three response shapes from PagerDuty's documentation.
AUTH_CODE = {
    "client_info": "prefix_legacy_app",
    "id_token": ID_TOKEN,
    "token_type": "bearer",
    "access_token": ACCESS,
    "refresh_token": REFRESH,
    "scope": "openid write",
    "expires_in": 864000,
}
REFRESHED = {
    "token_type": "bearer",
    "access_token": ACCESS + "2",
    "refresh_token": REFRESH + "2",
    "scope": "openid write",
    "expires_in": 864000,
}
APP_TOKEN = {
    "access_token": ACCESS,
    "scope": "as_account-us.companysubdomain incidents.read services.read",
    "token_type": "bearer",
    "expires_in": 86400,
}


def body(data: object) -> bytes:
    return json.dumps(data).encode()


def parse(data: object, status: int = 200, **kwargs: object) -> TokenSet:
    raw = data if isinstance(data, bytes) else body(data)
    return parse_token_response(status, raw, now=NOW, **kwargs)  # type: ignore[arg-type]


def with_(base: Mapping[str, object], **changes: object) -> dict[str, object]:
    result = dict(base)
    for key, value in changes.items():
        if value is _DROP:
            result.pop(key, None)
        else:
            result[key] = value
    return result


_DROP = object()


def invalid(data: object, status: int = 200, **kwargs: object) -> TokenResponseError:
    with pytest.raises(TokenResponseError) as info:
        parse(data, status, **kwargs)
    assert type(info.value) is TokenResponseError
    assert info.value.error == "invalid_response"
    for secret in (ACCESS, REFRESH, ID_TOKEN):
        assert secret not in str(info.value)
    return info.value


# --- success ------------------------------------------------------------------------------


def test_authorization_code_response() -> None:
    tokens = parse(AUTH_CODE, required_scopes=["write"])
    assert tokens == TokenSet(
        access_token=ACCESS,
        refresh_token=REFRESH,
        token_type="bearer",
        expires_in=864000,
        expires_at=NOW + 864000,
        scopes=frozenset({"openid", "write"}),
        id_token=ID_TOKEN,
        client_info="prefix_legacy_app",
        received_at=NOW,
    )


def test_refresh_response_rotates_the_refresh_token() -> None:
    tokens = parse(REFRESHED, previous_refresh_token=REFRESH)
    assert tokens.refresh_token == REFRESH + "2"
    assert tokens.id_token is None
    assert tokens.client_info is None


@pytest.mark.parametrize("missing", [_DROP, None])
def test_a_response_without_refresh_token_keeps_the_previous_one(missing: object) -> None:
    tokens = parse(with_(REFRESHED, refresh_token=missing), previous_refresh_token=REFRESH)
    assert tokens.refresh_token == REFRESH
    assert parse(with_(REFRESHED, refresh_token=missing)).refresh_token is None


def test_app_token_response() -> None:
    tokens = parse(APP_TOKEN, required_scopes="as_account-us.other incidents.read")
    assert tokens.refresh_token is None
    assert tokens.scopes == {"as_account-us.companysubdomain", "incidents.read", "services.read"}
    assert tokens.expires_at == NOW + 86400


def test_repr_hides_every_token() -> None:
    text = repr(parse(AUTH_CODE))
    for secret in (ACCESS, REFRESH, ID_TOKEN):
        assert secret not in text
    assert "prefix_legacy_app" in text


@pytest.mark.parametrize("token_type", ["bearer", "Bearer", "BEARER", "bEaReR"])
def test_token_type_is_case_insensitive(token_type: str) -> None:
    assert parse(with_(AUTH_CODE, token_type=token_type)).token_type == "bearer"


def test_without_expires_in_there_is_no_expiry() -> None:
    tokens = parse(with_(AUTH_CODE, expires_in=_DROP))
    assert (tokens.expires_in, tokens.expires_at) == (None, None)
    assert not tokens.is_expired(NOW + 10**9)


def test_is_expired() -> None:
    tokens = parse(with_(AUTH_CODE, expires_in=100))
    assert not tokens.is_expired(NOW + 99)
    assert tokens.is_expired(NOW + 100)
    assert tokens.is_expired(NOW + 50, leeway=60)


def test_without_scope_the_requested_scopes_are_assumed_and_not_checked() -> None:
    data = with_(AUTH_CODE, scope=_DROP)
    assert parse(data, required_scopes="write").scopes == frozenset()
    assert parse(data, required_scopes="write", requested_scopes="write openid").scopes == {
        "write",
        "openid",
    }
    assert parse(with_(AUTH_CODE, scope=None), required_scopes="read").scopes == frozenset()


def test_pagerdutys_silent_downgrade_to_openid_is_caught() -> None:
    with pytest.raises(InsufficientScopeError) as info:
        parse(with_(AUTH_CODE, scope="openid"), required_scopes=["write"])
    assert info.value.missing_scopes == ("write",)
    assert info.value.granted_scopes == ("openid",)
    assert info.value.error == "insufficient_scope"


def test_missing_scopes_are_all_reported() -> None:
    with pytest.raises(InsufficientScopeError) as info:
        parse(APP_TOKEN, required_scopes="incidents.read users.read teams.write")
    assert info.value.missing_scopes == ("teams.write", "users.read")


def test_client_info_that_is_malformed_is_dropped() -> None:
    assert parse(with_(AUTH_CODE, client_info=["x"])).client_info is None
    assert parse(with_(AUTH_CODE, client_info="a b")).client_info is None
    assert parse(with_(AUTH_CODE, client_info="x" * 1025)).client_info is None


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/jwt+json",
    ],
)
def test_json_content_types_are_accepted(content_type: str | None) -> None:
    assert parse(AUTH_CODE, content_type=content_type).access_token == ACCESS


def test_tokens_with_plus_survive_into_the_next_request() -> None:
    tokens = parse(AUTH_CODE)
    request = refresh_request(
        "https://identity.pagerduty.com/oauth/token",
        client_id="c",
        client_secret="s",
        refresh_token=tokens.refresh_token or "",
    )
    assert dict(parse_qsl(request.body().decode()))["refresh_token"] == REFRESH


# --- malformed success responses ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (with_(AUTH_CODE, token_type="mac"), "token_type"),
        (with_(AUTH_CODE, token_type=_DROP), "token_type"),
        (with_(AUTH_CODE, token_type=None), "token_type"),
        (with_(AUTH_CODE, token_type=["bearer"]), "token_type"),
        (with_(AUTH_CODE, token_type="b\u0435arer"), "token_type"),  # Cyrillic e
        (with_(AUTH_CODE, access_token=_DROP), "access_token"),
        (with_(AUTH_CODE, access_token=""), "access_token"),
        (with_(AUTH_CODE, access_token=123), "access_token"),
        (with_(AUTH_CODE, access_token="a b"), "access_token"),
        (with_(AUTH_CODE, access_token="x" * 4097), "access_token"),
        (with_(AUTH_CODE, access_token="t\u00f6ken"), "access_token"),
        (with_(AUTH_CODE, refresh_token=""), "refresh_token"),
        (with_(AUTH_CODE, refresh_token=5), "refresh_token"),
        (with_(AUTH_CODE, refresh_token="x" * 4097), "refresh_token"),
        (with_(AUTH_CODE, expires_in="3600"), "expires_in"),
        (with_(AUTH_CODE, expires_in=3600.0), "expires_in"),
        (with_(AUTH_CODE, expires_in=3600.5), "expires_in"),
        (with_(AUTH_CODE, expires_in=True), "expires_in"),
        (with_(AUTH_CODE, expires_in=0), "expires_in"),
        (with_(AUTH_CODE, expires_in=-1), "expires_in"),
        (with_(AUTH_CODE, expires_in=10**30), "expires_in"),
        (with_(AUTH_CODE, scope=["openid", "write"]), "scope"),
        (with_(AUTH_CODE, scope="openid\twrite"), "scope"),
        (with_(AUTH_CODE, scope='openid "write"'), "scope"),
        (with_(AUTH_CODE, id_token=""), "id_token"),
        (with_(AUTH_CODE, id_token=1), "id_token"),
        (with_(AUTH_CODE, id_token="a b.c"), "id_token"),
        (with_(AUTH_CODE, id_token="a." * 9000), "id_token"),
    ],
)
def test_malformed_fields_are_refused(data: object, message: str) -> None:
    assert message in str(invalid(data))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "strict JSON"),
        (b"access_token=x&token_type=bearer", "strict JSON"),
        (b"\xff\xfe{}", "strict JSON"),
        (b'{"access_token": "a", "token_type": "bearer", "access_token": "b"}', "strict JSON"),
        (b'{"access_token": "a", "token_type": "bearer", "expires_in": NaN}', "strict JSON"),
        (b'{"access_token": "a", "token_type": "bearer", "expires_in": Infinity}', "strict JSON"),
        (b'{"x": ' + b"[" * 16 + b"]" * 16 + b"}", "strict JSON"),
        (b"[" * 60_000, "strict JSON"),
        (b'{"a": 1' + b"0" * 5000 + b"}", "strict JSON"),  # beyond Python's int digit limit
        (b'["access_token"]', "not a JSON object"),
        (b'"bearer"', "not a JSON object"),
        (b"null", "not a JSON object"),
        (b" " * (64 * 1024 + 1), "larger than 65536 bytes"),
    ],
)
def test_malformed_bodies_are_refused(raw: bytes, message: str) -> None:
    assert message in str(invalid(raw))


def test_nesting_inside_strings_does_not_count() -> None:
    data = with_(AUTH_CODE, client_info="[[[[[[[[[[[[[[[[[[[[", extra='\\"{{{{{{{{{{{{{{{{{{{{{{')
    assert parse(data).client_info == "[[[[[[[[[[[[[[[[[[[["
    nested: object = "leaf"
    for _ in range(15):
        nested = [nested]
    assert parse(with_(AUTH_CODE, extra=nested)).access_token == ACCESS


@pytest.mark.parametrize(
    "content_type", ["text/html", "text/plain", "application/x-www-form-urlencoded", ""]
)
def test_other_content_types_are_refused(content_type: str) -> None:
    assert "application/json" in str(invalid(AUTH_CODE, content_type=content_type))


def test_a_non_finite_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="now"):
        parse_token_response(200, body(AUTH_CODE), now=float("nan"))


# --- error responses ------------------------------------------------------------------------


def oauth_error(status: int, raw: bytes) -> OAuthError:
    with pytest.raises(OAuthError) as info:
        parse_token_response(status, raw, now=NOW)
    return info.value


def test_invalid_grant() -> None:
    error = oauth_error(400, body({"error": "invalid_grant", "error_description": "expired"}))
    assert type(error) is InvalidGrantError
    assert (error.error, error.description, error.uri) == ("invalid_grant", "expired", None)


@pytest.mark.parametrize("status", [400, 401])
def test_invalid_client(status: int) -> None:
    error = oauth_error(status, body({"error": "invalid_client"}))
    assert type(error) is InvalidClientError
    assert (error.error, error.description) == ("invalid_client", None)


@pytest.mark.parametrize(
    "code",
    [
        "invalid_request",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "server_error",
    ],
)
def test_other_rfc_errors(code: str) -> None:
    error = oauth_error(400, body({"error": code, "error_description": "Invalid scope"}))
    assert type(error) is OAuthError
    assert (error.error, error.description) == (code, "Invalid scope")


def test_unknown_error_codes_and_hostile_descriptions_are_reduced() -> None:
    error = oauth_error(
        400,
        body(
            {
                "error": "weird_<code>",
                "error_description": 'bad "thing"\n\u00e9' + "x" * 1000,
                "error_uri": "https://evil.example",
            }
        ),
    )
    assert type(error) is OAuthError
    assert error.error == "unknown_error"
    assert error.description == "bad thing" + "x" * 491
    assert error.uri is None
    assert "evil" not in str(error)


@pytest.mark.parametrize(
    ("status", "raw", "cls", "code"),
    [
        (401, b"", InvalidClientError, "invalid_client"),
        (401, b"<html>Unauthorized</html>", InvalidClientError, "invalid_client"),
        (401, body({"error": 1}), InvalidClientError, "invalid_client"),
        (500, b"<html>oops</html>", OAuthError, "server_error"),
        (502, b"", OAuthError, "server_error"),
        (503, b"Service Unavailable", OAuthError, "temporarily_unavailable"),
        (429, b"", OAuthError, "temporarily_unavailable"),
        (400, b"not json", OAuthError, "invalid_response"),
        (400, body({"error": "x" * 65}), OAuthError, "invalid_response"),
        (400, body({"error": "a\nb"}), OAuthError, "invalid_response"),
        (400, body(["invalid_grant"]), OAuthError, "invalid_response"),
        (400, body({"error": "invalid_grant"}) + b" " * 70_000, OAuthError, "invalid_response"),
        (302, b"", OAuthError, "invalid_response"),
        (100, b"", OAuthError, "invalid_response"),
    ],
)
def test_error_statuses_without_an_oauth_body(
    status: int, raw: bytes, cls: type[OAuthError], code: str
) -> None:
    error = oauth_error(status, raw)
    assert type(error) is cls
    assert error.error == code
    assert f"HTTP {status}" in (error.description or "")
    assert "html" not in str(error).lower()


def test_an_error_body_is_never_quoted() -> None:
    canary = "Zq9Canary"
    for raw in (canary.encode(), b"<p>" + canary.encode() + b"</p>", body({"detail": canary})):
        error = oauth_error(500, raw)
        assert canary not in str(error)


# --- revocation -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 204])
def test_revocation_success(status: int) -> None:
    parse_revocation_response(status, b"")  # returns, raises nothing
    parse_revocation_response(status, b"<html>whatever</html>")


def test_revocation_503_means_retry() -> None:
    for raw in (b"", body({"error": "invalid_request"})):
        with pytest.raises(OAuthError) as info:
            parse_revocation_response(503, raw)
        assert type(info.value) is OAuthError
        assert info.value.error == "temporarily_unavailable"


@pytest.mark.parametrize(
    ("status", "raw", "cls", "code"),
    [
        (400, body({"error": "unsupported_token_type"}), OAuthError, "unsupported_token_type"),
        (400, body({"error": "invalid_request"}), OAuthError, "invalid_request"),
        (401, body({"error": "invalid_client"}), InvalidClientError, "invalid_client"),
        (401, b"", InvalidClientError, "invalid_client"),
        (500, b"boom", OAuthError, "server_error"),
        (404, b"", OAuthError, "invalid_response"),
    ],
)
def test_revocation_errors(status: int, raw: bytes, cls: type[OAuthError], code: str) -> None:
    with pytest.raises(OAuthError) as info:
        parse_revocation_response(status, raw)
    assert type(info.value) is cls
    assert info.value.error == code
    if not raw.startswith(b"{"):
        assert "revocation endpoint" in (info.value.description or "")


# --- properties -----------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = (
    "access_token",
    "refresh_token",
    "token_type",
    "expires_in",
    "scope",
    "id_token",
    "client_info",
    "error",
    "error_description",
)
MUTATED = st.builds(
    lambda base, changes: {**base, **changes},
    st.sampled_from([AUTH_CODE, REFRESHED, APP_TOKEN, {}]),
    st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=4),
)
STATUSES = st.one_of(
    st.sampled_from([200, 201, 204, 400, 401, 403, 429, 500, 503]), st.integers(0, 999)
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    status=STATUSES,
    raw=st.one_of(
        st.binary(max_size=200),
        JSON_VALUES.map(body),
        MUTATED.map(body),
        st.text(alphabet='[]{}",:0123456789.eE-+ \\tnulrsafx', max_size=200).map(str.encode),
    ),
    content_type=st.one_of(st.none(), st.sampled_from(["application/json", "text/html", ";", ""])),
)
@example(status=200, raw=b"[" * 200_000, content_type=None)
@example(status=200, raw=b"9" * 5000, content_type=None)
@example(status=200, raw=b'{"a":' * 5000, content_type=None)
def test_arbitrary_responses_raise_only_oauth_errors(
    status: int, raw: bytes, content_type: str | None
) -> None:
    try:
        tokens = parse_token_response(
            status, raw, now=NOW, content_type=content_type, required_scopes="write"
        )
    except OAuthError:
        pass
    else:
        assert 200 <= status < 300
        assert tokens.access_token
    try:
        parse_revocation_response(status, raw)
    except OAuthError:
        assert not 200 <= status < 300


CANARY = "Zq9Canary"
SECRET_FIELDS = ("access_token", "refresh_token", "id_token")


@settings(max_examples=200, deadline=None)
@given(
    status=STATUSES,
    base=st.sampled_from([AUTH_CODE, REFRESHED, APP_TOKEN]),
    secrets=st.dictionaries(
        st.sampled_from(SECRET_FIELDS),
        st.text(max_size=30).map(lambda t: t + CANARY + t),
        min_size=1,
    ),
    breakage=st.dictionaries(st.sampled_from(FIELDS[2:7]), JSON_VALUES, max_size=2),
)
def test_tokens_never_appear_in_errors(
    status: int,
    base: Mapping[str, object],
    secrets: Mapping[str, str],
    breakage: Mapping[str, object],
) -> None:
    raw = body({**base, **breakage, **secrets})
    try:
        parse_token_response(status, raw, now=NOW, required_scopes="write")
    except OAuthError as error:
        for text in (str(error), repr(error), error.description or "", repr(error.args)):
            assert CANARY not in text


@settings(max_examples=100, deadline=None)
@given(
    access=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=300
    ),
    refresh=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=300
    ),
)
def test_tokens_round_trip_from_response_to_refresh_form(access: str, refresh: str) -> None:
    tokens = parse(with_(REFRESHED, access_token="+" + access, refresh_token=refresh + "+"))
    assert tokens.access_token == "+" + access
    request = refresh_request(
        "https://identity.pagerduty.com/oauth/token",
        client_id="c",
        client_secret="s",
        refresh_token=tokens.refresh_token or "",
    )
    assert dict(parse_qsl(request.body().decode("ascii")))["refresh_token"] == refresh + "+"
