"""The end of the connect flow: from a consumed pending authorization to a stored connection.

:class:`CompletionFlow` is what ``Connector.complete`` runs once the pending authorization is
out of the store: expiry, browser binding and owner are checked (constant time), the code is
exchanged at once (PagerDuty codes live 30 s), the granted scopes are checked, the account,
region and user are learned (:func:`pdauth.grants.learn_account`), and the connection is
upserted with its event in one transaction. Any failure after the exchange stores nothing and
revokes the tokens just issued (best effort; docs/SECURITY.md item 29).

A connect link is a bearer credential: whoever opens it and approves at PagerDuty connects
*their* account to the link's owner. So a flow may carry expectations — the PagerDuty account
(subdomain or account id) and/or user (id or email) it was meant for — and an approval by
anyone else is refused with :class:`UnexpectedGrantError` and one ``connect.rejected`` event
(docs/SECURITY.md item 47). A re-consent (``begin(connection_id=…)``, to grant more scopes)
expects the connection's own account and user, and updates that very connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from pdauth.config import Settings
from pdauth.connection_types import Connection
from pdauth.errors import (
    BindingMismatchError,
    CallbackError,
    ConnectionNotFoundError,
    FlowExpiredError,
    InsufficientScopeError,
    OAuthError,
    PdauthError,
    StoreError,
    TransportError,
    UnexpectedGrantError,
)
from pdauth.grants import Account, error_code_of, learn_account, new_connection, revoke_quietly
from pdauth.identity import IdentityClient, PagerDutyUser
from pdauth.oauth import (
    AuthorizationDenied,
    AuthorizationGranted,
    TokenSet,
    constant_time_equals,
    missing_scopes,
    parse_scopes,
)
from pdauth.owners import validate_owner
from pdauth.sealing import Sealer
from pdauth.store import AsyncStore, ConnectionRow, NewEvent, PendingRow

__all__ = [
    "REJECTED_EVENT",
    "CompletionFlow",
    "UnexpectedGrantError",
    "binding_digest",
    "check_expectation",
    "grant_mismatch",
]

log = logging.getLogger("pdauth.connections")

#: The event written when an approval comes from another account or user than expected.
REJECTED_EVENT: Final = "connect.rejected"
_LIST_PAGE = 1000

AuditFailure = Callable[[str, str, str], Awaitable[None]]


def binding_digest(binding: str) -> str:
    """What the store keeps of a browser binding: hex SHA-256 (the binding has 256 bits)."""
    return hashlib.sha256(binding.encode("utf-8", "surrogatepass")).hexdigest()


def check_expectation(name: str, value: str | None) -> str | None:
    """``value`` if it is a usable expectation (the owner id's text rule), None for none."""
    if value is None:
        return None
    if validate_owner(value) is None:
        raise ValueError(f"{name} must be 1-255 printable characters")
    return value


def grant_mismatch(pending: PendingRow, account: Account, user: PagerDutyUser | None) -> str | None:
    """Why the grant is not the one the flow expected (a reason code), or None."""
    expected = pending.expected_account
    if expected is not None:
        subdomain = (account.subdomain or "").casefold()
        if expected != account.account_id and expected.casefold() != subdomain:
            return "unexpected_account"
    expected = pending.expected_user
    if expected is not None:
        email = (user.email or "").casefold() if user is not None else ""
        if expected != account.user_id and (not email or expected.casefold() != email):
            return "unexpected_user"
    return None


class CompletionFlow:
    """Completes consumed pending authorizations (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        identity: IdentityClient,
        seal: Sealer,
        store: AsyncStore,
        audit_failure: AuditFailure,
        invalidate: Callable[[str], None],
        now: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._identity = identity
        self._seal = seal
        self._store = store
        self._audit_failure = audit_failure
        self._invalidate = invalidate
        self._now = now

    async def run(
        self,
        result: AuthorizationGranted | AuthorizationDenied,
        pending: PendingRow,
        binding: str | None,
        owner: str | None,
        now: float,
    ) -> tuple[Connection, str | None]:
        """Check, exchange, learn and store; returns the connection and the ``return_to``."""
        _check_flow(pending, binding, owner, now)
        if isinstance(result, AuthorizationDenied):
            await self._audit_failure(pending.owner, "denied", result.error)
            raise result.to_error()
        # RFC 9207 §2.4: an iss on the callback must be the issuer (exact string), learned
        # from discovery when parse_callback could not compare it yet.
        if (
            result.iss is not None
            and self._identity.known_issuer is None
            and result.iss != await self._identity.issuer()
        ):
            raise CallbackError("invalid_request", "the callback's iss is not the issuer")
        verifier = self._seal.open_verifier(pending.state_hash, pending.verifier_ct)
        try:
            tokens = await self._identity.exchange_code(
                result.code, verifier, redirect_uri=pending.redirect_uri, required_scopes=()
            )
        except (OAuthError, TransportError) as exc:
            await self._audit_failure(pending.owner, "exchange_failed", error_code_of(exc))
            raise
        try:
            account, row = await self._store_grant(pending, tokens, now)
        except UnexpectedGrantError as exc:
            await revoke_quietly(self._identity, self._settings, tokens)
            await self._audit_rejected(pending, exc)
            raise
        except (PdauthError, ValueError) as exc:
            await revoke_quietly(self._identity, self._settings, tokens)
            await self._audit_failure(pending.owner, "rejected", error_code_of(exc))
            raise
        log.info(
            "connection stored (user, region=%s)", account.region, extra={"connection_id": row.id}
        )
        return Connection.from_row(
            row, self._settings.api_base_urls, self._settings.scopes
        ), pending.return_to

    async def _store_grant(
        self, pending: PendingRow, tokens: TokenSet, now: float
    ) -> tuple[Account, ConnectionRow]:
        missing = missing_scopes(parse_scopes(pending.scopes), tokens.scopes)
        if missing:
            raise InsufficientScopeError(sorted(missing), sorted(tokens.scopes))
        account = await learn_account(self._identity, self._settings.api_base_urls, tokens)
        user = await self._identity.fetch_user(account.api_base_url, tokens.access_token)
        reason = grant_mismatch(pending, account, user)
        if reason is not None:
            raise UnexpectedGrantError(
                reason,
                expected_account=pending.expected_account,
                expected_user=pending.expected_user,
            )
        if pending.connection_id is not None:
            # Disconnected (or removed) since the re-consent began: nothing to update.
            target = await self._store.get_connection(pending.connection_id)
            if target is None or target.owner != pending.owner or target.status == "revoked":
                raise ConnectionNotFoundError(f"no connection {pending.connection_id}")
        row = await self.save_user_connection(pending, account, user, tokens, now)
        self._invalidate(row.id)  # a reconnect replaced the tokens
        return account, row

    async def save_user_connection(
        self,
        pending: PendingRow,
        account: Account,
        user: PagerDutyUser | None,
        tokens: TokenSet,
        now: float,
    ) -> ConnectionRow:
        existing = await self.find(pending.owner, "user", account.account_id, account.user_id)
        rec = new_connection(
            self._seal, self._settings.app_kind, pending.owner, "user", account, tokens, now, user
        )
        data: dict[str, object] = {
            "kind": "user",
            "region": account.region,
            "account_id": account.account_id,
            "subdomain": account.subdomain,
            "pd_user_id": account.user_id,
            "scopes": rec.scopes,
        }
        if pending.connection_id is not None:
            data["reconsent"] = True  # more scopes granted to the same connection
        event = NewEvent(
            type="connection.reconnected" if existing is not None else "connection.created",
            data=data,
        )
        return await self._store.upsert_connection(rec, now, event)

    async def find(
        self, owner: str, kind: str, account_id: str, user_id: str | None
    ) -> ConnectionRow | None:
        after: str | None = None
        while True:
            rows = await self._store.list_connections(owner=owner, limit=_LIST_PAGE, after_id=after)
            for row in rows:
                if row.kind == kind and row.account_id == account_id and row.pd_user_id == user_id:
                    return row
            if len(rows) < _LIST_PAGE:
                return None
            after = rows[-1].id

    async def _audit_rejected(self, pending: PendingRow, exc: UnexpectedGrantError) -> None:
        log.info("connect flow refused: %s", exc.reason, extra={"owner": pending.owner})
        data: dict[str, object] = {
            "reason": exc.reason,
            "expected_account": exc.expected_account,
            "expected_user": exc.expected_user,
        }
        if pending.connection_id is not None:
            data["connection_id"] = pending.connection_id
        # The audit trail must not hide the error the caller needs to see.
        with contextlib.suppress(StoreError):
            await self._store.add_event(
                NewEvent(type=REJECTED_EVENT, owner=pending.owner, data=data), self._now()
            )


def _check_flow(pending: PendingRow, binding: str | None, owner: str | None, now: float) -> None:
    if pending.is_expired(now):
        log.info("callback refused: the flow expired")
        raise FlowExpiredError("the connect link expired; start again")
    if (
        not isinstance(binding, str)
        or not binding
        or len(binding) > 256
        or not constant_time_equals(binding_digest(binding), pending.binding_hash)
    ):
        log.info("callback refused: another browser session")
        raise BindingMismatchError("this callback belongs to another browser session")
    if owner is not None and not constant_time_equals(owner, pending.owner):
        log.info("callback refused: another user")
        raise BindingMismatchError("this callback belongs to another user")
