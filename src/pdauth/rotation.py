"""Key rotation: re-encrypt every stored token under the newest key — in batches, online, resumable.

The procedure (docs/SECURITY.md item 32): ``pdauth keys generate`` prints a new key. (1) Add
it LAST to ``PDAUTH_ENCRYPTION_KEYS`` and deploy everywhere, so every process can decrypt it;
(2) move it FIRST and deploy again, so new writes use it (processes not yet restarted still
write under the old key, which everyone can read); (3) ``pdauth keys rotate`` moves the rest —
run it again if step 2 was still rolling out; (4) drop the old key once nothing needs it.
:func:`reencrypt_connections` walks the rows whose ``key_id`` is not the primary, in id order,
``batch_size`` at a time, and replaces each row's two ciphertexts in one UPDATE fenced by
``token_version`` (:meth:`pdauth.store.Store.replace_ciphertexts`). A refresh that lands in
between wins (it wrote fresh ciphertexts); the row is re-read and retried, so nothing is lost
and refreshes never wait for the rotation. Each row commits on its own, so an interrupted run is
simply started again: only rows still under an old key are visited. The version is not bumped
(the plaintext did not change), so caches and in-flight refreshes stay valid.

Not re-encrypted here: pending authorizations (their verifier lives 10 minutes) and the token
ciphertexts of undelivered ``revocation.pending`` outbox events — keep an old key until those
have drained, and as long as backups encrypted under it must stay readable.

This is the library function; the ``pdauth keys generate|rotate`` command that runs it lives
in :mod:`pdauth.commands.keys`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pdauth.clock import Clock, SystemClock
from pdauth.crypto import KeyRing
from pdauth.sealing import Sealer, TokenColumn
from pdauth.store import ConnectionRow, Store
from pdauth.store.pd_events import PagerDutyEventStore

__all__ = ["DEFAULT_BATCH_SIZE", "RotationReport", "reencrypt_connections"]

DEFAULT_BATCH_SIZE = 500
MAX_ROW_ATTEMPTS = 5


@dataclass(frozen=True)
class RotationReport:
    """What one run of :func:`reencrypt_connections` did."""

    primary_key_id: str
    examined: int
    reencrypted: int
    retried: int  # rows a concurrent refresh changed first (re-read and redone)
    remaining: int  # rows still under an old key afterwards (0: the rotation is complete)
    #: PagerDuty webhook signing secrets (PDAUTH_PAGERDUTY_EVENTS) moved to the primary key.
    subscription_secrets: int = 0


def reencrypt_connections(
    store: Store,
    key_ring: KeyRing,
    *,
    clock: Clock | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batches: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RotationReport:
    """Re-encrypt every connection's tokens under ``key_ring``'s primary key.

    ``max_batches`` stops early (the next run resumes); ``progress(examined, reencrypted)`` is
    called after each batch. Raises :class:`~pdauth.errors.KeyNotFoundError` if a row names a
    key the ring lacks and :class:`~pdauth.errors.DecryptionError` for a tampered row, having
    committed every row before it.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    clock = clock or SystemClock()
    primary = key_ring.primary_key_id
    examined = reencrypted = retried = batches = 0
    cursor: str | None = None
    while max_batches is None or batches < max_batches:
        rows = store.rows_needing_reencryption(
            primary_key_id=primary, limit=batch_size, after_id=cursor
        )
        if not rows:
            break
        batches += 1
        for row in rows:
            examined += 1
            done, races = _reencrypt_row(store, key_ring, row, clock)
            reencrypted += done
            retried += races
        cursor = rows[-1].id
        if progress is not None:
            progress(examined, reencrypted)
    remaining = len(store.rows_needing_reencryption(primary_key_id=primary, limit=1000))
    secrets = reencrypt_subscription_secrets(store, key_ring)
    return RotationReport(primary, examined, reencrypted, retried, remaining, secrets)


def reencrypt_subscription_secrets(store: Store, key_ring: KeyRing) -> int:
    """Move every stored PagerDuty webhook signing secret to the primary key; returns how many.

    Each swap is fenced by the old ciphertext: a secret replaced meanwhile (a new subscription)
    is left alone and picked up by the next run.
    """
    subscriptions = PagerDutyEventStore(store)
    sealer = Sealer(key_ring)
    moved = 0
    while True:
        rows = subscriptions.secrets_not_under(key_ring.primary_key_id)
        progressed = False
        for row in rows:
            assert row.secret_ct is not None  # selected for it
            new = sealer.reseal_subscription_secret(row.connection_id, row.key, row.secret_ct)
            if subscriptions.replace_secret(row.connection_id, old=row.secret_ct, new=new):
                moved += 1
                progressed = True
        if not rows or not progressed:
            return moved


def _reencrypt_row(
    store: Store, key_ring: KeyRing, row: ConnectionRow, clock: Clock
) -> tuple[int, int]:
    """Move one row to the primary key; returns (rows re-encrypted, races lost)."""
    races = 0
    current: ConnectionRow | None = row
    for _ in range(MAX_ROW_ATTEMPTS):
        if current is None or current.key_id in (None, key_ring.primary_key_id):
            return 0, races  # gone, wiped, or a refresh already wrote it under the new key
        sealer = Sealer(key_ring)
        access = _moved(sealer, current, "access_token", current.access_token_ct)
        refresh = _moved(sealer, current, "refresh_token", current.refresh_token_ct)
        if store.replace_ciphertexts(
            current.id,
            expected_version=current.token_version,
            access_token_ct=access,
            refresh_token_ct=refresh,
            key_id=key_ring.primary_key_id,
            now=clock.now(),
        ):
            return 1, races
        races += 1
        current = store.get_connection(row.id)
    return 0, races  # kept changing under us; the next run picks it up


def _moved(
    sealer: Sealer, row: ConnectionRow, column: TokenColumn, ciphertext: str | None
) -> str | None:
    if ciphertext is None:
        return None
    return sealer.reseal_token(row, column, ciphertext)
