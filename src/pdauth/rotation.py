"""Key rotation: re-encrypt every stored token under the newest key — in batches, online, resumable.

The procedure (SECURITY-CHECKLIST §H.32): ``pdauth keys generate`` prints a new key. (1) Add
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

This module also holds the ``pdauth keys generate|rotate`` and ``pdauth db upgrade`` commands.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pdauth.clock import Clock, SystemClock
from pdauth.commands import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Progress, epilog, print_json
from pdauth.commands._output import report_error
from pdauth.crypto import KeyRing, format_key, generate_key
from pdauth.errors import ConfigurationError, CryptoError, StoreError
from pdauth.store import ConnectionRow, Store
from pdauth.tokens import token_binding

__all__ = [
    "RotationReport",
    "add_db_command",
    "add_keys_command",
    "reencrypt_connections",
]

DEFAULT_BATCH_SIZE = 500
MAX_ROW_ATTEMPTS = 5
_ENV_KEYS = "PDAUTH_ENCRYPTION_KEYS"
_ENV_DB = "PDAUTH_DATABASE_URL"
_DEFAULT_DB = "sqlite:///./pdauth.db"


@dataclass(frozen=True)
class RotationReport:
    """What one run of :func:`reencrypt_connections` did."""

    primary_key_id: str
    examined: int
    reencrypted: int
    retried: int  # rows a concurrent refresh changed first (re-read and redone)
    remaining: int  # rows still under an old key afterwards (0: the rotation is complete)


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
    return RotationReport(primary, examined, reencrypted, retried, remaining)


def _reencrypt_row(
    store: Store, key_ring: KeyRing, row: ConnectionRow, clock: Clock
) -> tuple[int, int]:
    """Move one row to the primary key; returns (rows re-encrypted, races lost)."""
    races = 0
    current: ConnectionRow | None = row
    for _ in range(MAX_ROW_ATTEMPTS):
        if current is None or current.key_id in (None, key_ring.primary_key_id):
            return 0, races  # gone, wiped, or a refresh already wrote it under the new key
        access = _moved(key_ring, current.access_token_ct, token_binding(current, "access_token"))
        refresh = _moved(
            key_ring, current.refresh_token_ct, token_binding(current, "refresh_token")
        )
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


def _moved(key_ring: KeyRing, ciphertext: str | None, associated_data: bytes) -> str | None:
    if ciphertext is None:
        return None
    return key_ring.reencrypt(ciphertext, associated_data)


# -- command line ----------------------------------------------------------------------------


def _parser(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse.ArgumentParser:
    return actions.add_parser(
        name,
        help=help_text,
        description=help_text[:1].upper() + help_text[1:] + ".",
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_keys_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pdauth keys generate|rotate``."""
    keys = _parser(sub, "keys", "generate encryption keys; re-encrypt under the newest")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    generate = _parser(actions, "generate", "print a new key for PDAUTH_ENCRYPTION_KEYS")
    generate.add_argument("--id", dest="key_id", help="key id (default: date + random)")
    generate.add_argument("--json", action="store_true", help='print {"key": …}')
    generate.set_defaults(handler=_cmd_keys_generate)

    rotate = _parser(
        actions,
        "rotate",
        "re-encrypt every stored token under the first key of PDAUTH_ENCRYPTION_KEYS",
    )
    rotate.epilog = epilog(
        "Resumable: each row commits on its own, so an interrupted run is simply started "
        "again. Exit code 1 also means rows remain under an old key (run it again).",
    )
    rotate.add_argument("--database-url", help=f"default: ${_ENV_DB} or {_DEFAULT_DB}")
    rotate.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    rotate.add_argument("--json", action="store_true", help="print the report as JSON")
    rotate.set_defaults(handler=_cmd_keys_rotate)


def add_db_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pdauth db upgrade``."""
    db = _parser(sub, "db", "database schema")
    actions = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = _parser(actions, "upgrade", "migrate the database to the newest schema")
    upgrade.add_argument("--database-url", help=f"default: ${_ENV_DB} or {_DEFAULT_DB}")
    upgrade.add_argument("--json", action="store_true", help="print the result as JSON")
    upgrade.set_defaults(handler=_cmd_db_upgrade)


def _database_url(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    url = args.database_url or env.get(_ENV_DB, "").strip() or _DEFAULT_DB
    return str(url)


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    try:
        key = generate_key(args.key_id)
    except ValueError as exc:
        report_error("keys generate", str(exc))
        return EXIT_USAGE
    # The key goes to stdout only (pipe it into your secret store); guidance to stderr.
    if args.json:
        print_json({"key": format_key(key), "key_id": key.key_id})
    else:
        print(format_key(key))
    print(
        f"Add this entry LAST to {_ENV_KEYS} and deploy; then move it FIRST and deploy "
        "again; then run `pdauth keys rotate`. Keep the old keys until it reports 0 remaining.",
        file=sys.stderr,
    )
    return EXIT_OK


def _cmd_keys_rotate(args: argparse.Namespace) -> int:
    env = os.environ
    try:
        key_ring = KeyRing.from_config(env.get(_ENV_KEYS, ""))
    except ConfigurationError as exc:
        report_error("keys rotate", str(exc))
        return EXIT_USAGE
    if args.batch_size < 1:
        report_error("keys rotate", "--batch-size must be at least 1")
        return EXIT_USAGE
    store = Store(_database_url(args, env))
    try:
        # The bar counts every connection: rows already under the primary key are done too.
        total = sum(store.count_by_status().values())
        with Progress("re-encrypting", total) as bar:
            report = reencrypt_connections(
                store,
                key_ring,
                batch_size=args.batch_size,
                progress=lambda examined, reencrypted: bar.update(
                    examined, f"{reencrypted} re-encrypted"
                ),
            )
            bar.update(total, f"{report.reencrypted} re-encrypted")
    except (StoreError, CryptoError) as exc:
        report_error("keys rotate", str(exc))
        return EXIT_FAILURE
    finally:
        store.dispose()
    if args.json:
        print_json(
            {
                "primary_key_id": report.primary_key_id,
                "examined": report.examined,
                "reencrypted": report.reencrypted,
                "retried": report.retried,
                "remaining": report.remaining,
            }
        )
    else:
        print(
            f"primary key {report.primary_key_id}: examined {report.examined}, "
            f"re-encrypted {report.reencrypted}, raced {report.retried}, "
            f"remaining {report.remaining}"
        )
    return EXIT_OK if report.remaining == 0 else EXIT_FAILURE


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    store = Store(_database_url(args, os.environ))
    try:
        store.upgrade()
        revision = store.current_revision()
    except StoreError as exc:
        report_error("db upgrade", str(exc))
        return EXIT_FAILURE
    finally:
        store.dispose()
    # store.url has any password masked.
    if args.json:
        print_json({"database": store.url, "revision": revision})
    else:
        print(f"database {store.url} is at revision {revision}")
    return EXIT_OK
