"""The authorization URL (RFC 6749 §4.1.1 + RFC 7636 §4.3)."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
from hypothesis import given, settings, strategies as st

from pdauth.oauth import build_authorization_url, generate_code_verifier, s256_challenge

ENDPOINT = "https://identity.pagerduty.com/oauth/authorize"
CHALLENGE = s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
STATE = "s" * 43


def build(**overrides: object) -> str:
    args: dict[str, object] = {
        "client_id": "client-1",
        "redirect_uri": "https://app.example.com/callback",
        "scopes": ["write"],
        "state": STATE,
        "code_challenge": CHALLENGE,
    }
    args.update(overrides)
    endpoint = args.pop("authorize_endpoint", ENDPOINT)
    return build_authorization_url(endpoint, **args)  # type: ignore[arg-type]


def test_all_parameters_are_present_once() -> None:
    url = build(scopes=["write", "openid"])
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "identity.pagerduty.com",
        "/oauth/authorize",
    )
    assert parse_qs(parts.query) == {
        "response_type": ["code"],
        "client_id": ["client-1"],
        "redirect_uri": ["https://app.example.com/callback"],
        "scope": ["openid write"],
        "state": [STATE],
        "code_challenge": [CHALLENGE],
        "code_challenge_method": ["S256"],
    }


def test_spaces_are_percent_20_and_reserved_characters_encoded() -> None:
    url = build(scopes="incidents.read users:sessions.write")
    assert "scope=incidents.read%20users%3Asessions.write" in url
    assert "redirect_uri=https%3A%2F%2Fapp.example.com%2Fcallback" in url
    assert "+" not in urlsplit(url).query


def test_an_existing_query_is_kept_first() -> None:
    url = build(authorize_endpoint=ENDPOINT + "?tenant=a%20b&flag")
    query = urlsplit(url).query
    assert query.startswith("tenant=a%20b&flag&response_type=code")
    assert ("tenant", "a b") in parse_qsl(query, keep_blank_values=True)


def test_an_empty_query_marker_is_dropped() -> None:
    assert build(authorize_endpoint=ENDPOINT + "?").startswith(ENDPOINT + "?response_type=code")


@pytest.mark.parametrize("name", ["state", "scope", "client_id", "code_challenge_method"])
def test_an_endpoint_repeating_our_parameters_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="already carries"):
        build(authorize_endpoint=f"{ENDPOINT}?{name}=x")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"authorize_endpoint": "identity.pagerduty.com/oauth/authorize"}, "authorize_endpoint"),
        ({"authorize_endpoint": "ftp://identity.pagerduty.com/x"}, "authorize_endpoint"),
        ({"authorize_endpoint": ENDPOINT + "#frag"}, "authorize_endpoint"),
        ({"authorize_endpoint": "https:///path"}, "authorize_endpoint"),
        ({"authorize_endpoint": "https://[::1/x"}, "authorize_endpoint"),
        ({"authorize_endpoint": ENDPOINT + " "}, "authorize_endpoint"),
        ({"client_id": ""}, "client_id"),
        ({"client_id": "a b"}, "client_id"),
        ({"redirect_uri": "/callback"}, "redirect_uri"),
        ({"redirect_uri": "https://app.example.com/cb#x"}, "redirect_uri"),
        ({"scopes": []}, "scope"),
        ({"scopes": "read\nwrite"}, "scope"),
        ({"state": ""}, "state"),
        ({"state": "a b"}, "state"),
        ({"code_challenge": "short"}, "code_challenge"),
        ({"code_challenge": CHALLENGE + "="}, "code_challenge"),
        ({"code_challenge": None}, "code_challenge"),
    ],
)
def test_bad_arguments_are_refused(overrides: Mapping[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        build(**overrides)
    assert STATE not in str(info.value)
    assert CHALLENGE not in str(info.value)


URL_SAFE = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"),
    min_size=1,
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(
    client_id=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
    ),
    path=URL_SAFE,
    scopes=st.frozensets(
        st.text(
            alphabet=st.characters(
                min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\'
            ),
            min_size=1,
            max_size=15,
        ),
        min_size=1,
        max_size=5,
    ),
    state=st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
        min_size=1,
        max_size=256,
    ),
)
def test_parameters_round_trip_through_the_url(
    client_id: str, path: str, scopes: frozenset[str], state: str
) -> None:
    redirect_uri = "https://app.example.com/" + path
    challenge = s256_challenge(generate_code_verifier())
    url = build_authorization_url(
        ENDPOINT + "?keep=1",
        client_id=client_id,
        redirect_uri=redirect_uri,
        scopes=scopes,
        state=state,
        code_challenge=challenge,
    )
    parts = urlsplit(url)
    assert parts.fragment == ""
    assert parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True) == [
        ("keep", "1"),
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", " ".join(sorted(scopes))),
        ("state", state),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
