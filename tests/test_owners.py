"""Owner ids: one rule, refusing what forges log lines or reorders what a reader sees."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings, strategies as st

from pdauth.owners import MAX_OWNER_LENGTH, OWNER_PATTERN, check_owner, validate_owner

LINE_BREAKS = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
BIDI_CONTROLS = [
    "\u061c",  # ARABIC LETTER MARK
    "\u200e",  # LEFT-TO-RIGHT MARK
    "\u200f",  # RIGHT-TO-LEFT MARK
    "\u202a",  # LEFT-TO-RIGHT EMBEDDING
    "\u202b",  # RIGHT-TO-LEFT EMBEDDING
    "\u202c",  # POP DIRECTIONAL FORMATTING
    "\u202d",  # LEFT-TO-RIGHT OVERRIDE
    "\u202e",  # RIGHT-TO-LEFT OVERRIDE
    "\u2066",  # LEFT-TO-RIGHT ISOLATE
    "\u2067",  # RIGHT-TO-LEFT ISOLATE
    "\u2068",  # FIRST STRONG ISOLATE
    "\u2069",  # POP DIRECTIONAL ISOLATE
]


# The service's former cases (tests/service/test_connect_sessions.py) and the library's.
@pytest.mark.parametrize("owner", ["", " a", "a ", "a\nb", "x" * 256, None, 7, b"alice"])
def test_bad_owners_are_refused(owner: object) -> None:
    assert validate_owner(owner) is None
    with pytest.raises(ValueError, match="owner"):
        check_owner(owner)


@pytest.mark.parametrize("char", LINE_BREAKS + BIDI_CONTROLS + ["\x00", "\x7f", "\x9f"])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_line_breaks_and_bidi_controls_are_refused_anywhere(char: str, where: str) -> None:
    owner = {"start": char + "alice", "middle": "al" + char + "ice", "end": "alice" + char}[where]
    assert validate_owner(owner) is None
    # The published pattern says the same (what the API documents is what it accepts).
    assert re.fullmatch(OWNER_PATTERN, owner) is None


def test_the_reported_forgeries_are_refused() -> None:
    assert validate_owner("rt-log\u2028X CRITICAL pdauth.service forged") is None
    assert validate_owner("admin\u202egnp.exe") is None


def test_a_lone_surrogate_is_refused() -> None:
    assert validate_owner("a\ud800b") is None


@pytest.mark.parametrize(
    "owner",
    [
        "a",
        "user-1",
        "tenant:42/user@example.com",
        "rt-log] X owner=admin request_id=0 [",  # quoting it is the log format's job
        "Jürgen Müller",
        "名前",
        "עברית",  # right-to-left text itself is fine; only the invisible controls are refused
        "a b",
        "x" * MAX_OWNER_LENGTH,
        "\u00a0a",  # NO-BREAK SPACE is not a control
    ],
)
def test_ordinary_owners_are_kept(owner: str) -> None:
    assert validate_owner(owner) == owner
    assert check_owner(owner) == owner
    assert re.fullmatch(OWNER_PATTERN, owner) is not None


def test_the_error_names_no_value() -> None:
    with pytest.raises(ValueError, match="owner must be") as caught:
        check_owner("canary-owner\u2028")
    assert "canary-owner" not in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_anything_accepted_splits_into_one_line(value: str) -> None:
    kept = validate_owner(value)
    if kept is not None:
        assert kept.splitlines() == [kept]
        assert kept == kept.strip(" ")
        assert not any(char in kept for char in BIDI_CONTROLS)
        assert 0 < len(kept) <= MAX_OWNER_LENGTH
        assert re.fullmatch(OWNER_PATTERN, kept) is not None
