"""Alembic, driven from code: upgrade a database to the newest schema and report its revision.

There is no alembic.ini. The Config is built here with ``script_location`` pointing at the
``migrations`` folder inside this package, and the migration runs on a connection from the
store's own engine, in one transaction (``BEGIN IMMEDIATE`` on SQLite; on PostgreSQL a
transaction-scoped advisory lock, so two instances starting together do not both migrate).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError

from pdauth.store.engine import WRITE_OPTION

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "head_revision",
    "is_known_revision",
    "run_upgrade",
]

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
# Arbitrary but fixed: the key of the PostgreSQL advisory lock held while migrating.
_MIGRATION_LOCK_KEY: Final = 0x7064_6175_7468_0001


def alembic_config() -> Config:
    """An Alembic Config for pdauth's migrations, built without any ini file."""
    config = Config()
    # set_main_option interpolates "%"; escape it so any install path works.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    # Read once per process: the migrations shipped with the package do not change.
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str | None:
    return _scripts().get_current_head()


def is_known_revision(revision: str) -> bool:
    """True if ``revision`` is one of this package's migrations (False: a newer pdauth's)."""
    try:
        return _scripts().get_revision(revision) is not None
    except (CommandError, RevisionError):  # an id this package does not ship
        return False


def current_revision(connection: sa.Connection) -> str | None:
    """The revision recorded in the database, or None for a database never migrated."""
    return MigrationContext.configure(connection).get_current_revision()


def run_upgrade(engine: sa.Engine) -> None:
    """Upgrade to head in one transaction; a no-op when the database is already there."""
    config = alembic_config()
    with engine.connect() as connection:
        connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
