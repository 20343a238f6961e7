"""Alembic environment: runs migrations on the connection :func:`pdauth.store.upgrade` hands in.

pdauth has no alembic.ini: the caller builds the Config in code, opens a connection on the
store's engine (SQLite pragmas included), begins the one transaction the whole upgrade runs
in, and passes the connection as ``config.attributes["connection"]``. Alembic sees an
external transaction and leaves committing to the caller, so an upgrade is all or nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from pdauth.errors import ConfigurationError
from pdauth.store.schema import metadata

__all__: list[str] = []


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, sa.Connection):
        raise ConfigurationError(
            "pdauth migrations run through pdauth.store.upgrade(url) or `pdauth db upgrade`"
        )
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite can run DDL inside a transaction once pysqlite stops committing on its own
        # (pdauth.store.engine takes over BEGIN), so both backends migrate atomically.
        transactional_ddl=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


_run()
