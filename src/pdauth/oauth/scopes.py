"""Scopes: parsing and comparing RFC 6749 §3.3 scope strings, PagerDuty's scope shapes.

A scope string is space-delimited scope-tokens, each ``1*( %x21 / %x23-5B / %x5D-7E )``.
PagerDuty has Classic scopes (``read``, ``write``), Scoped-app scopes
(``<resource>[:<sub>].read|write``), the ``openid`` scope it attaches to every user token,
and ``as_account-<region>.<subdomain>``, which names the account of an app token
(client credentials). PagerDuty silently grants only ``openid`` for a scope it does not
know, so the granted set is always compared with the required one (:func:`missing_scopes`).
PagerDuty documents no implication between scopes (``incidents.write`` explicitly does not
include ``incidents.read``), so the comparison is a plain set difference.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from pdauth.oauth._syntax import SUBDOMAIN

__all__ = [
    "CLASSIC_SCOPES",
    "OPENID_SCOPE",
    "app_token_scope",
    "format_scopes",
    "is_app_token_scope",
    "is_scoped_scope",
    "missing_scopes",
    "parse_scopes",
    "scoped_scope",
    "split_app_token_scope",
]

CLASSIC_SCOPES = frozenset({"read", "write"})
OPENID_SCOPE = "openid"
AS_ACCOUNT_PREFIX = "as_account-"

_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_SCOPED = re.compile(r"[a-z_]+(:[a-z_]+)?\.(read|write)")
_RESOURCE = re.compile(r"[a-z_]+(:[a-z_]+)?")
_REGIONS = ("us", "eu")
_APP_SCOPE = re.compile(r"as_account-(us|eu)\.([a-z0-9-]{1,63})")


def parse_scopes(value: str | Iterable[str]) -> frozenset[str]:
    """The set of scope-tokens in a space-separated string or an iterable of tokens.

    Runs of spaces are tolerated; any other character outside RFC 6749's scope-token
    alphabet (tabs, newlines, controls, ``"``, ``\\``, non-ASCII) raises ValueError. An
    iterable must hold one token per item.
    """
    if isinstance(value, str):
        tokens: Iterable[object] = (token for token in value.split(" ") if token)
    elif isinstance(value, Iterable):
        tokens = value
    else:
        raise ValueError("scopes must be a string or an iterable of strings")
    result: set[str] = set()
    for token in tokens:
        if not isinstance(token, str) or not _SCOPE_TOKEN.fullmatch(token):
            raise ValueError("a scope must be a non-empty RFC 6749 scope-token (no spaces)")
        result.add(token)
    return frozenset(result)


def format_scopes(scopes: str | Iterable[str]) -> str:
    """The scope parameter value: the distinct tokens, sorted, joined by single spaces."""
    return " ".join(sorted(parse_scopes(scopes)))


def is_scoped_scope(scope: str) -> bool:
    """True for a Scoped-app scope such as ``incidents.read`` or ``users:sessions.write``."""
    return isinstance(scope, str) and _SCOPED.fullmatch(scope) is not None


def scoped_scope(resource: str, access: Literal["read", "write"]) -> str:
    """``<resource>.<access>``, e.g. ``scoped_scope("incidents", "read") == "incidents.read"``."""
    if not isinstance(resource, str) or not _RESOURCE.fullmatch(resource):
        raise ValueError("resource must match [a-z_]+(:[a-z_]+)?")
    if access not in ("read", "write"):
        raise ValueError("access must be 'read' or 'write'")
    return f"{resource}.{access}"


def app_token_scope(region: Literal["us", "eu"], subdomain: str) -> str:
    """``as_account-<region>.<subdomain>``: the account an app token acts on."""
    if region not in _REGIONS:
        raise ValueError("region must be 'us' or 'eu'")
    if not isinstance(subdomain, str) or not SUBDOMAIN.fullmatch(subdomain):
        raise ValueError("subdomain must be 1-63 characters of [a-z0-9-]")
    return f"{AS_ACCOUNT_PREFIX}{region}.{subdomain}"


def is_app_token_scope(scope: str) -> bool:
    """True for any scope starting ``as_account-`` (well-formed or not)."""
    return isinstance(scope, str) and scope.startswith(AS_ACCOUNT_PREFIX)


def split_app_token_scope(scope: str) -> tuple[Literal["us", "eu"], str]:
    """``(region, subdomain)`` from ``as_account-<region>.<subdomain>``; ValueError if malformed."""
    match = _APP_SCOPE.fullmatch(scope) if isinstance(scope, str) else None
    if match is None:
        raise ValueError("an app token scope must be as_account-<us|eu>.<subdomain>")
    region: Literal["us", "eu"] = "us" if match[1] == "us" else "eu"
    return region, match[2]


def missing_scopes(required: str | Iterable[str], granted: str | Iterable[str]) -> frozenset[str]:
    """The required scopes that were not granted.

    ``openid`` and ``as_account-*`` are left out of the comparison: PagerDuty attaches the
    first on its own, and the second names an account rather than a permission.
    """
    wanted = {
        scope
        for scope in parse_scopes(required)
        if scope != OPENID_SCOPE and not is_app_token_scope(scope)
    }
    return frozenset(wanted - parse_scopes(granted))
