"""Where a browser may be sent after connecting: the one rule for ``return_to``.

A ``return_to`` value comes from a form field, a connect-session request or a library caller, so
it is attacker input. RFC 9700 §4.11.1 (clients MUST NOT expose open redirectors) and RFC 6749
§10.15 ask for an allowlist, not a blocklist (docs/SECURITY.md item 18): a value is kept only if
it is a plain absolute *path* on this origin. The path is printable ASCII from a small character
set with no percent escapes, starts with exactly one ``/`` and has no ``//`` and no dot segment;
the optional query uses unreserved characters, a few sub-delimiters and percent escapes, and
every round of percent-decoding it (at most two; a value still encoded after that is refused)
must stay printable ASCII without backslash, ``@`` or ``#``. There is never a fragment, scheme
or host. Everything else (protocol-relative URLs, encoded slashes, CR/LF, full-width solidi, …)
becomes ``None``, which the caller turns into its default page. The value is stored server-side
with the pending authorization and never read from the callback.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["MAX_RETURN_TO_LENGTH", "safe_return_to"]

MAX_RETURN_TO_LENGTH = 512

# RFC 3986 unreserved characters plus sub-delimiters that are harmless in a path. No ``%``: an
# encoded path segment is where ``/%2F%2Fevil.com`` and ``/%5Cevil.com`` hide, and nothing
# legitimate needs one.
_PATH = re.compile(r"/[A-Za-z0-9\-._~/!$()*+,;=:]*")
_QUERY = re.compile(r"[A-Za-z0-9\-._~!$()*+,;=:/?&%]*")
# What a query may decode to: printable ASCII (a decoded space is harmless; the raw value has
# none) without the characters that change who parses the URL how.
_DECODED_QUERY = re.compile(r"[\x20-\x7e]*")
_DECODED_FORBIDDEN = frozenset("\\@#")
_DECODE_ROUNDS = 3


def safe_return_to(value: object) -> str | None:
    """``value`` if it is a safe same-origin relative path, else ``None`` (the default page)."""
    if not isinstance(value, str) or not value or len(value) > MAX_RETURN_TO_LENGTH:
        return None
    path, sep, query = value.partition("?")
    if _PATH.fullmatch(path) is None or "//" in path:
        return None
    if any(segment in (".", "..") for segment in path.split("/")):
        return None
    if sep and not _plain_query(query):
        return None
    return value


def _plain_query(query: str) -> bool:
    if _QUERY.fullmatch(query) is None:
        return False
    candidate = query
    for _ in range(_DECODE_ROUNDS):
        # A query that decodes to control characters, backslashes, ``@``, ``#`` or non-ASCII is
        # refused: nothing legitimate needs them, and they feed header splitting and parser
        # confusion in whatever reads the URL next.
        if _DECODED_QUERY.fullmatch(candidate) is None:
            return False
        if not _DECODED_FORBIDDEN.isdisjoint(candidate):
            return False
        decoded = unquote(candidate, encoding="utf-8", errors="replace")
        if decoded == candidate:
            return True
        candidate = decoded
    return False  # still encoded after repeated rounds: nothing legitimate needs that
