"""Initial schema: connections, pending_authorizations, events."""

from __future__ import annotations

from alembic import op

from pdauth.store.snapshots import connections_0001, events_0001, pending_authorizations_0001

revision = "0001"
down_revision = None


def upgrade() -> None:
    # The frozen lists of revision 0001 (see pdauth.store.snapshots: never edited).
    op.create_table("connections", *connections_0001())
    op.create_table("pending_authorizations", *pending_authorizations_0001())
    op.create_table("events", *events_0001(), sqlite_autoincrement=True)


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("pending_authorizations")
    op.drop_table("connections")
