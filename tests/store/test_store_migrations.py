"""Migrations: an empty database upgrades to head, idempotently, to exactly the metadata."""

from __future__ import annotations

import os
import stat

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from pdauth.store import Store, upgrade
from pdauth.store.migrate import head_revision
from pdauth.store.schema import metadata


def test_empty_database_upgrades_to_head(db_url: str) -> None:
    with Store(db_url) as store:
        assert store.current_revision() is None
        assert not store.is_up_to_date()
        store.upgrade()
        assert store.current_revision() == head_revision()
        assert (head_revision() or "") >= "0002"
        assert store.is_up_to_date()
        tables = set(sa.inspect(store.engine).get_table_names())
        assert {"connections", "pending_authorizations", "events", "alembic_version"} <= tables


def test_module_level_upgrade_for_the_cli_is_idempotent(db_url: str) -> None:
    upgrade(db_url)
    upgrade(db_url)
    with Store(db_url) as store:
        assert store.is_up_to_date()
        assert store.current_revision() == head_revision()


def test_migrated_schema_matches_the_metadata(store: Store) -> None:
    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diffs == []


def test_indexes_and_partial_unique_indexes_exist(store: Store) -> None:
    indexes = {ix["name"]: ix for ix in sa.inspect(store.engine).get_indexes("connections")}
    assert {
        "ix_connections_owner",
        "ix_connections_status",
        "ix_connections_refresh_expires_at",
        "uq_connections_user_grant",
        "uq_connections_app_grant",
    } <= set(indexes)
    assert indexes["uq_connections_user_grant"]["unique"]
    assert indexes["uq_connections_app_grant"]["unique"]


def test_check_constraints_refuse_bad_enumerations(store: Store) -> None:
    from pdauth.store.schema import connections

    row = {
        "id": "pdc_x",
        "owner": "o",
        "kind": "robot",
        "region": "us",
        "account_id": "A",
        "scopes": "",
        "status": "active",
        "token_version": 1,
        "created_at": 1.0,
        "updated_at": 1.0,
    }
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(sa.insert(connections).values(**row))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_connection_settings_and_private_file(db_url: str) -> None:
    with Store(db_url) as store:
        store.upgrade()
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()) >= 10_000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        path = store.engine.url.database
        assert path is not None
        for suffix in ("", "-wal", "-shm"):
            mode = stat.S_IMODE(os.stat(path + suffix).st_mode)
            assert mode & 0o077 == 0, (suffix, oct(mode))


def test_ensure_schema_refuses_an_unmigrated_database_and_upgrades_on_request(
    db_url: str,
) -> None:
    from pdauth.errors import ConfigurationError

    with Store(db_url) as store:
        with pytest.raises(ConfigurationError, match="pdauth db upgrade") as caught:
            store.ensure_schema()
        assert "no such table" not in str(caught.value).lower()
        assert store.current_revision() is None
        store.ensure_schema(upgrade=True)
        assert store.is_up_to_date()
        store.ensure_schema()  # current: nothing to say


def test_ensure_schema_refuses_a_database_from_a_newer_pdauth(store: Store) -> None:
    from pdauth.errors import ConfigurationError

    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    for migrate_too in (False, True):
        with pytest.raises(ConfigurationError, match="newer pdauth"):
            store.ensure_schema(upgrade=migrate_too)


def test_0002_downgrades_to_0001_and_upgrades_again(db_url: str) -> None:
    from alembic import command

    from pdauth.store.migrate import alembic_config

    store = Store(db_url)
    store.upgrade()

    def run(step: str, target: str) -> None:
        config = alembic_config()
        with store.engine.connect() as connection, connection.begin():
            config.attributes["connection"] = connection
            getattr(command, step)(config, target)

    run("downgrade", "0001")
    inspector = sa.inspect(store.engine)
    assert "admin_sessions" not in inspector.get_table_names()
    assert "missing_scopes" not in {c["name"] for c in inspector.get_columns("connections")}
    pending_columns = {c["name"] for c in inspector.get_columns("pending_authorizations")}
    assert not {"expected_account", "expected_user", "connection_id"} & pending_columns
    run("upgrade", "head")
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    store.dispose()
