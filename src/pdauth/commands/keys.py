"""``pdauth keys generate|rotate``: make encryption keys and move stored tokens to the newest.

``generate`` prints a new key entry for ``PDAUTH_ENCRYPTION_KEYS`` (stdout only, so it can be
piped into a secret store; the rollout steps go to stderr). ``rotate`` runs
:func:`pdauth.rotation.reencrypt_connections` with a progress bar; the procedure and its
guarantees (online, resumable, fenced by ``token_version``) are in that module's docstring.
"""

from __future__ import annotations

import argparse
import os
import sys

from pdauth.commands._common import Subcommands, add_command, database_url
from pdauth.commands._output import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    Progress,
    print_json,
    report_error,
)
from pdauth.crypto import KeyRing, format_key, generate_key
from pdauth.errors import ConfigurationError, CryptoError, StoreError
from pdauth.rotation import DEFAULT_BATCH_SIZE, reencrypt_connections
from pdauth.store import Store

__all__ = ["add_keys_command"]

_ENV_KEYS = "PDAUTH_ENCRYPTION_KEYS"


def add_keys_command(sub: Subcommands) -> None:
    """Register ``pdauth keys generate|rotate``."""
    keys = add_command(sub, "keys", "generate encryption keys; re-encrypt under the newest")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    generate = add_command(actions, "generate", "print a new key for PDAUTH_ENCRYPTION_KEYS")
    generate.add_argument("--id", dest="key_id", help="key id (default: date + random)")
    generate.add_argument("--json", action="store_true", help='print {"key": …}')
    generate.set_defaults(handler=_cmd_keys_generate)

    rotate = add_command(
        actions,
        "rotate",
        "re-encrypt every stored token under the first key of PDAUTH_ENCRYPTION_KEYS",
        "Resumable: each row commits on its own, so an interrupted run is simply started "
        "again. Exit code 1 also means rows remain under an old key (run it again).",
    )
    rotate.add_argument(
        "--database-url", help="default: $PDAUTH_DATABASE_URL or sqlite:///./pdauth.db"
    )
    rotate.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    rotate.add_argument("--json", action="store_true", help="print the report as JSON")
    rotate.set_defaults(handler=_cmd_keys_rotate)


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
    try:
        store = Store(database_url(args.database_url, env))
    except ConfigurationError as exc:  # not a URL, or a database pdauth does not support
        report_error("keys rotate", str(exc))
        return EXIT_USAGE
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
