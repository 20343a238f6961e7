"""return_to accepts only same-origin relative paths (SECURITY-CHECKLIST.md item 18)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdauth.service.returnto import MAX_RETURN_TO_LENGTH, safe_return_to

# Every payload of checklist item 18, plus a few cousins.
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


@pytest.mark.parametrize("payload", OPEN_REDIRECT_PAYLOADS)
def test_open_redirect_payloads_are_refused(payload: str) -> None:
    assert safe_return_to(payload) is None


@pytest.mark.parametrize(
    "path",
    ["/", "/settings", "/settings/integrations", "/a-b_c.d~e", "/x?tab=pd&y=1", "/x?q=a%20b"],
)
def test_plain_relative_paths_are_kept(path: str) -> None:
    assert safe_return_to(path) == path


@pytest.mark.parametrize("value", [None, 3, b"/x", ["/x"]])
def test_non_strings_are_refused(value: object) -> None:
    assert safe_return_to(value) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_anything_accepted_is_a_single_slash_path_of_printable_ascii(value: str) -> None:
    result = safe_return_to(value)
    if result is not None:
        assert result == value
        assert result.startswith("/")
        assert not result.startswith("//")
        assert all(0x21 <= ord(ch) <= 0x7E for ch in result)
        assert "\\" not in result
        assert "@" not in result
        assert "#" not in result
