"""Which PagerDuty account a token belongs to: id_token claims and app-token scopes.

Pure claim checks on an id_token whose signature was already verified elsewhere (with
joserfc, in the I/O layer; never here): OpenID Connect Core §3.1.3.7 items 2-3, 9-10
(``iss``, ``aud``, ``azp``, ``exp``, ``iat``) plus PagerDuty's own claims. PagerDuty has one
identity host for every region; the region, and therefore the only REST host the access
token may be sent to, comes from the ``aud`` entry naming a regional API base URL. For app
tokens (client credentials, no id_token) the account comes from the granted
``as_account-<region>.<subdomain>`` scope. Failures name the claim, never its value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from pdauth.errors import IdTokenError, TokenResponseError
from pdauth.oauth._syntax import SUBDOMAIN, is_http_url, is_printable_token
from pdauth.oauth.scopes import is_app_token_scope, parse_scopes, split_app_token_scope

__all__ = [
    "AccountIdentity",
    "AppAccount",
    "Region",
    "identity_from_app_scope",
    "identity_from_claims",
]

Region = Literal["us", "eu"]

_PD_ID = re.compile(r"[A-Za-z0-9]{1,64}")
# OpenID Connect Core §2: sub "MUST NOT exceed 255 ASCII characters".
_SUB_MAX_LEN = 255
_DELEGATION_ID_MAX_LEN = 256


@dataclass(frozen=True)
class AccountIdentity:
    """The PagerDuty account, user and region an id_token speaks for."""

    account_id: str
    subdomain: str
    user_id: str
    region: Region
    api_base_url: str
    delegation_id: str | None
    subject: str


@dataclass(frozen=True)
class AppAccount:
    """The account an app token (client credentials) acts on; it has no user."""

    region: Region
    subdomain: str
    api_base_url: str


def _strip_slash(url: str) -> str:
    return url[:-1] if url.endswith("/") else url


def _api_bases(api_base_urls: Mapping[str, str]) -> dict[str, Region]:
    """Normalised API base URL -> region; ValueError for a bad configuration."""
    bases: dict[str, Region] = {}
    for region, url in api_base_urls.items():
        if region not in ("us", "eu"):
            raise ValueError("api_base_urls keys must be 'us' or 'eu'")
        if not is_http_url(url):
            raise ValueError("api_base_urls values must be absolute http(s) URLs")
        normalised = _strip_slash(url)
        if normalised in bases:
            raise ValueError("api_base_urls must name a different URL for each region")
        bases[normalised] = "us" if region == "us" else "eu"
    if not bases:
        raise ValueError("api_base_urls must name at least one region")
    return bases


def _numeric_claim(claims: Mapping[str, object], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise IdTokenError(f"the {name} claim is missing or not a number")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        number = math.inf
    if not math.isfinite(number):
        raise IdTokenError(f"the {name} claim is not a finite number")
    return number


def _string_claim(claims: Mapping[str, object], name: str, pattern: re.Pattern[str]) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise IdTokenError(f"the {name} claim is missing or malformed")
    return value


def identity_from_claims(
    claims: Mapping[str, object],
    *,
    client_id: str,
    issuer: str,
    api_base_urls: Mapping[str, str],
    now: float,
    leeway: float = 60,
) -> AccountIdentity:
    """Check a verified id_token's claims and say whose account and which region it is.

    ``issuer`` is compared exactly (PagerDuty's documented and observed issuers differ, so
    take it from discovery, not from a constant). ``api_base_urls`` maps ``"us"``/``"eu"``
    to the REST base URLs; exactly one ``aud`` entry must equal one of them (ignoring one
    trailing slash). Raises IdTokenError for a bad claim, ValueError for bad arguments.
    """
    if not isinstance(client_id, str) or not client_id:
        raise ValueError("client_id must be a non-empty string")
    if not isinstance(issuer, str) or not issuer:
        raise ValueError("issuer must be a non-empty string")
    if not math.isfinite(now) or not math.isfinite(leeway) or leeway < 0:
        raise ValueError("now and leeway must be finite, leeway non-negative")
    bases = _api_bases(api_base_urls)
    if not isinstance(claims, Mapping):
        raise IdTokenError("the id_token payload is not a JSON object")

    if claims.get("iss") != issuer:
        raise IdTokenError("the iss claim does not name the expected issuer")

    aud = claims.get("aud")
    audiences: list[str]
    if isinstance(aud, str):
        audiences = [aud]
    elif isinstance(aud, list | tuple):
        audiences = [item for item in aud if isinstance(item, str)]
    else:
        audiences = []
    if not audiences or (isinstance(aud, list | tuple) and len(audiences) != len(aud)):
        raise IdTokenError("the aud claim is missing or malformed")
    if client_id not in audiences:
        raise IdTokenError("the aud claim does not contain our client id")
    regional = [_strip_slash(item) for item in audiences if _strip_slash(item) in bases]
    if len(regional) != 1:
        raise IdTokenError("the aud claim must name exactly one known PagerDuty API base URL")
    api_base_url = regional[0]

    if "azp" in claims and claims.get("azp") != client_id:
        raise IdTokenError("the azp claim is not our client id")
    if _numeric_claim(claims, "exp") <= now - leeway:
        raise IdTokenError("the id_token has expired (exp claim)")
    if _numeric_claim(claims, "iat") > now + leeway:
        raise IdTokenError("the iat claim is in the future")
    if "nbf" in claims and _numeric_claim(claims, "nbf") > now + leeway:
        raise IdTokenError("the id_token is not valid yet (nbf claim)")

    subject = claims.get("sub")
    if not isinstance(subject, str) or not is_printable_token(subject, _SUB_MAX_LEN):
        raise IdTokenError("the sub claim is missing or malformed")
    delegation_id = claims.get("delegation_id")
    if delegation_id is not None and (
        not isinstance(delegation_id, str)
        or not is_printable_token(delegation_id, _DELEGATION_ID_MAX_LEN)
    ):
        raise IdTokenError("the delegation_id claim is malformed")

    return AccountIdentity(
        account_id=_string_claim(claims, "account_id", _PD_ID),
        subdomain=_string_claim(claims, "subdomain", SUBDOMAIN),
        user_id=_string_claim(claims, "user_id", _PD_ID),
        region=bases[api_base_url],
        api_base_url=api_base_url,
        delegation_id=delegation_id,
        subject=subject,
    )


def identity_from_app_scope(
    scopes: str | Iterable[str], api_base_urls: Mapping[str, str]
) -> AppAccount:
    """The account named by the one ``as_account-<region>.<subdomain>`` granted scope.

    Raises TokenResponseError when the granted scopes do not name exactly one account, or
    name a region with no configured API base URL; ValueError for bad ``api_base_urls``.
    """
    by_region = {region: url for url, region in _api_bases(api_base_urls).items()}
    try:
        granted = parse_scopes(scopes)
    except ValueError:
        raise TokenResponseError("invalid_response", "the granted scopes are malformed") from None
    accounts = [scope for scope in granted if is_app_token_scope(scope)]
    if len(accounts) != 1:
        raise TokenResponseError(
            "invalid_response", "the granted scopes must name exactly one as_account scope"
        )
    try:
        region, subdomain = split_app_token_scope(accounts[0])
    except ValueError:
        raise TokenResponseError("invalid_response", "the as_account scope is malformed") from None
    api_base_url = by_region.get(region)
    if api_base_url is None:
        raise TokenResponseError(
            "invalid_response", "no API base URL is configured for the granted region"
        )
    return AppAccount(region=region, subdomain=subdomain, api_base_url=api_base_url)
