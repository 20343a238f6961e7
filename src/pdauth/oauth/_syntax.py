"""Character-level rules shared by the pure OAuth modules (RFC 6749 Appendix A).

RFC 6749 fixes the alphabet of every protocol element (``error`` and ``error_description``
in §4.1.2.1 / §5.2, ``scope-token`` in §3.3); RFC 7636 §4.1 fixes the PKCE verifier's.
The patterns live here once so the callback parser, the token-response parser and the
request builders agree. Everything uses explicit ASCII ranges, never ``\\w`` or ``\\d``,
which match non-ASCII digits and letters in Python.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = [
    "DESCRIPTION_MAX",
    "ERROR_CODE",
    "SUBDOMAIN",
    "TOKEN_MAX_LEN",
    "is_http_url",
    "is_printable_token",
    "is_state",
    "sanitize_description",
]

# RFC 6749 §4.1.2.1 / §5.2: error = 1*( %x20-21 / %x23-5B / %x5D-7E ).
ERROR_CODE = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]+")
# A DNS label, which is what a PagerDuty subdomain (<subdomain>.pagerduty.com) must be.
SUBDOMAIN = re.compile(r"[a-z0-9-]{1,63}")
DESCRIPTION_MAX = 500
# Longest access or refresh token we accept or send; PagerDuty's are well under 100 characters.
TOKEN_MAX_LEN = 4096
# What we accept back as ``state``: what generate_state makes, with room for other generators.
_STATE = re.compile(r"[A-Za-z0-9_-]{1,256}")

_PRINTABLE = re.compile(r"[\x21-\x7e]+")
# The complement of RFC 6749's error_description alphabet: controls, '"', '\' and non-ASCII.
_NOT_DESCRIPTION = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]+")


def is_printable_token(value: object, max_len: int) -> bool:
    """True for a non-empty str of at most ``max_len`` visible ASCII characters (no space)."""
    return (
        isinstance(value, str) and 0 < len(value) <= max_len and bool(_PRINTABLE.fullmatch(value))
    )


def is_state(value: object) -> bool:
    """True for a non-empty str of at most 256 characters of ``[A-Za-z0-9_-]``."""
    return isinstance(value, str) and _STATE.fullmatch(value) is not None


def sanitize_description(value: object) -> str | None:
    """RFC 6749's ``error_description`` alphabet only, trimmed and truncated; None if empty.

    The text comes from the other side of a redirect, so it is treated as hostile: anything
    outside the alphabet is dropped rather than escaped (escaping is the renderer's job).
    """
    if not isinstance(value, str):
        return None
    cleaned = _NOT_DESCRIPTION.sub("", value).strip()
    cleaned = cleaned[:DESCRIPTION_MAX].rstrip()
    return cleaned or None


def is_http_url(value: object) -> bool:
    """True for an absolute http(s) URL with a host and no fragment (RFC 6749 §3.1, §3.2)."""
    if not isinstance(value, str) or not _PRINTABLE.fullmatch(value) or "#" in value:
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
