"""The rules behind :mod:`pdauth.config` that need no settings object: variable names, URLs, scopes.

Pure functions (no environment reads, no I/O): the ``PDAUTH_`` name of a setting, the closest
setting to a mistyped variable, endpoint URL checks (absolute ``https``; ``http`` only on a
loopback host — RFC 6749 §3.1.2.1 and §10.9, RFC 9700 §2.6, docs/SECURITY.md item 40), the
masking of credentials inside database and Redis URLs, PagerDuty's scope grammar, and the
translation of a pydantic ``ValidationError`` into lines that name variables and never values.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from pydantic import ValidationError

from pdauth.oauth.scopes import CLASSIC_SCOPES, OPENID_SCOPE, is_scoped_scope

__all__ = [
    "ENV_PREFIX",
    "check_scope",
    "check_url",
    "closest_name",
    "describe",
    "env_name",
    "mask_credentials",
    "unknown_names",
]

ENV_PREFIX = "PDAUTH_"

# PDAUTH_ variables the project's own tooling reads that are not settings (the test suite's
# service URLs, the PostgreSQL binaries for evidence runs, the OpenAPI schema's location).
_TOOLING_VARIABLES = frozenset({"PDAUTH_PG_BINDIR", "PDAUTH_OPENAPI_SCHEMA"})
_TOOLING_PREFIXES = ("PDAUTH_TEST_",)
# A name shown in a log line or error: anything else is replaced by its ascii() form, so a
# crafted variable name cannot forge log lines.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_]{1,128}")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3 scope-token
_URL_CREDENTIALS = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>.*)@")


def env_name(field_name: str) -> str:
    """``"client_id"`` → ``"PDAUTH_CLIENT_ID"``."""
    return ENV_PREFIX + field_name.upper()


def closest_name(name: str, known: Iterable[str]) -> str | None:
    """The known variable ``name`` most likely meant (``PDAUTH_CLIENTID`` → ``PDAUTH_CLIENT_ID``).

    Compared without the shared prefix, which would make every pair look alike.
    """
    by_suffix = {k.removeprefix(ENV_PREFIX): k for k in known}
    suffix = name.upper().removeprefix(ENV_PREFIX)
    match = difflib.get_close_matches(suffix, list(by_suffix), n=1, cutoff=0.6)
    return by_suffix[match[0]] if match else None


def unknown_names(env: Mapping[str, str], known: Iterable[str]) -> list[tuple[str, str | None]]:
    """``(variable, closest setting or None)`` for each ``PDAUTH_*`` variable that is no setting.

    Names match without regard to case (as :meth:`Settings.from_env` reads them); a name that
    is not plain letters, digits and underscores is shown in its ``ascii()`` form.
    """
    known_set = frozenset(known)
    found: list[tuple[str, str | None]] = []
    for key in sorted(env):
        upper = key.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known_set:
            continue
        if upper in _TOOLING_VARIABLES or upper.startswith(_TOOLING_PREFIXES):
            continue
        shown = key if _PLAIN_NAME.fullmatch(key) else ascii(key)
        found.append((shown, closest_name(upper, known_set)))
    return found


def check_scope(scope: str) -> None:
    """Raise ValueError unless ``scope`` is a scope PagerDuty's grammar allows in PDAUTH_SCOPES.

    ``read``, ``write``, ``openid`` or ``<resource>[:<sub>].read|write``. Anything else (a
    typo such as ``read;drop`` or ``incidents.raed``) would be granted as nothing but
    ``openid`` at connect time, so it is refused at start-up instead.
    """
    if _SCOPE_TOKEN.fullmatch(scope) is None:
        raise ValueError(
            "PDAUTH_SCOPES holds a malformed scope (RFC 6749 §3.3 allows printable "
            "ASCII except space, quote and backslash)"
        )
    if scope not in CLASSIC_SCOPES and scope != OPENID_SCOPE and not is_scoped_scope(scope):
        raise ValueError(
            "PDAUTH_SCOPES holds a scope outside PagerDuty's grammar (read, write, openid, "
            "or <resource>[:<sub>].read / .write such as incidents.read)"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(value: str, name: str, *, allow_query: bool) -> str:
    """An absolute https URL (http only on loopback), with no credentials or fragment.

    ``name`` is the variable named in the ValueError.
    """
    # urlsplit silently deletes tabs and newlines; refuse them instead of guessing.
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in value):
        raise ValueError(f"{name} must not contain spaces or control characters")
    try:
        parts = urlsplit(value)  # raises ValueError on a malformed IPv6 literal
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ValueError(f"{name} has a malformed host or port") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError(f"{name} must be an absolute https:// URL")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ValueError(
            f"{name} must use https (http is allowed only on a loopback host: "
            "127.0.0.0/8, ::1 or localhost)"
        )
    if "@" in parts.netloc:
        raise ValueError(f"{name} must not contain a user name or password")
    if parts.fragment or value.endswith("#"):
        raise ValueError(f"{name} must not contain a fragment (#…)")
    if not allow_query and (parts.query or "?" in value):
        raise ValueError(f"{name} must not contain a query (?…)")
    return value


def mask_credentials(url: str) -> str:
    """``scheme://user:***@rest`` for a URL with a password; any other URL as it is."""
    match = _URL_CREDENTIALS.match(url)
    if match is None or ":" not in match["userinfo"]:
        return url
    user = match["userinfo"].split(":", 1)[0]
    return f"{match['scheme']}{user}:***@{url[match.end() :]}"


def describe(exc: ValidationError) -> list[str]:
    """One line per problem, by variable name; pydantic's input values are never included."""
    problems: list[str] = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = error["loc"]
        field = str(loc[0]) if loc else None
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "missing" and field is not None:
            problem = f"{env_name(field)} is required"
        elif error["type"] == "extra_forbidden" and field is not None:
            problem = f"{field!r} is not a pdauth setting"
        elif message.startswith(ENV_PREFIX) or field is None:
            problem = message
        else:
            problem = f"{env_name(field)} is invalid: {message}"
        problems.append(problem)
    return problems
