"""TokenManager: the one place where a PagerDuty token is refreshed (RFC 6749 §6, RFC 9700 §4.14).

PagerDuty rotates the refresh token on every refresh, and a strict server revokes the whole
grant when an already-rotated one is replayed, so two workers refreshing the same connection
at once do not cost one of them a request: they cost the connection. Hence, per connection:

1. **In-process cache and single flight.** ``access_token()`` first looks in a dict of
   connection id → (token, refresh_at, valid_until, token_version): no database, no crypto,
   no await that yields. A miss takes a per-connection ``anyio.Lock`` so one task per process
   does the slow path while the others wait and then hit the cache.
2. **Refresh ahead, proportionally.** A token is refreshed once 90 % of its lifetime has
   passed (``REFRESH_FRACTION``): 2.4 h before the end of a 1-day Scoped token, 3 days before
   the end of a 30-day Classic one. A fixed buffer does not fit both: python-pagerduty's
   24 h buffer refreshes a 1-day Scoped token on every call. The lifetime is the measured
   ``expires_in`` (local receive time + ``expires_in``; PagerDuty's clock is never trusted),
   capped by the documented lifetime of the app kind.
3. **One refresher across processes and machines.** A lease on the row taken by one atomic
   compare-and-set (:meth:`pdauth.store.Store.try_acquire_lease`, ttl =
   ``settings.lease_seconds``, a fresh owner string per attempt), the row re-read under it
   (someone may have refreshed already), the token endpoint called (timeout well under the
   lease), and the new pair written with ``token_version + 1`` in one UPDATE fenced by the
   lease owner and the version (:meth:`~pdauth.store.Store.store_tokens`) *before* the new
   access token is returned to anyone. Waiters poll the row (short, jittered) until
   ``token_version`` moves or the lease expires (then they try to take it); while the old
   access token is still valid they simply keep using it.
4. **Failures.** ``invalid_grant``: the row is re-read first (a lost race is not a dead
   connection), then marked ``needs_reauth`` — tokens wiped, exactly one
   ``connection.needs_reauth`` event (the store's fenced update returns True once). Transient
   failures (5xx, 429, timeout, connect error): the connection is kept, the error recorded,
   bounded jittered retries while the lease lasts, and the old access token is used while it
   is still valid. ``invalid_client``: a configuration error raised to the caller; no
   connection is touched.
5. **App tokens** (client credentials, ``kind='app'``) have no refresh token; they are
   re-minted on expiry through the same single flight and lease.

:meth:`TokenManager.refresh_due` refreshes connections whose refresh token would otherwise
expire unused (PagerDuty: 30 days idle for Scoped, 210 days for Classic) — for a background
job and ``pdauth connections refresh``. :class:`ConnectionTokenSource` adapts the manager to
the REST client's ``TokenSource`` port (401 → refresh once unless the token already changed).

Token ciphertexts are sealed and opened by :class:`pdauth.sealing.Sealer`, bound to the row's
natural key and column (the rule is in :mod:`pdauth.sealing`): a ciphertext moved to another
row or column fails to decrypt.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeAlias

import anyio

from pdauth import token_policy
from pdauth.clock import Clock, SystemClock
from pdauth.config import Settings
from pdauth.crypto import KeyRing
from pdauth.errors import (
    ConnectionNotFoundError,
    CryptoError,
    InvalidClientError,
    InvalidGrantError,
    LeaseUnavailableError,
    NeedsReauthError,
    OAuthError,
    StoreError,
    TransportError,
)
from pdauth.logs import log_context
from pdauth.metrics import observe_refresh, refresh_reason
from pdauth.oauth import TokenSet, parse_scopes
from pdauth.sealing import Sealer, connection_ad, token_ad
from pdauth.store import AsyncStore, ConnectionRow, NewEvent
from pdauth.token_policy import (
    ACCESS_LIFETIME as ACCESS_LIFETIME,
    POLL_MAX,
    POLL_MIN,
    REFRESH_DUE_FRACTION as REFRESH_DUE_FRACTION,
    REFRESH_FRACTION as REFRESH_FRACTION,
    REFRESH_LIFETIME as REFRESH_LIFETIME,
    RETRY_ATTEMPTS,
    Cached,
    ConnectionTokenSource as ConnectionTokenSource,
    RefreshDueReport as RefreshDueReport,
    Usable,
    backoff,
    dead_connection_error,
    error_code,
    error_message,
    fresh_usable,
    is_transient,
    refresh_at as refresh_at,
    refreshed_event,
    wants_refresh,
)

log = logging.getLogger("pdauth.tokens")

__all__ = ["TokenManager", "TokenStore", "connection_binding", "token_binding"]
# The token policy's public names stay importable from here, where they lived first.
__all__ += token_policy.__all__

Sleep = Callable[[float], Awaitable[None]]


#: The store the TokenManager works on: :class:`pdauth.store.AsyncStore`, whose coroutines are
#: derived from :class:`pdauth.store.Store`'s methods (each signature is written once, there).
#: Test doubles subclass it.
TokenStore: TypeAlias = AsyncStore


class TokenEndpoint(Protocol):
    """What the TokenManager needs from :class:`pdauth.identity.IdentityClient`."""

    async def refresh(self, refresh_token: str) -> TokenSet: ...

    async def client_credentials(self, scopes: tuple[str, ...] | frozenset[str]) -> TokenSet: ...


#: Associated-data rules, kept under their historical public names (see pdauth.sealing).
token_binding = token_ad
connection_binding = connection_ad


class TokenManager:
    """Hands out valid access tokens; refreshes them safely (see the module docstring).

    ``store`` is an :class:`pdauth.store.AsyncStore` (or a subclass of it),
    ``identity`` an :class:`pdauth.identity.IdentityClient`. ``cache_ttl`` bounds how long a
    process trusts its cache before re-reading the row (so a disconnect or a refresh made by
    another process is noticed without a 401); the re-read is one primary-key lookup and no
    decryption when the version did not move.
    """

    def __init__(
        self,
        settings: Settings,
        store: TokenStore,
        identity: TokenEndpoint,
        key_ring: KeyRing,
        *,
        clock: Clock | None = None,
        cache_ttl: float = 30.0,
        max_cache_entries: int = 200_000,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._identity = identity
        self._seal = Sealer(key_ring)
        self._clock: Clock = clock or SystemClock()
        self._cache_ttl = cache_ttl
        self._max_cache = max_cache_entries
        self._sleep: Sleep = sleep or anyio.sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._cache: dict[str, Cached] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._owner_prefix = f"tm-{secrets.token_hex(4)}"
        self._lease_ttl = float(settings.lease_seconds)
        self._http_timeout = float(settings.http_timeout)
        self._nominal_access = ACCESS_LIFETIME[settings.app_kind]
        self._nominal_refresh = REFRESH_LIFETIME[settings.app_kind]

    # -- public ----------------------------------------------------------------------------

    async def access_token(self, connection_id: str) -> str:
        """A valid access token for the connection (refreshing it first if due).

        Raises :class:`ConnectionNotFoundError`, :class:`NeedsReauthError` (the user must
        reconnect), :class:`InvalidClientError` (configuration), :class:`TransportError`
        (PagerDuty unreachable and the old token expired), :class:`LeaseUnavailableError`,
        :class:`~pdauth.errors.CryptoError` or :class:`~pdauth.errors.StoreError`.
        """
        entry = self._cache.get(connection_id)
        if entry is not None:
            now = self._clock.now()
            if now < entry.refresh_at and now < entry.valid_until:
                return entry.token
        return await self._obtain(connection_id, rejected=None, force=False)

    async def refresh_rejected(self, connection_id: str, rejected: str) -> str:
        """After PagerDuty answered 401 to ``rejected``: refresh once, unless the token
        already changed since (another task or process refreshed); return the token to use."""
        return await self._obtain(connection_id, rejected=rejected, force=True)

    async def force_refresh(self, connection_id: str) -> str:
        """Refresh now, whatever the expiry says (CLI ``connections refresh``)."""
        return await self._obtain(connection_id, rejected=None, force=True)

    def invalidate(self, connection_id: str | None = None) -> None:
        """Forget cached tokens (one connection, or all)."""
        if connection_id is None:
            self._cache.clear()
        else:
            self._cache.pop(connection_id, None)

    def token_source(self, connection_id: str) -> ConnectionTokenSource:
        """The REST client's ``TokenSource`` for this connection."""
        return ConnectionTokenSource(self, connection_id)

    async def refresh_due(
        self, *, horizon: float | None = None, limit: int = 100
    ) -> RefreshDueReport:
        """Refresh connections whose refresh token would expire unused within ``horizon``.

        ``horizon`` defaults to a quarter of PagerDuty's idle refresh-token lifetime for the
        app kind (7.5 days Scoped, 52.5 days Classic), so a daily job has many chances.
        """
        now = self._clock.now()
        window = REFRESH_DUE_FRACTION * self._nominal_refresh if horizon is None else horizon
        rows = await self._store.due_for_refresh(
            now=now, refresh_expires_before=now + window, limit=limit
        )
        refreshed = dead = failed = 0
        for row in rows:
            try:
                await self._obtain(
                    row.id, rejected=None, force=True, seen_version=row.token_version
                )
                refreshed += 1
            except NeedsReauthError:
                dead += 1
            except InvalidClientError:
                raise  # configuration: every other connection would fail the same way
            except (TransportError, OAuthError, LeaseUnavailableError, CryptoError, StoreError):
                failed += 1
        return RefreshDueReport(len(rows), refreshed, dead, failed)

    # -- slow path -------------------------------------------------------------------------

    def _lock(self, connection_id: str) -> anyio.Lock:
        lock = self._locks.get(connection_id)
        if lock is None:
            lock = self._locks[connection_id] = anyio.Lock()
        return lock

    def _remember(self, connection_id: str, usable: Usable) -> str:
        now = self._clock.now()
        if len(self._cache) >= self._max_cache and connection_id not in self._cache:
            self._cache.pop(next(iter(self._cache)))  # oldest insertion first
        self._cache[connection_id] = Cached(
            token=usable.token,
            refresh_at=usable.refresh_at,
            expires_at=usable.expires_at,
            valid_until=now + self._cache_ttl,
            token_version=usable.token_version,
        )
        return usable.token

    async def _obtain(
        self,
        connection_id: str,
        *,
        rejected: str | None,
        force: bool,
        seen_version: int | None = None,
    ) -> str:
        lock = self._lock(connection_id)
        try:
            async with lock:
                return await self._obtain_locked(
                    connection_id, rejected=rejected, force=force, seen_version=seen_version
                )
        finally:
            # One lock per connection in use, not per connection ever seen.
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._locks.pop(connection_id, None)

    async def _obtain_locked(
        self,
        connection_id: str,
        *,
        rejected: str | None,
        force: bool,
        seen_version: int | None,
    ) -> str:
        now = self._clock.now()
        entry = self._cache.get(connection_id)
        if entry is not None and not force and now < entry.refresh_at and now < entry.valid_until:
            return entry.token  # another task refreshed while we queued
        row = await self._read_active(connection_id)
        if (
            entry is not None
            and not force
            and entry.token_version == row.token_version
            and now < entry.refresh_at
        ):
            # Same tokens as cached (no decryption needed); trust them for another ttl.
            return self._remember(
                connection_id,
                Usable(entry.token, entry.refresh_at, entry.expires_at, entry.token_version),
            )
        current = self._usable(row, now)
        if current is not None and not wants_refresh(
            current, now, force=force, rejected=rejected, seen_version=seen_version
        ):
            return self._remember(connection_id, current)
        return await self._refresh(
            row, current, force=force, rejected=rejected, seen_version=seen_version
        )

    async def _read_active(self, connection_id: str) -> ConnectionRow:
        row = await self._store.get_connection(connection_id)
        if row is None:
            self._cache.pop(connection_id, None)
            raise ConnectionNotFoundError(f"no connection {connection_id}")
        if row.status != "active":
            self._cache.pop(connection_id, None)
            raise dead_connection_error(row)
        return row

    def _usable(self, row: ConnectionRow, now: float) -> Usable | None:
        """The row's access token if present and not expired (decrypts it)."""
        if row.access_token_ct is None:
            return None
        if row.access_expires_at is not None and now >= row.access_expires_at:
            return None
        token = self._seal.open_token(row, "access_token", row.access_token_ct)
        issued = row.last_refreshed_at if row.last_refreshed_at is not None else row.updated_at
        lifetime = None if row.access_expires_at is None else row.access_expires_at - issued
        return Usable(
            token,
            refresh_at(row.access_expires_at, lifetime, nominal_lifetime=self._nominal_access),
            row.access_expires_at,
            row.token_version,
        )

    async def _refresh(
        self,
        row: ConnectionRow,
        current: Usable | None,
        *,
        force: bool,
        rejected: str | None,
        seen_version: int | None,
    ) -> str:
        """Refresh under the lease, or wait for whoever holds it (see the module docstring)."""
        # Every line of this refresh names the connection and its owner (never a token).
        with log_context(connection_id=row.id, owner=row.owner):
            cid = row.id
            give_up_at = self._clock.monotonic() + 2 * self._lease_ttl + self._http_timeout
            base_version = row.token_version
            seen = row
            while True:
                now = self._clock.now()
                if not seen.lease_held(now):
                    owner = f"{self._owner_prefix}-{secrets.token_hex(6)}"
                    leased = await self._store.try_acquire_lease(cid, owner, now, self._lease_ttl)
                    if leased is not None:
                        return await self._refresh_under_lease(
                            leased, owner, base_version, current, rejected=rejected, force=force
                        )
                # Someone else is refreshing. Use the current token while it is still good
                # (unless PagerDuty already refused it), else wait for their write.
                if (
                    current is not None
                    and not force
                    and (current.expires_at is None or now < current.expires_at)
                ):
                    return current.token
                if self._clock.monotonic() >= give_up_at:
                    log.warning("refresh lease held by another worker too long; giving up")
                    raise LeaseUnavailableError(
                        f"connection {cid}: another worker held the refresh lease too long"
                    )
                log.debug("refresh lease held by another worker; waiting for its result")
                await self._sleep(POLL_MIN + self._rng.random() * (POLL_MAX - POLL_MIN))
                seen = await self._read_active(cid)
                if seen.token_version != base_version:
                    moved = self._usable(seen, self._clock.now())
                    if moved is not None and not (rejected is not None and moved.token == rejected):
                        return self._remember(cid, moved)
                    base_version = seen.token_version
                    current = moved

    async def _refresh_under_lease(
        self,
        leased: ConnectionRow,
        owner: str,
        base_version: int,
        current: Usable | None,
        *,
        rejected: str | None,
        force: bool,
    ) -> str:
        cid = leased.id
        lease_started = self._clock.monotonic()
        log.info("refresh started: lease taken (reason=%s)", refresh_reason(rejected, force))
        released = False  # store_tokens / mark_needs_reauth release the lease themselves
        try:
            if leased.token_version != base_version:
                # Refreshed by someone else between our read and our lease: use theirs.
                moved = self._usable(leased, self._clock.now())
                if moved is not None and not (rejected is not None and moved.token == rejected):
                    return self._remember(cid, moved)
            refresh_token: str | None = None
            if leased.kind != "app":
                if leased.refresh_token_ct is None:
                    released = True
                    await self._declare_dead(
                        leased, owner, "no_refresh_token", "no refresh token is stored"
                    )
                refresh_token = self._decrypt_refresh_token(leased)
            try:
                tokens = await self._call_token_endpoint(leased, refresh_token, lease_started)
            except InvalidGrantError:
                observe_refresh("invalid_grant", refresh_reason(rejected, force))
                log.warning("refresh failed: PagerDuty refused the refresh token (invalid_grant)")
                released = True
                return await self._after_invalid_grant(leased, owner)
            except InvalidClientError:
                observe_refresh("invalid_client", refresh_reason(rejected, force))
                log.error("refresh failed: invalid_client (check the client id and secret)")
                raise  # configuration: no connection is touched (finally releases the lease)
            except (TransportError, OAuthError) as exc:
                observe_refresh("error", refresh_reason(rejected, force))
                log.warning("refresh failed: %s", error_code(exc))
                await self._store.record_error(
                    cid, code=error_code(exc), message=error_message(exc), now=self._clock.now()
                )
                now = self._clock.now()
                if (
                    current is not None
                    and not (rejected is not None and current.token == rejected)
                    and (current.expires_at is None or now < current.expires_at)
                ):
                    return current.token  # the old token is still valid: keep serving it
                raise
            observe_refresh("success", refresh_reason(rejected, force))
            stored = await self._persist_with_retries(leased, owner, tokens, lease_started)
            released = True
            if stored is None:
                # The fence failed: our lease expired and another worker took over. Our new
                # pair is lost (tokens the database does not hold are never handed out).
                row = await self._read_active(cid)
                moved = self._usable(row, self._clock.now())
                if moved is not None:
                    return self._remember(cid, moved)
                raise LeaseUnavailableError(
                    f"connection {cid}: the refresh outlived its lease; try again"
                )
            log.info("refresh succeeded (token_version=%d)", stored.token_version)
            return self._remember(
                cid, fresh_usable(tokens, stored.token_version, self._nominal_access)
            )
        finally:
            if not released:
                with anyio.CancelScope(shield=True):
                    await self._release_quietly(cid, owner)

    def _decrypt_refresh_token(self, row: ConnectionRow) -> str:
        # A CryptoError propagates and the connection is left as it is: a missing key is a
        # deployment mistake that must not mark every connection dead.
        return self._seal.open_token(row, "refresh_token", row.refresh_token_ct or "")

    async def _release_quietly(self, connection_id: str, owner: str) -> None:
        # The lease expires by itself; the error that brought us here matters more.
        with contextlib.suppress(StoreError):
            await self._store.release_lease(connection_id, owner)

    async def _persist_with_retries(
        self, row: ConnectionRow, owner: str, tokens: TokenSet, lease_started: float
    ) -> ConnectionRow | None:
        """Write the new pair; on a database error retry while the lease lasts.

        The old refresh token is already spent, so giving up here loses the grant: keep
        trying (bounded) before surfacing the StoreError (docs/SECURITY.md R3).
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._persist(row, owner, tokens)
            except StoreError:
                delay = backoff(attempt, self._rng)
                elapsed = self._clock.monotonic() - lease_started
                if attempt >= 2 * RETRY_ATTEMPTS or elapsed + delay >= self._lease_ttl:
                    raise
                await self._sleep(delay)

    async def _call_token_endpoint(
        self, row: ConnectionRow, refresh_token: str | None, lease_started: float
    ) -> TokenSet:
        """Refresh (or re-mint an app token) with bounded jittered retries on transient errors.

        Retries stop early when the lease would not outlast another attempt: a write after
        the lease is gone is refused by the fence anyway.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                if refresh_token is None:
                    scopes = parse_scopes(row.scopes)
                    return await self._identity.client_credentials(scopes)
                return await self._identity.refresh(refresh_token)
            except (TransportError, OAuthError) as exc:
                if not is_transient(exc) or attempt >= RETRY_ATTEMPTS:
                    raise
                delay = backoff(attempt, self._rng)
                elapsed = self._clock.monotonic() - lease_started
                if elapsed + delay + self._http_timeout >= self._lease_ttl:
                    raise
                await self._sleep(delay)

    async def _persist(
        self, row: ConnectionRow, owner: str, tokens: TokenSet
    ) -> ConnectionRow | None:
        now = self._clock.now()
        access_ct = self._seal.seal_token(row, "access_token", tokens.access_token)
        refresh_ct: str | None = None
        refresh_expires: float | None = None
        if row.kind != "app" and tokens.refresh_token is not None:
            refresh_ct = self._seal.seal_token(row, "refresh_token", tokens.refresh_token)
            refresh_expires = now + self._nominal_refresh
        return await self._store.store_tokens(
            row.id,
            lease_owner=owner,
            expected_version=row.token_version,
            access_token_ct=access_ct,
            refresh_token_ct=refresh_ct,
            key_id=self._seal.primary_key_id,
            access_expires_at=tokens.expires_at,
            refresh_expires_at=refresh_expires,
            now=now,
            event=refreshed_event(row, tokens),
        )

    async def _after_invalid_grant(self, leased: ConnectionRow, owner: str) -> str:
        """A refused refresh token: re-read first (a lost race is not a dead connection)."""
        cid = leased.id
        row = await self._store.get_connection(cid)
        if row is not None and row.status == "active" and row.token_version != leased.token_version:
            await self._store.release_lease(cid, owner)
            moved = self._usable(row, self._clock.now())
            if moved is not None:
                return self._remember(cid, moved)
            raise LeaseUnavailableError(f"connection {cid}: refreshed concurrently; try again")
        await self._declare_dead(
            leased, owner, "invalid_grant", "PagerDuty refused the refresh token"
        )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _declare_dead(
        self, leased: ConnectionRow, owner: str | None, code: str, message: str
    ) -> None:
        """Mark needs_reauth (one event, fenced by version) and raise NeedsReauthError."""
        cid = leased.id
        self._cache.pop(cid, None)
        await self._store.mark_needs_reauth(
            cid,
            code=code,
            message=message,
            now=self._clock.now(),
            expected_version=leased.token_version,
            event=NewEvent(
                type="connection.needs_reauth",
                data={"reason": code, "token_version": leased.token_version},
            ),
        )
        row = await self._store.get_connection(cid)
        if row is not None and row.status == "active":
            # The fence refused: the tokens moved meanwhile, so the connection lives on.
            if owner is not None:
                await self._release_quietly(cid, owner)
            raise LeaseUnavailableError(f"connection {cid}: refreshed concurrently; try again")
        log.warning("connection needs re-authorization (reason=%s)", code)
        raise NeedsReauthError(cid, "PagerDuty no longer accepts this connection; reconnect it")
