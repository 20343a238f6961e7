"""The authorization response: the redirect back from PagerDuty (RFC 6749 §4.1.2, §4.1.2.1).

:func:`parse_callback` turns the callback's query into either an
:class:`AuthorizationGranted` (a code to exchange) or an :class:`AuthorizationDenied`
(``error=…``). Everything in that query comes from the browser, so it is treated as hostile:
size limits first, every protocol parameter at most once (§3.1), a required and well-formed
``state`` (checked before anything else is believed), a bounded visible-ASCII ``code``, and
an ``error`` reduced to the RFC's fixed vocabulary. Unknown parameters are ignored (§4.1.2).
``iss`` (RFC 9207) is compared exactly when the caller names the expected issuer.
Every failure is a :class:`~pdauth.errors.CallbackError` whose message names the rule that
was broken and never repeats a value from the query.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias
from urllib.parse import parse_qsl, quote_plus

from pdauth.errors import AuthorizationDeniedError, CallbackError
from pdauth.oauth._syntax import (
    ERROR_CODE,
    SUBDOMAIN,
    is_printable_token,
    sanitize_description,
)
from pdauth.oauth.state import validate_state

__all__ = [
    "AuthorizationDenied",
    "AuthorizationGranted",
    "CallbackQuery",
    "parse_callback",
]

CallbackQuery: TypeAlias = str | Sequence[tuple[str, str]] | Mapping[str, str | Sequence[str]]

QUERY_MAX_BYTES = 4096
CODE_MAX_LEN = 1024
ISS_MAX_LEN = 2048

_KNOWN = frozenset({"code", "state", "error", "error_description", "error_uri", "subdomain", "iss"})
# RFC 6749 §4.1.2.1. Anything else becomes "unknown_error": a server-chosen string is never
# carried further (it would reach pages, logs and metric labels).
_RFC_ERRORS = frozenset(
    {
        "access_denied",
        "invalid_request",
        "unauthorized_client",
        "unsupported_response_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
    }
)
UNKNOWN_ERROR = "unknown_error"


@dataclass(frozen=True)
class AuthorizationGranted:
    """The user approved: a code to exchange at once (PagerDuty codes live 30 seconds)."""

    code: str = field(repr=False)
    state: str = field(repr=False)
    subdomain: str | None = None
    iss: str | None = None


@dataclass(frozen=True)
class AuthorizationDenied:
    """The authorization server answered ``error=…`` (the user denied, or it failed).

    ``error`` is one of RFC 6749 §4.1.2.1's codes or ``"unknown_error"``; ``description``
    is the sanitised ``error_description`` (visible ASCII, at most 500 characters) or None.
    """

    error: str
    description: str | None
    state: str = field(repr=False)
    iss: str | None = None

    def to_error(self) -> AuthorizationDeniedError:
        """The denial as the exception the flow raises."""
        return AuthorizationDeniedError(self.error, self.description)


def _fail(message: str) -> CallbackError:
    return CallbackError("invalid_request", message)


def _too_long() -> CallbackError:
    return _fail(f"the callback query is longer than {QUERY_MAX_BYTES} bytes")


def _encoded_len(value: str) -> int:
    return len(quote_plus(value, safe="", encoding="utf-8", errors="surrogatepass"))


def _pairs_from_text(query: str) -> list[tuple[str, str]]:
    # The cheap character count first: a huge string is refused before it is encoded.
    if (
        len(query) > QUERY_MAX_BYTES
        or len(query.encode("utf-8", "surrogatepass")) > QUERY_MAX_BYTES
    ):
        raise _too_long()
    try:
        return parse_qsl(query.removeprefix("?"), keep_blank_values=True, errors="strict")
    except ValueError:  # includes UnicodeDecodeError from a bad %-escape
        raise _fail("the callback query is not valid UTF-8 form encoding") from None


def _items_from_mapping(query: Mapping[object, object]) -> Iterator[object]:
    for name, value in query.items():
        if isinstance(value, str):
            yield (name, value)
        elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
            for item in value:
                yield (name, item)
        else:
            raise _fail("callback parameter values must be strings")


def _checked_pairs(items: Iterable[object]) -> list[tuple[str, str]]:
    """Pairs of strings whose form encoding stays within the size limit."""
    pairs: list[tuple[str, str]] = []
    size = -1  # n pairs need n - 1 separators
    for item in items:
        if not (
            isinstance(item, tuple | list)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], str)
        ):
            raise _fail("callback parameters must be (name, value) pairs of strings")
        name, value = item
        # Encoding never shortens text, so a pair already too long raw is refused unencoded.
        if len(name) + len(value) > QUERY_MAX_BYTES:
            raise _too_long()
        size += 2 + _encoded_len(name) + _encoded_len(value)
        if size > QUERY_MAX_BYTES:
            raise _too_long()
        pairs.append((name, value))
    return pairs


def _pairs(query: object) -> list[tuple[str, str]]:
    if isinstance(query, str):
        return _pairs_from_text(query)
    if isinstance(query, Mapping):
        return _checked_pairs(_items_from_mapping(query))
    if isinstance(query, Sequence) and not isinstance(query, bytes | bytearray):
        return _checked_pairs(query)
    raise _fail("the callback query must be a string, a sequence of pairs or a mapping")


def _checked_iss(iss: str | None, issuer: str | None, require_iss: bool) -> str | None:
    if iss is None:
        if require_iss:
            raise _fail("the callback has no iss parameter")
        return None
    if not is_printable_token(iss, ISS_MAX_LEN):
        raise _fail("the iss parameter is malformed")
    # RFC 9207 §2.4: simple string comparison, no normalisation.
    if issuer is not None and iss != issuer:
        raise _fail("the iss parameter does not name the expected issuer")
    return iss


def parse_callback(
    query: CallbackQuery,
    *,
    issuer: str | None = None,
    require_iss: bool = False,
) -> AuthorizationGranted | AuthorizationDenied:
    """Parse and validate the query of the redirect back to ``redirect_uri``.

    ``query`` is the raw query string (a leading ``?`` is allowed), a sequence of
    ``(name, value)`` pairs (Starlette's ``request.query_params.multi_items()``), or a
    mapping of names to a value or a list of values. A plain mapping cannot show repeated
    parameters, so prefer the pairs. With ``issuer``, an ``iss`` parameter must equal it
    exactly; with ``require_iss``, ``iss`` must be present (RFC 9207 §2.4).

    Raises CallbackError (and nothing else) for anything malformed. A well-formed denial
    is returned, not raised: the caller consumes the pending authorization first and then
    raises ``denied.to_error()``.
    """
    seen: dict[str, str] = {}
    for name, value in _pairs(query):
        if name in _KNOWN:
            if name in seen:
                raise _fail(f"the {name} parameter appears more than once")
            seen[name] = value

    state = seen.get("state")
    if state is None:
        raise _fail("the callback has no state parameter")
    validate_state(state)
    iss = _checked_iss(seen.get("iss"), issuer, require_iss)

    code = seen.get("code")
    error = seen.get("error")
    if code is not None and error is not None:
        raise _fail("the callback carries both code and error")
    if error is not None:
        if not ERROR_CODE.fullmatch(error):
            raise _fail("the error parameter is not an RFC 6749 error code")
        return AuthorizationDenied(
            error=error if error in _RFC_ERRORS else UNKNOWN_ERROR,
            description=sanitize_description(seen.get("error_description")),
            state=state,
            iss=iss,
        )
    if code is None:
        raise _fail("the callback has neither code nor error")
    if not is_printable_token(code, CODE_MAX_LEN):
        raise _fail(f"code must be 1-{CODE_MAX_LEN} visible ASCII characters")
    subdomain = seen.get("subdomain")
    if subdomain is not None and not SUBDOMAIN.fullmatch(subdomain):
        raise _fail("the subdomain parameter must be 1-63 characters of [a-z0-9-]")
    return AuthorizationGranted(code=code, state=state, subdomain=subdomain, iss=iss)
