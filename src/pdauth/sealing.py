"""Sealing: the one module that seals and opens every stored secret, bound to its place.

Every secret at rest is an AES-256-GCM ciphertext made by the key ring (:mod:`pdauth.crypto`)
with *associated data* that names where it belongs, so a ciphertext copied to another row,
column or record fails to open (docs/SECURITY.md item 31). The rules, one per kind of secret:

========================  =========================================================
secret                    associated data (``pdauth.crypto.bind`` of …)
========================  =========================================================
connection token          ``pdauth.connection.v1``, owner, kind, account id,
                          PagerDuty user id (``""`` for an app), column name
                          (``access_token`` / ``refresh_token``)
PKCE verifier             ``pdauth.pending.v1``, state hash, ``code_verifier``
queued revocation         ``pdauth.revocation.v1``, connection id, token type hint
connect-session link      ``pdauth.connect_session``
PagerDuty webhook secret  ``pdauth.pd_subscription.v1``, connection id, subscription
                          key, ``signing_secret``
queued unsubscribe        ``pdauth.pd_unsubscribe.v1``, connection id, PagerDuty
                          subscription id, ``access_token``
========================  =========================================================

A connection's tokens are bound to the row's *natural key* (owner, kind, account id, user id),
which the schema keeps unique and never changes, rather than to its id: the store assigns ids
and an upsert of a reconnected user keeps the existing id, so the id is not known when the
tokens are sealed. These byte strings are a storage format: changing one makes every stored
ciphertext of that kind unreadable, so they never change (tests keep ciphertexts made before
this module existed and open them).

:class:`Sealer` is what everyone else calls; it never logs and its errors never carry
plaintext (those of :mod:`pdauth.crypto`: :class:`~pdauth.errors.KeyNotFoundError`,
:class:`~pdauth.errors.DecryptionError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from pdauth.crypto import KeyRing, bind

__all__ = [
    "GrantKey",
    "Sealer",
    "TokenColumn",
    "connect_session_ad",
    "connection_ad",
    "pending_ad",
    "revocation_ad",
    "subscription_secret_ad",
    "token_ad",
    "unsubscribe_ad",
]

TokenColumn = Literal["access_token", "refresh_token"]
TokenTypeHint = Literal["access_token", "refresh_token"]


class TokenHolder(Protocol):
    """What identifies a connection's grant: a stored row, a new one, or a :class:`GrantKey`."""

    @property
    def owner(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def pd_user_id(self) -> str | None: ...


@dataclass(frozen=True)
class GrantKey:
    """The natural key of a connection not stored yet (see the module docstring)."""

    owner: str
    kind: str
    account_id: str
    pd_user_id: str | None


def connection_ad(
    owner: str, kind: str, account_id: str, pd_user_id: str | None, column: str
) -> bytes:
    """Associated data of a connection token, from the natural-key fields."""
    return bind("pdauth.connection.v1", owner, kind, account_id, pd_user_id or "", column)


def token_ad(holder: TokenHolder, column: str) -> bytes:
    """Associated data of a token ciphertext of ``holder`` (a row or a :class:`GrantKey`)."""
    return connection_ad(holder.owner, holder.kind, holder.account_id, holder.pd_user_id, column)


def pending_ad(state_hash: str) -> bytes:
    """Associated data of a pending authorization's PKCE verifier."""
    return bind("pdauth.pending.v1", state_hash, "code_verifier")


def revocation_ad(connection_id: str, token_type_hint: str) -> bytes:
    """Associated data of the token in a ``revocation.pending`` outbox event."""
    return bind("pdauth.revocation.v1", connection_id, token_type_hint)


def connect_session_ad() -> bytes:
    """Associated data of a connect-session link token."""
    return bind("pdauth.connect_session")


def subscription_secret_ad(connection_id: str, key: str) -> bytes:
    """Associated data of a PagerDuty webhook subscription's signing secret."""
    return bind("pdauth.pd_subscription.v1", connection_id, key, "signing_secret")


def unsubscribe_ad(connection_id: str, pd_subscription_id: str) -> bytes:
    """Associated data of the access token in a queued subscription deletion."""
    return bind("pdauth.pd_unsubscribe.v1", connection_id, pd_subscription_id, "access_token")


class Sealer:
    """Seals and opens each kind of stored secret under its rule, with one :class:`KeyRing`."""

    def __init__(self, key_ring: KeyRing) -> None:
        self._keys = key_ring

    def __repr__(self) -> str:
        return f"Sealer({self._keys!r})"

    @property
    def key_ring(self) -> KeyRing:
        return self._keys

    @property
    def primary_key_id(self) -> str:
        """The id of the key new ciphertexts are sealed under (stored as the row's key_id)."""
        return self._keys.primary_key_id

    # -- connection tokens ----------------------------------------------------------------

    def seal_token(self, holder: TokenHolder, column: TokenColumn, token: str) -> str:
        return self._keys.encrypt(token, token_ad(holder, column))

    def open_token(self, holder: TokenHolder, column: TokenColumn, ciphertext: str) -> str:
        return self._keys.decrypt_text(ciphertext, token_ad(holder, column))

    def reseal_token(self, holder: TokenHolder, column: TokenColumn, ciphertext: str) -> str:
        """The same token under the primary key (key rotation); the plaintext never leaves."""
        return self._keys.reencrypt(ciphertext, token_ad(holder, column))

    # -- PKCE verifier of a pending authorization ------------------------------------------

    def seal_verifier(self, state_hash: str, verifier: str) -> str:
        return self._keys.encrypt(verifier, pending_ad(state_hash))

    def open_verifier(self, state_hash: str, ciphertext: str) -> str:
        return self._keys.decrypt_text(ciphertext, pending_ad(state_hash))

    # -- revocation outbox -----------------------------------------------------------------

    def seal_revocation(self, connection_id: str, hint: TokenTypeHint, token: str) -> str:
        return self._keys.encrypt(token, revocation_ad(connection_id, hint))

    def open_revocation(self, connection_id: str, hint: TokenTypeHint, ciphertext: str) -> str:
        return self._keys.decrypt_text(ciphertext, revocation_ad(connection_id, hint))

    # -- connect-session links -------------------------------------------------------------

    def seal_connect_session(self, payload: str) -> str:
        return self._keys.encrypt(payload, connect_session_ad())

    def open_connect_session(self, token: str) -> str:
        return self._keys.decrypt_text(token, connect_session_ad())

    # -- PagerDuty webhook subscriptions ---------------------------------------------------

    def seal_subscription_secret(self, connection_id: str, key: str, secret: str) -> str:
        return self._keys.encrypt(secret, subscription_secret_ad(connection_id, key))

    def open_subscription_secret(self, connection_id: str, key: str, ciphertext: str) -> str:
        return self._keys.decrypt_text(ciphertext, subscription_secret_ad(connection_id, key))

    def reseal_subscription_secret(self, connection_id: str, key: str, ciphertext: str) -> str:
        """The same signing secret under the primary key (key rotation)."""
        return self._keys.reencrypt(ciphertext, subscription_secret_ad(connection_id, key))

    def seal_unsubscribe(self, connection_id: str, pd_subscription_id: str, token: str) -> str:
        return self._keys.encrypt(token, unsubscribe_ad(connection_id, pd_subscription_id))

    def open_unsubscribe(self, connection_id: str, pd_subscription_id: str, ct: str) -> str:
        return self._keys.decrypt_text(ct, unsubscribe_ad(connection_id, pd_subscription_id))
