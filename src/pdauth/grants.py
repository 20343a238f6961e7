"""Grants: what the connect flow learns of a token response, the row it stores, and revocation.

:func:`learn_account` finds the PagerDuty account, region and user behind a token response (the
verified id_token, else ``GET /users/me`` on each regional API); :func:`new_connection` builds the
row to store with the tokens sealed (:mod:`pdauth.sealing`); :func:`revoke_remote` revokes a
stored grant at PagerDuty (RFC 7009) or, when that fails, returns the ``revocation.pending``
outbox event that holds the token sealed for the keeper; :func:`revoke_quietly` revokes tokens
that will not be stored. Used by :class:`pdauth.connections.Connector`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from pdauth.config import Settings
from pdauth.errors import IdTokenError, OAuthError, TransportError
from pdauth.identity import IdentityClient, PagerDutyUser
from pdauth.oauth import TokenSet, format_scopes
from pdauth.sealing import GrantKey, Sealer
from pdauth.store import ConnectionRow, NewConnection, NewEvent
from pdauth.token_policy import REFRESH_LIFETIME

__all__ = [
    "Account",
    "error_code_of",
    "learn_account",
    "new_connection",
    "revoke_quietly",
    "revoke_remote",
]

_PD_WEB_HOST = re.compile(r"([a-z0-9-]{1,63})\.(?:(eu)\.)?pagerduty\.com")


@dataclass(frozen=True)
class Account:
    """The PagerDuty account behind a grant (never from request input)."""

    account_id: str
    subdomain: str | None
    user_id: str | None
    region: Literal["us", "eu"]
    api_base_url: str
    delegation_id: str | None


def error_code_of(exc: BaseException) -> str:
    """A short, secret-free code for an audit event: the OAuth error or the class name."""
    if isinstance(exc, OAuthError):
        return exc.error[:64]
    return type(exc).__name__[:64]


async def learn_account(
    identity: IdentityClient, api_base_urls: Mapping[str, str], tokens: TokenSet
) -> Account:
    """Who the tokens belong to: from the verified id_token, else from ``GET /users/me``."""
    if tokens.id_token is not None:
        ident = await identity.verify_id_token(tokens.id_token, access_token=tokens.access_token)
        return Account(
            ident.account_id,
            ident.subdomain,
            ident.user_id,
            ident.region,
            ident.api_base_url,
            ident.delegation_id,
        )
    # No id_token: ask each regional API who this is; the one that answers is the region.
    for region in ("us", "eu"):
        base = api_base_urls[region]
        user = await identity.fetch_user(base, tokens.access_token)
        if user is None:
            continue
        subdomain = _subdomain_from(user)
        if subdomain is None:
            break
        return Account(
            # PagerDuty's /users/me does not name the account; the subdomain does.
            account_id=f"subdomain:{subdomain}",
            subdomain=subdomain,
            user_id=user.id,
            region="eu" if region == "eu" else "us",
            api_base_url=base,
            delegation_id=None,
        )
    raise IdTokenError("no id_token, and GET /users/me did not name the account")


def new_connection(
    sealer: Sealer,
    app_kind: str,
    owner: str,
    kind: str,
    account: Account,
    tokens: TokenSet,
    now: float,
    user: PagerDutyUser | None = None,
) -> NewConnection:
    """The row to store for a new grant, its tokens sealed to the grant's natural key."""
    grant = GrantKey(owner, kind, account.account_id, account.user_id)
    refresh_ct = None
    refresh_expires = None
    if kind == "user" and tokens.refresh_token is not None:
        refresh_ct = sealer.seal_token(grant, "refresh_token", tokens.refresh_token)
        refresh_expires = now + REFRESH_LIFETIME[app_kind]
    return NewConnection(
        owner=owner,
        kind=kind,
        region=account.region,
        account_id=account.account_id,
        scopes=format_scopes(tokens.scopes) if tokens.scopes else "",
        access_token_ct=sealer.seal_token(grant, "access_token", tokens.access_token),
        refresh_token_ct=refresh_ct,
        key_id=sealer.primary_key_id,
        access_expires_at=tokens.expires_at,
        refresh_expires_at=refresh_expires,
        subdomain=account.subdomain,
        pd_user_id=account.user_id,
        pd_user_name=user.name if user is not None else None,
        pd_user_email=user.email if user is not None else None,
        delegation_id=account.delegation_id,
    )


async def revoke_remote(
    identity: IdentityClient, sealer: Sealer, settings: Settings, row: ConnectionRow
) -> tuple[bool, NewEvent | None]:
    """Revoke at PagerDuty if an endpoint is configured; else queue it (outbox event)."""
    if settings.revocation_endpoint is None:
        return False, None
    hint: Literal["refresh_token", "access_token"]
    if row.refresh_token_ct is not None:
        hint, ct = "refresh_token", row.refresh_token_ct
    elif row.access_token_ct is not None:
        hint, ct = "access_token", row.access_token_ct
    else:
        return False, None
    token = sealer.open_token(row, hint, ct)  # the hint names the column
    try:
        await identity.revoke(token, hint)
    except (OAuthError, TransportError) as exc:
        queued = NewEvent(
            type="revocation.pending",
            data={
                "token_type_hint": hint,
                "token_ct": sealer.seal_revocation(row.id, hint, token),
                "first_error": error_code_of(exc),
            },
        )
        return False, queued
    return True, None


async def revoke_quietly(identity: IdentityClient, settings: Settings, tokens: TokenSet) -> None:
    """Best effort: revoke tokens we will not store (docs/SECURITY.md item 29)."""
    if settings.revocation_endpoint is None:
        return
    hint: Literal["refresh_token", "access_token"] = (
        "refresh_token" if tokens.refresh_token is not None else "access_token"
    )
    token = tokens.refresh_token if tokens.refresh_token is not None else tokens.access_token
    with contextlib.suppress(OAuthError, TransportError):
        await identity.revoke(token, hint)


def _subdomain_from(user: PagerDutyUser) -> str | None:
    if user.html_url is None:
        return None
    host = urlsplit(user.html_url).hostname or ""
    match = _PD_WEB_HOST.fullmatch(host)
    return match.group(1) if match else None
