"""Admin sessions, connect-link expectations, re-consent target and missing scopes.

Adds the ``admin_sessions`` table (server-side admin sign-in: only the SHA-256 of the
cookie's random id is stored, with a fingerprint of the admin password so a password change
ends every session); on ``pending_authorizations`` the expected PagerDuty account and user a
connect link was issued for and the connection a re-consent updates; on ``connections`` the
scopes PagerDuty said a call needed and the grant lacks.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pdauth.store.snapshots import admin_sessions_0002

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table("admin_sessions", *admin_sessions_0002())  # with its index
    op.add_column("pending_authorizations", sa.Column("expected_account", sa.Text(), nullable=True))
    op.add_column("pending_authorizations", sa.Column("expected_user", sa.Text(), nullable=True))
    op.add_column(
        "pending_authorizations", sa.Column("connection_id", sa.String(40), nullable=True)
    )
    op.add_column("connections", sa.Column("missing_scopes", sa.Text(), nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMN: none of these columns is in an index or a constraint, which
    # SQLite (3.35 and later) and PostgreSQL both allow without rebuilding the table.
    op.drop_column("connections", "missing_scopes")
    op.drop_column("pending_authorizations", "connection_id")
    op.drop_column("pending_authorizations", "expected_user")
    op.drop_column("pending_authorizations", "expected_account")
    op.drop_index("ix_admin_sessions_expires_at", table_name="admin_sessions")
    op.drop_table("admin_sessions")
