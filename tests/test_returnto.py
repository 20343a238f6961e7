"""return_to accepts only same-origin relative paths (docs/SECURITY.md item 18).

One rule for the library (``Connector.begin``) and the service (forms, connect sessions, the
sign-in redirect): every case the two former copies were tested with, plus the cases where only
one of them refused a value (the rule is the strict union of both).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings, strategies as st

from pdauth.returnto import MAX_RETURN_TO_LENGTH, safe_return_to

# The 28 open-redirect payloads of docs/SECURITY.md item 18, plus a few cousins.
OPEN_REDIRECT_PAYLOADS = [
    "https://evil.com",
    "//evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "/%2F%2Fevil.com",
    "%2F%2Fevil.com",
    "https:evil.com",
    "javascript:alert(1)",
    "/x%0d%0aLocation:%20https://evil.com",
    "https://app.example.com.evil.com",
    "/@evil.com",
    "\uff0f\uff0fevil.com",
    "/\uff0fevil.com",
    "///evil.com",
    "/.//evil.com",
    "/a/../..//evil.com",
    "/x\r\nLocation: https://evil.com",
    "/x\tx",
    " /home",
    "/home#https://evil.com",
    "HTTP://evil.com",
    "data:text/html,hi",
    "/%5Cevil.com",
    "/x?next=%0d%0a",
    "/x?y=%ff",
    "/x?y=\\",
    "",
    "/" + "a" * MAX_RETURN_TO_LENGTH,
]

# The library's former list (Connector.begin).
HOSTILE_RETURN_TO = [
    "https://evil.com",
    "//evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "/%2F%2Fevil.com",
    "%2F%2Fevil.com",
    "/%5Cevil.com",
    "/%252F%252Fevil.com",
    "https:evil.com",
    "javascript:alert(1)",
    "/x%0d%0aLocation:%20https://evil.com",
    "/x\r\nLocation: https://evil.com",
    "https://app.example.com.evil.com",
    "/@evil.com",
    "\uff0f\uff0fevil.com",
    "/\uff0f\uff0fevil.com",
    "/ok#frag",
    " /leading-space",
    "",
    "x" * 600,
]

# Values one of the two former rules let through (and a few both refused); all are refused.
UNION_CASES = [
    "/a/./b",  # dot segment (was kept by the decoding rule)
    "/a/..",
    "/..",
    "/a%20b",  # an escape in the path (was kept by the decoding rule)
    "/a%2e%2e/b",
    "/x'y",  # apostrophe (was kept by the decoding rule)
    "/a&b",  # ampersand in the path
    "/x?y=%2540evil.com",  # ``@`` after two rounds of decoding (was kept by the dot-segment rule)
    "/x?y=%40evil.com",  # ``@`` after one round
    "/x?y=%23frag",  # ``#`` after one round
    "/x?y=%255Cevil",  # backslash after two rounds
    "/x?y=%25250d",  # a control character after three rounds
    "/x?y=%252525",  # still encoded after the last round
    "/x?y=%0a",
    "/x?y=%e2%80%a8",  # U+2028 LINE SEPARATOR
    "/x?y=%7f",  # DEL
]

PLAIN_PATHS = [
    "/",
    "/settings",
    "/settings/integrations",
    "/a-b_c.d~e",
    "/x?tab=pd&y=1",
    "/x?q=a%20b",
    "/a/b?x=1&y=%20z",
    "/integrations/pd-1",
    "/settings/integrations?tab=pd",
    "/x?next=/home",
    "/x?y=%2520",  # decodes to ``%20`` then to a space: printable at every stage
    "/x?a=1?b=2",
    "/" + "a" * (MAX_RETURN_TO_LENGTH - 1),
]


@pytest.mark.parametrize("payload", OPEN_REDIRECT_PAYLOADS)
def test_open_redirect_payloads_are_refused(payload: str) -> None:
    assert safe_return_to(payload) is None


def test_the_open_redirect_list_is_complete() -> None:
    assert len(OPEN_REDIRECT_PAYLOADS) == 28
    assert len(set(OPEN_REDIRECT_PAYLOADS)) == 28


@pytest.mark.parametrize("value", HOSTILE_RETURN_TO)
def test_hostile_return_to_falls_back_to_the_default(value: str) -> None:
    assert safe_return_to(value) is None


@pytest.mark.parametrize("value", UNION_CASES)
def test_what_either_former_rule_refused_is_refused(value: str) -> None:
    assert safe_return_to(value) is None


@pytest.mark.parametrize("path", PLAIN_PATHS)
def test_plain_relative_paths_are_kept(path: str) -> None:
    assert safe_return_to(path) == path


@pytest.mark.parametrize("value", [None, 3, b"/x", ["/x"], object()])
def test_non_strings_are_refused(value: object) -> None:
    assert safe_return_to(value) is None


def _assert_same_origin_path(kept: str) -> None:
    parts = urlsplit(kept)
    assert not parts.scheme
    assert not parts.netloc
    assert not parts.fragment
    assert kept.startswith("/")
    assert not kept.startswith("//")
    assert "//" not in parts.path
    assert "." not in parts.path.split("/")
    assert ".." not in parts.path.split("/")
    assert "%" not in parts.path
    assert all(0x21 <= ord(ch) <= 0x7E for ch in kept)
    assert "\\" not in kept
    assert "@" not in kept
    assert "#" not in kept
    assert len(kept) <= MAX_RETURN_TO_LENGTH


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_anything_accepted_is_a_single_slash_path_of_printable_ascii(value: str) -> None:
    result = safe_return_to(value)
    if result is not None:
        assert result == value
        _assert_same_origin_path(result)


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=80)
    | st.from_regex(r"/[/\\%@:a-z0-9.?#=&]{0,30}", fullmatch=True)
    | st.from_regex(r"/[a-z./]{0,12}\?(%(25)?[0-9a-fA-F]{2}|[a-z=&]){0,10}", fullmatch=True)
)
def test_return_to_is_always_a_same_origin_path(value: str) -> None:
    kept = safe_return_to(value)
    if kept is not None:
        assert kept == value
        _assert_same_origin_path(kept)
