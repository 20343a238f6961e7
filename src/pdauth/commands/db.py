"""``pdauth db upgrade``: migrate the database to the newest schema (Alembic, through the store).

Run it before ``pdauth serve`` (which refuses a schema that is behind) and after each upgrade
of pdauth. The database URL is printed with any password masked.
"""

from __future__ import annotations

import argparse
import os

from pdauth.commands._common import Subcommands, add_command, database_url
from pdauth.commands._output import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, print_json, report_error
from pdauth.errors import ConfigurationError, StoreError
from pdauth.store import Store

__all__ = ["add_db_command"]


def add_db_command(sub: Subcommands) -> None:
    """Register ``pdauth db upgrade``."""
    db = add_command(sub, "db", "database schema")
    actions = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = add_command(actions, "upgrade", "migrate the database to the newest schema")
    upgrade.add_argument(
        "--database-url", help="default: $PDAUTH_DATABASE_URL or sqlite:///./pdauth.db"
    )
    upgrade.add_argument("--json", action="store_true", help="print the result as JSON")
    upgrade.set_defaults(handler=_cmd_db_upgrade)


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    try:
        store = Store(database_url(args.database_url, os.environ))
    except ConfigurationError as exc:  # not a URL, or a database pdauth does not support
        report_error("db upgrade", str(exc))
        return EXIT_USAGE
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
