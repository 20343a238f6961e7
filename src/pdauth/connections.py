"""Connector: the facade a host application uses to connect PagerDuty accounts.

``begin`` starts an authorization-code + PKCE flow (RFC 6749 §4.1, RFC 7636): a 256-bit state,
an S256 challenge, and a *binding* — 32 random bytes the web layer puts in a browser cookie —
stored as a pending authorization (state hash, binding hash, the PKCE verifier encrypted, the
sanitised ``return_to``, a 10-minute expiry, and who the flow is meant for: an expected
PagerDuty account and/or user, or the connection a re-consent updates). ``complete`` takes
the redirect back: it parses the callback first (anything malformed is a
:class:`~pdauth.errors.CallbackError` with nothing consumed and no outbound call), consumes
the pending authorization atomically and hands it to :class:`pdauth.connect_flow.CompletionFlow`,
which checks expiry and binding, exchanges the code, checks the grant (scopes, expected account
and user) and upserts the connection with its event in one transaction. Any failure after the
exchange stores nothing and, when a revocation endpoint is configured, revokes the tokens just
issued (best effort; docs/SECURITY.md item 29).

``disconnect`` makes the tokens unusable at once (status ``revoked``, ciphertexts wiped). PagerDuty
documents no revocation endpoint; when ``settings.revocation_endpoint`` is set, the refresh token
is revoked synchronously first (RFC 7009) and, if that fails, a ``revocation.pending`` outbox event
is written *in the same transaction as the wipe*, holding the refresh token sealed
(:mod:`pdauth.sealing`, which seals every secret) for the keeper to retry later.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import httpx

from pdauth._portal import AsyncClosing
from pdauth.client import Pacer, PagerDutyClient, RedisPacer
from pdauth.client.http import http_client
from pdauth.clock import Clock, SystemClock
from pdauth.config import Settings
from pdauth.connect_flow import CompletionFlow, binding_digest, check_expectation
from pdauth.connection_types import AuthorizationStart, Connection, LastError
from pdauth.crypto import KeyRing
from pdauth.errors import (
    ConnectionNotFoundError,
    OAuthError,
    ScopeError,
    StoreError,
    TransportError,
    UnknownStateError,
)
from pdauth.grants import Account, new_connection, revoke_remote
from pdauth.identity import IdentityClient
from pdauth.logs import log_context
from pdauth.metrics import observe_callback_outcome, observe_redis_outage, refreshing_because
from pdauth.oauth import (
    CallbackQuery,
    app_token_scope,
    build_authorization_url,
    format_scopes,
    generate_code_verifier,
    generate_state,
    identity_from_app_scope,
    parse_callback,
    parse_scopes,
    s256_challenge,
    state_digest,
)
from pdauth.owners import check_owner
from pdauth.returnto import safe_return_to
from pdauth.scope_upgrades import ScopeWatchingClient, reconsent_scopes, record_missing_scopes
from pdauth.sealing import Sealer, pending_ad, revocation_ad
from pdauth.store import AsyncStore, NewEvent, NewPending, Store
from pdauth.subscriptions import PagerDutyEventHook, SubscriptionStatus, events_of
from pdauth.tokens import (
    RefreshDueReport,
    TokenManager,
)

__all__ = [
    "AuthorizationStart",
    "Connection",
    "Connector",
    "LastError",
    "revocation_binding",
    "safe_return_to",
    "shared_pacer",
]

PENDING_TTL = 600.0  # a pending authorization lives 10 minutes (RFC 9700 §2.1)
log = logging.getLogger("pdauth.connections")

_LIST_PAGE = 1000


def shared_pacer(settings: Settings) -> Pacer | None:
    """The one place the shared pacing is built from Settings (``PDAUTH_REDIS_URL``).

    With a Redis URL: a :class:`~pdauth.client.RedisPacer` whose keys live under
    ``PDAUTH_REDIS_PREFIX`` + ``pace:``, so every process and machine paces each connection
    together; without: None, and clients use the process-wide local pacer. Raises
    :class:`~pdauth.errors.ConfigurationError` naming ``pdauth[redis]`` when the redis
    package is missing.
    """
    if settings.redis_url is None:
        return None
    return RedisPacer(
        settings.redis_url,
        prefix=f"{settings.redis_prefix}pace:",
        on_outage=observe_redis_outage,  # degraded gauge and outage count in /metrics
    )


#: Associated-data rules, kept under their historical names (see pdauth.sealing).
revocation_binding = revocation_ad
pending_binding = pending_ad


class Connector(AsyncClosing):
    """Connect, use and disconnect PagerDuty accounts (an async context manager).

    ``store``: a :class:`pdauth.store.AsyncStore` or :class:`pdauth.store.Store` (not closed
    here), else one is opened on ``settings.database_url`` (``PDAUTH_DATABASE_URL``; default
    SQLite in ``./pdauth.db``, WAL, created owner-only) and closed by :meth:`aclose`. The
    schema is checked once, before the first database call: missing or behind raises
    :class:`~pdauth.errors.ConfigurationError` naming ``pdauth db upgrade``, unless
    ``migrate=True`` (migrates then; safe with several instances starting together).
    ``transport`` routes every outbound HTTP call (tests use an emulator's ASGITransport).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        store: AsyncStore | Store | None = None,
        key_ring: KeyRing | None = None,
        http: httpx.AsyncClient | None = None,
        jwks_refetch_interval: float = 30.0,
        migrate: bool = False,
        pacer: Pacer | None = None,
    ) -> None:
        self._settings = settings
        self._owns_pacer = pacer is None
        self._pacer = pacer if pacer is not None else shared_pacer(settings)
        self._clock: Clock = clock or SystemClock()
        self._keys = key_ring or settings.key_ring()
        self._seal = Sealer(self._keys)
        self._owns_store = store is None
        if store is None:
            store = AsyncStore(Store(settings.database_url))
        elif isinstance(store, Store):
            store = AsyncStore(store)
        store.require_schema(upgrade=migrate)
        self._store: AsyncStore = store
        self._http, self._owns_http = http_client(http, transport, settings.http_timeout)
        self._identity = IdentityClient(
            settings,
            http=self._http,
            clock=self._clock,
            jwks_refetch_interval=jwks_refetch_interval,
        )
        self._tokens = TokenManager(
            settings,
            self._store,
            self._identity,
            self._keys,
            clock=self._clock,
        )
        self._flow = CompletionFlow(
            settings,
            self._identity,
            self._seal,
            self._store,
            self._audit_failure,
            self._tokens.invalidate,
            self._clock.now,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> Connector:
        """A Connector configured from ``PDAUTH_*`` variables (see :class:`Settings`)."""
        return cls(Settings.from_env(env), **kwargs)

    async def __aenter__(self) -> Connector:
        try:
            await self.open()
        except BaseException:
            await self.aclose()  # __aexit__ will not run: release the pool and the client
            raise
        return self

    async def open(self) -> None:
        """Check (or, with ``migrate=True``, bring up to date) the schema now rather than on
        first use; idempotent."""
        await self._store.check_schema()

    async def aclose(self) -> None:
        if self._owns_pacer and isinstance(self._pacer, RedisPacer):
            await self._pacer.aclose()
        if self._owns_http:
            await self._http.aclose()
        if self._owns_store:
            await self._store.aclose()

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def tokens(self) -> TokenManager:
        return self._tokens

    @property
    def identity(self) -> IdentityClient:
        return self._identity

    @property
    def store(self) -> AsyncStore:
        return self._store

    # -- connect ---------------------------------------------------------------------------

    async def begin(
        self,
        owner: str,
        return_to: str | None = None,
        *,
        scopes: Iterable[str] | None = None,
        expect_account: str | None = None,
        expect_user: str | None = None,
        connection_id: str | None = None,
    ) -> AuthorizationStart:
        """Start a connect flow for ``owner`` (the host app's user or tenant id).

        ``return_to`` is kept only if it is a safe same-origin relative path
        (:func:`safe_return_to`); otherwise the default page is used. ``scopes`` defaults to
        ``settings.scopes`` and is what the callback will require. ``expect_account`` (a
        PagerDuty subdomain or account id) and ``expect_user`` (a user id or email) name who
        the link is meant for: an approval by anyone else stores nothing
        (:class:`~pdauth.connect_flow.UnexpectedGrantError`). ``connection_id`` starts a
        re-consent for that connection of ``owner``'s: it asks for the scopes granted plus
        the ones needed, and ``complete`` updates that same connection, only if the same
        PagerDuty account and user approve.
        """
        check_owner(owner)
        wanted = parse_scopes(tuple(scopes) if scopes is not None else self._settings.scopes)
        expect_account = check_expectation("expect_account", expect_account)
        expect_user = check_expectation("expect_user", expect_user)
        if connection_id is not None:
            row = await self._store.get_connection(connection_id)
            if row is None or row.owner != owner or row.status == "revoked":
                # Disconnected is gone: asking PagerDuty for consent would end in nothing.
                raise ConnectionNotFoundError(f"no connection {connection_id}")
            if row.kind != "user" or row.pd_user_id is None:
                raise ValueError("only user connections are re-consented (apps use connect_app)")
            wanted = reconsent_scopes(row, wanted)
            expect_account, expect_user = row.account_id, row.pd_user_id
        if not wanted:
            raise ValueError("at least one scope is required")
        # A wrong discovery or JWKS URL is a ConfigurationError now, before any pending
        # authorization exists; PagerDuty being unreachable is left for the callback.
        with contextlib.suppress(OAuthError, TransportError):
            await self._identity.ensure_ready()
        return await self._start(
            owner,
            return_to,
            wanted,
            expect_account=expect_account,
            expect_user=expect_user,
            connection_id=connection_id,
        )

    async def _start(
        self,
        owner: str,
        return_to: str | None,
        wanted: frozenset[str],
        *,
        expect_account: str | None,
        expect_user: str | None,
        connection_id: str | None,
    ) -> AuthorizationStart:
        now = self._clock.now()
        state = generate_state()
        verifier = generate_code_verifier()
        binding = secrets.token_urlsafe(32)
        state_hash = state_digest(state)
        url = build_authorization_url(
            self._settings.authorize_endpoint,
            client_id=self._settings.client_id,
            redirect_uri=self._settings.redirect_uri,
            scopes=wanted,
            state=state,
            code_challenge=s256_challenge(verifier),
        )
        expires_at = now + PENDING_TTL
        await self._store.create_pending(
            NewPending(
                state_hash=state_hash,
                owner=owner,
                binding_hash=binding_digest(binding),
                verifier_ct=self._seal.seal_verifier(state_hash, verifier),
                redirect_uri=self._settings.redirect_uri,
                scopes=format_scopes(wanted),
                expires_at=expires_at,
                return_to=safe_return_to(return_to),
                expected_account=expect_account,
                expected_user=expect_user,
                connection_id=connection_id,
            ),
            now,
        )
        log.info("connect flow started", extra={"owner": owner})
        return AuthorizationStart(url=url, state=state, binding=binding, expires_at=expires_at)

    async def complete(
        self, query: CallbackQuery, binding: str | None, *, owner: str | None = None
    ) -> Connection:
        """Finish the flow from the redirect back to ``redirect_uri``.

        ``query``: the raw query string, ``request.query_params.multi_items()`` or a mapping.
        ``binding``: the cookie value ``begin`` returned. ``owner``: when given, must be the
        owner who began the flow. Raises :class:`CallbackError` (malformed; nothing consumed,
        no outbound call), :class:`UnknownStateError`, :class:`FlowExpiredError`,
        :class:`BindingMismatchError`, :class:`AuthorizationDeniedError`, the token endpoint's
        OAuth errors, :class:`InsufficientScopeError`, :class:`IdTokenError`,
        :class:`TransportError` or :class:`StoreError`; in every case nothing is stored.
        The result's ``return_to`` is available through :meth:`complete_with_return_to`.
        """
        connection, _ = await self.complete_with_return_to(query, binding, owner=owner)
        return connection

    @observe_callback_outcome
    async def complete_with_return_to(
        self, query: CallbackQuery, binding: str | None, *, owner: str | None = None
    ) -> tuple[Connection, str | None]:
        """:meth:`complete`, also returning the ``return_to`` stored by :meth:`begin`."""
        result = parse_callback(query, issuer=self._identity.known_issuer)
        pending = await self._store.consume_pending(state_digest(result.state))
        if pending is None:
            log.info("callback refused: no pending authorization matches (unknown or used)")
            raise UnknownStateError(
                "no pending authorization matches this callback (or it was used)"
            )
        now = self._clock.now()
        # The rest of the callback's lines name the owner who began the flow.
        with log_context(owner=pending.owner):
            return await self._flow.run(result, pending, binding, owner, now)

    async def connect_app(
        self,
        owner: str,
        *,
        region: Literal["us", "eu"],
        subdomain: str,
        scopes: Iterable[str] | None = None,
    ) -> Connection:
        """Connect an app token (client credentials; PagerDuty Scoped private apps only).

        The token is minted for ``as_account-<region>.<subdomain>`` plus ``scopes`` (default
        ``settings.scopes``) and re-minted on expiry by the TokenManager. App tokens have no
        user and PagerDuty names no account id for them, so the connection's ``account_id``
        is the ``as_account`` scope itself.
        """
        check_owner(owner)
        account_scope = app_token_scope(region, subdomain)
        wanted = parse_scopes(tuple(scopes) if scopes is not None else self._settings.scopes)
        tokens = await self._identity.client_credentials(frozenset({account_scope, *wanted}))
        app = identity_from_app_scope(tokens.scopes, self._settings.api_base_urls)
        account = Account(
            account_id=app_token_scope(app.region, app.subdomain),
            subdomain=app.subdomain,
            user_id=None,
            region=app.region,
            api_base_url=app.api_base_url,
            delegation_id=None,
        )
        now = self._clock.now()
        existing = await self._flow.find(owner, "app", account.account_id, None)
        rec = new_connection(
            self._seal, self._settings.app_kind, owner, "app", account, tokens, now
        )
        row = await self._store.upsert_connection(
            rec,
            now,
            NewEvent(
                type="connection.reconnected" if existing is not None else "connection.created",
                data={"kind": "app", "region": app.region, "subdomain": app.subdomain},
            ),
        )
        self._tokens.invalidate(row.id)
        log.info(
            "connection stored (app, region=%s)",
            app.region,
            extra={"connection_id": row.id, "owner": owner},
        )
        return Connection.from_row(row, self._settings.api_base_urls, self._settings.scopes)

    # -- use -------------------------------------------------------------------------------

    async def access_token(self, connection_id: str) -> str:
        """A valid access token (refreshed first when due; see :class:`TokenManager`)."""
        return await self._tokens.access_token(connection_id)

    async def client(self, connection: str | Connection, **options: Any) -> PagerDutyClient:
        """A REST client for one connection (an async context manager).

        The base URL comes from the connection's region (learned from the validated id_token,
        never from input) and the credential from the TokenManager, so the client refreshes
        through the same single flight and lease as everything else. It shares the
        Connector's HTTP connection pool; closing the client leaves the pool open.
        ``options`` go to :class:`~pdauth.client.PagerDutyClient` (``deadline``, ``from_email``…).
        Pacing goes through the Connector's pacer (:func:`shared_pacer`: Redis-shared with
        ``PDAUTH_REDIS_URL``) unless ``pacer=`` is given here or to the Connector.
        """
        if isinstance(connection, str):
            connection = await self.get(connection)
        options.setdefault("http", self._http)
        if self._pacer is not None:
            options.setdefault("pacer", self._pacer)
        connection_id = connection.id

        async def on_scope_error(exc: ScopeError) -> None:
            # PagerDuty's 403 "Token missing required scopes": flag the connection once.
            await record_missing_scopes(self._store, connection_id, exc, self._clock.now())

        return ScopeWatchingClient(
            connection.api_base_url,
            self._tokens.token_source(connection_id),
            on_scope_error=on_scope_error,
            **options,
        )

    async def get(self, connection_id: str, *, owner: str | None = None) -> Connection:
        """One connection; :class:`ConnectionNotFoundError` if absent or not ``owner``'s."""
        row = await self._store.get_connection(connection_id)
        if row is None or (owner is not None and row.owner != owner):
            raise ConnectionNotFoundError(f"no connection {connection_id}")
        return Connection.from_row(row, self._settings.api_base_urls, self._settings.scopes)

    async def connections(
        self, owner: str | None = None, *, status: str | None = None, limit: int = _LIST_PAGE
    ) -> list[Connection]:
        """Connections (of ``owner``, or all), ordered by id; at most ``limit``."""
        found: list[Connection] = []
        after: str | None = None
        while len(found) < limit:
            page = min(_LIST_PAGE, limit - len(found))
            rows = await self._store.list_connections(
                owner=owner, status=status, limit=page, after_id=after
            )
            found.extend(
                Connection.from_row(r, self._settings.api_base_urls, self._settings.scopes)
                for r in rows
            )
            if len(rows) < page:
                break
            after = rows[-1].id
        return found

    async def refresh_due(
        self, *, horizon: float | None = None, limit: int = 100
    ) -> RefreshDueReport:
        """Refresh connections whose refresh token would otherwise expire unused."""
        with refreshing_because("idle"):
            return await self._tokens.refresh_due(horizon=horizon, limit=limit)

    # -- disconnect ------------------------------------------------------------------------

    async def disconnect(self, connection_id: str, *, owner: str | None = None) -> Connection:
        """Make the connection's tokens unusable at once and revoke them where possible; its
        PagerDuty webhook subscription is deleted first, or queued (:mod:`pdauth.subscriptions`).

        Idempotent: disconnecting a revoked connection returns it unchanged.
        """
        unsubscribed = False
        for _ in range(5):
            row = await self._store.get_connection(connection_id)
            if row is None or (owner is not None and row.owner != owner):
                raise ConnectionNotFoundError(f"no connection {connection_id}")
            if row.status == "revoked":
                break
            if not unsubscribed:  # while the token works (else a retry job is stored first)
                unsubscribed = await events_of(self).before_disconnect(row)
            revoked, pending = await revoke_remote(self._identity, self._seal, self._settings, row)
            queued = pending is not None
            audit = NewEvent(type="connection.revoked", data={"kind": row.kind,
                "revoked_at_pagerduty": revoked, "revocation_queued": queued})  # fmt: skip
            now = self._clock.now()
            if await self._store.mark_revoked(
                connection_id, now=now, expected_version=row.token_version, event=pending or audit
            ):
                if pending is not None:
                    await self._store.add_event(audit, now)
                log.info(
                    "connection disconnected (revoked at PagerDuty: %s, revocation queued: %s)",
                    revoked, queued, extra={"connection_id": connection_id, "owner": row.owner},
                )  # fmt: skip
                break
            # The tokens moved (a refresh) or it was disconnected meanwhile: look again.
        else:
            raise StoreError(f"connection {connection_id} kept changing; disconnect again")
        self._tokens.invalidate(connection_id)
        return await self.get(connection_id)

    async def _audit_failure(self, owner: str, reason: str, code: str) -> None:
        log.info("connect flow failed: %s (%s)", reason, code, extra={"owner": owner})
        # The audit trail must not hide the error the caller needs to see.
        with contextlib.suppress(StoreError):
            await self._store.add_event(
                NewEvent(
                    type="connect.failed",
                    owner=owner,
                    data={"reason": reason, "error": code},
                    outbox=False,
                ),
                self._clock.now(),
            )

    async def ensure_subscription(self, connection_id: str) -> SubscriptionStatus:
        """Create or adopt the connection's PagerDuty webhook subscription now (not waiting)."""
        return await events_of(self).ensure(connection_id)

    def on_pagerduty_event(self, callback: PagerDutyEventHook) -> Callable[[], None]:
        """Call ``callback(notice)`` for each new PagerDuty event received; returns a remover."""
        return events_of(self).on_event(callback)
