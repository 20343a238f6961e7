"""Where a browser may be sent after connecting: same-origin relative paths only.

A ``return_to`` value comes from a form field or a connect-session request, so it is attacker
input. RFC 9700 §4.11.1 (clients MUST NOT expose open redirectors) and RFC 6749 §10.15 ask for an
allowlist, not a blocklist: a value is accepted only if it is a plain absolute *path* on this
origin — printable ASCII from a small character set, starting with exactly one ``/``, no
backslash, no ``@``, no ``//`` anywhere, no dot segments, no fragment, and a query of unreserved
characters and percent escapes that decode to printable ASCII. Everything else (schemes,
protocol-relative URLs, encoded slashes, CR/LF, full-width solidus, …) becomes ``None``, which
the caller turns into its default page. The value is stored server-side with the pending
authorization and never read from the callback.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["MAX_RETURN_TO_LENGTH", "safe_return_to"]

MAX_RETURN_TO_LENGTH = 512

# RFC 3986 unreserved characters plus a few sub-delimiters that are harmless in a path.
_PATH = re.compile(r"/[A-Za-z0-9\-._~/!$()*+,;=:]*")
_QUERY = re.compile(r"[A-Za-z0-9\-._~!$()*+,;=:/?&%]*")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


def safe_return_to(value: object) -> str | None:
    """Return ``value`` when it is a safe same-origin relative path, else ``None``."""
    if not isinstance(value, str) or not value or len(value) > MAX_RETURN_TO_LENGTH:
        return None
    path, sep, query = value.partition("?")
    if _PATH.fullmatch(path) is None or "//" in path:
        return None
    segments = path.split("/")
    if any(segment in (".", "..") for segment in segments):
        return None
    if sep:
        if _QUERY.fullmatch(query) is None:
            return None
        decoded = unquote(query, encoding="ascii", errors="replace")
        # A query that decodes to control characters, backslashes or non-ASCII is refused:
        # nothing legitimate needs them, and they feed header-splitting and parser confusion.
        if _PRINTABLE.fullmatch(decoded) is None or "\\" in decoded:
            return None
    return value
