"""Scopes: RFC 6749 §3.3 parsing and formatting, PagerDuty scope shapes, missing scopes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from pdauth.oauth import (
    CLASSIC_SCOPES,
    app_token_scope,
    format_scopes,
    is_scoped_scope,
    missing_scopes,
    parse_scopes,
    scoped_scope,
    split_app_token_scope,
)

SCOPE_TOKEN_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"\\')


def test_parse_space_separated() -> None:
    assert parse_scopes("openid write") == {"openid", "write"}
    assert parse_scopes("  read   write ") == {"read", "write"}
    assert parse_scopes("") == frozenset()
    assert parse_scopes("a a") == {"a"}


def test_parse_iterable() -> None:
    assert parse_scopes(["incidents.read", "users:sessions.write"]) == {
        "incidents.read",
        "users:sessions.write",
    }
    assert parse_scopes(()) == frozenset()
    assert parse_scopes(frozenset({"read"})) == {"read"}


@pytest.mark.parametrize(
    "value",
    [
        "read\twrite",
        "read\nwrite",
        'read "write"',
        "read\\write",
        "réad",
        "read\x00",
        "read\x7f",
        ["read write"],
        [""],
        ["ok", 3],
        [b"read"],
        42,
        None,
    ],
)
def test_parse_rejects_invalid_scope_tokens(value: object) -> None:
    with pytest.raises(ValueError, match="scope"):
        parse_scopes(value)  # type: ignore[arg-type]


def test_format_is_sorted_distinct_and_space_separated() -> None:
    assert format_scopes(["write", "openid", "read", "write"]) == "openid read write"
    assert format_scopes("b  a") == "a b"
    assert format_scopes([]) == ""


@settings(max_examples=100, deadline=None)
@given(st.frozensets(st.text(alphabet=SCOPE_TOKEN_CHARS, min_size=1, max_size=20), max_size=8))
def test_format_parse_round_trip(scopes: frozenset[str]) -> None:
    text = format_scopes(scopes)
    assert parse_scopes(text) == scopes
    assert format_scopes(parse_scopes(text)) == text


def test_classic_scopes() -> None:
    assert frozenset({"read", "write"}) == CLASSIC_SCOPES


@pytest.mark.parametrize(
    "scope",
    [
        "incidents.read",
        "incidents.write",
        "users:sessions.read",
        "incident_workflows:instances.write",
    ],
)
def test_scoped_scope_shapes(scope: str) -> None:
    assert is_scoped_scope(scope)


@pytest.mark.parametrize(
    "scope",
    ["read", "openid", "incidents.admin", "Incidents.read", "a:b:c.read", ".read", "x.read\n", ""],
)
def test_not_scoped_scope_shapes(scope: str) -> None:
    assert not is_scoped_scope(scope)


def test_scoped_scope_builder() -> None:
    assert scoped_scope("incidents", "read") == "incidents.read"
    assert scoped_scope("users:contact_methods", "write") == "users:contact_methods.write"
    with pytest.raises(ValueError, match="resource"):
        scoped_scope("Incidents", "read")
    with pytest.raises(ValueError, match="resource"):
        scoped_scope(None, "read")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="access"):
        scoped_scope("incidents", "admin")  # type: ignore[arg-type]


def test_app_token_scope() -> None:
    assert app_token_scope("us", "acme") == "as_account-us.acme"
    assert app_token_scope("eu", "acme-eu-2") == "as_account-eu.acme-eu-2"
    assert split_app_token_scope("as_account-eu.acme-eu-2") == ("eu", "acme-eu-2")
    assert split_app_token_scope("as_account-us.acme") == ("us", "acme")


@pytest.mark.parametrize("subdomain", ["", "Acme", "acme.evil", "acme corp", "a" * 64, None])
def test_app_token_scope_rejects_bad_subdomains(subdomain: object) -> None:
    with pytest.raises(ValueError, match="subdomain"):
        app_token_scope("us", subdomain)  # type: ignore[arg-type]


def test_app_token_scope_rejects_bad_regions() -> None:
    with pytest.raises(ValueError, match="region"):
        app_token_scope("ap", "acme")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "scope", ["as_account-ap.acme", "as_account-us.", "as_account-us.Acme", "as_account-us", 7]
)
def test_split_app_token_scope_rejects_malformed(scope: object) -> None:
    with pytest.raises(ValueError, match="as_account"):
        split_app_token_scope(scope)  # type: ignore[arg-type]


def test_missing_scopes_is_a_plain_difference() -> None:
    assert missing_scopes("read write", "openid write") == {"read"}
    assert missing_scopes(["incidents.read"], "openid incidents.write") == {"incidents.read"}
    assert missing_scopes("incidents.read", "incidents.read services.read") == frozenset()


def test_missing_scopes_ignores_openid_and_as_account() -> None:
    assert missing_scopes("openid write", "write") == frozenset()
    assert missing_scopes("as_account-us.acme incidents.read", "incidents.read") == frozenset()
    # PagerDuty's silent downgrade for an invalid scope: only openid comes back.
    assert missing_scopes("write", "openid") == {"write"}
