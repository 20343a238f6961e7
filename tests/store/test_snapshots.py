"""The frozen first shapes of the tables (`pdauth.store.snapshots`) compile to pinned DDL.

Databases already migrated were built from these lists, so any edit to one would make new
databases differ from old ones without a migration. The expected DDL sits in
``tests/store/data/snapshots.<dialect>.sql``, written once from the lists as they shipped;
a mismatch means a snapshot was edited: restore it and add a migration instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from pdauth.store import snapshots
from pdauth.store.schema import NAMING_CONVENTION

DATA = Path(__file__).parent / "data"

Table = tuple[str, Callable[[], snapshots.Items], dict[str, Any]]
TABLES: list[Table] = [
    ("connections", snapshots.connections_0001, {}),
    ("pending_authorizations", snapshots.pending_authorizations_0001, {}),
    ("events", snapshots.events_0001, {"sqlite_autoincrement": True}),
    ("admin_sessions", snapshots.admin_sessions_0002, {}),
    ("pd_subscriptions", snapshots.pd_subscriptions_0003, {}),
    ("pd_deliveries", snapshots.pd_deliveries_0003, {}),
]


def _ddl(dialect: sa.Dialect, tables: list[Table] = TABLES) -> str:
    statements: list[str] = []
    for name, items, options in tables:
        metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
        table = sa.Table(name, metadata, *items(), **options)
        statements.append(str(sa.schema.CreateTable(table).compile(dialect=dialect)))
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            statements.append(str(sa.schema.CreateIndex(index).compile(dialect=dialect)))
    lines = (line.rstrip() for s in statements for line in s.strip().splitlines())
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "dialect", [postgresql.dialect(), sqlite.dialect()], ids=["postgresql", "sqlite"]
)
def test_each_snapshot_compiles_to_its_pinned_ddl(dialect: sa.Dialect) -> None:
    expected = (DATA / f"snapshots.{dialect.name}.sql").read_text()
    assert _ddl(dialect) == expected, "a frozen snapshot changed: add a migration instead"


def test_a_changed_snapshot_is_caught() -> None:
    """Negative control: one column's length changed in a snapshot makes the DDL differ."""
    original = snapshots.pd_deliveries_0003

    def edited() -> snapshots.Items:
        items = original()
        items[0] = sa.Column("webhook_id", sa.String(255), nullable=False)
        return items

    tables = [*TABLES[:5], ("pd_deliveries", edited, {})]
    expected = (DATA / "snapshots.postgresql.sql").read_text()
    assert _ddl(postgresql.dialect(), tables) != expected
    assert _ddl(postgresql.dialect(), TABLES) == expected
