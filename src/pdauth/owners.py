"""Owner ids: the one rule for the host application's identifier of the user who connects.

An owner id comes from the host app (a library argument, a JSON API field, a signed connect
session) and ends up in the database, the admin pages and every log line of a flow, so it is
refused unless it is 1-255 characters with no control character anywhere (C0, DEL, C1 — which
includes U+0085 NEXT LINE), no Unicode line or paragraph separator (U+2028, U+2029), no
bidirectional control (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069: they reorder what
a reader sees), no lone surrogate, and no space at either end. Tools that split logs on Unicode
line breaks would otherwise show a forged line, and bidi controls make an owner read as another
(docs/SECURITY.md item 50). :data:`OWNER_PATTERN` is the same rule as an ECMAScript /
JSON Schema pattern, so the API can publish exactly what it accepts.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_OWNER_LENGTH", "OWNER_PATTERN", "check_owner", "validate_owner"]

MAX_OWNER_LENGTH: Final = 255

# Characters refused anywhere: C0 controls, DEL and C1 controls (U+0085 among them), the
# Arabic letter mark, LRM/RLM, the line and paragraph separators with the embedding and
# override controls that follow them (U+2028-U+202E), and the isolates (U+2066-U+2069).
_REFUSED_ABOVE_SPACE = r"\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
_NOT_AT_END = rf"[^\u0000-\u0020{_REFUSED_ABOVE_SPACE}]"
_INSIDE = rf"[^\u0000-\u001f{_REFUSED_ABOVE_SPACE}]"
OWNER_PATTERN: Final = rf"^{_NOT_AT_END}(?:{_INSIDE}{{0,253}}{_NOT_AT_END})?$"
_OWNER = re.compile(OWNER_PATTERN)
# Lone surrogates (JSON escapes can smuggle them in; no UTF-8 text contains them) cannot be
# encoded back out, so they are refused separately (the published pattern cannot say so).
_SURROGATE = re.compile("[\ud800-\udfff]")


def validate_owner(value: object) -> str | None:
    """``value`` if it is an acceptable owner id (see the module docstring), else None."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_OWNER_LENGTH:
        return None
    if _OWNER.fullmatch(value) is None or _SURROGATE.search(value):
        return None  # fullmatch: "$" alone would let a final newline through
    return value


def check_owner(value: object) -> str:
    """``value`` if it is an acceptable owner id, else ValueError (which names no value)."""
    owner = validate_owner(value)
    if owner is None:
        raise ValueError(
            f"owner must be a non-empty string of at most {MAX_OWNER_LENGTH} chars, without "
            "control characters, line or paragraph separators, bidirectional controls or "
            "surrounding spaces"
        )
    return owner
