"""Initial schema: connections, pending_authorizations, events.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    _connections()
    _pending_authorizations()
    _events()


def _connections() -> None:
    op.create_table(
        "connections",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("region", sa.String(8), nullable=False),
        sa.Column("account_id", sa.String(255), nullable=False),
        sa.Column("subdomain", sa.Text(), nullable=True),
        sa.Column("pd_user_id", sa.String(255), nullable=True),
        sa.Column("pd_user_name", sa.Text(), nullable=True),
        sa.Column("pd_user_email", sa.Text(), nullable=True),
        sa.Column("delegation_id", sa.Text(), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("access_token_ct", sa.Text(), nullable=True),
        sa.Column("refresh_token_ct", sa.Text(), nullable=True),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("access_expires_at", sa.Double(), nullable=True),
        sa.Column("refresh_expires_at", sa.Double(), nullable=True),
        sa.Column("token_version", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_until", sa.Double(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("last_refreshed_at", sa.Double(), nullable=True),
        sa.Column("last_used_at", sa.Double(), nullable=True),
        sa.Column("last_error_code", sa.String(64), nullable=True),
        sa.Column("last_error_message", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connections")),
        sa.CheckConstraint("kind IN ('user', 'app')", name=op.f("ck_connections_kind")),
        sa.CheckConstraint("region IN ('us', 'eu')", name=op.f("ck_connections_region")),
        sa.CheckConstraint(
            "status IN ('active', 'needs_reauth', 'revoked')", name=op.f("ck_connections_status")
        ),
        sa.CheckConstraint(
            "(kind = 'user' AND pd_user_id IS NOT NULL) OR (kind = 'app' AND pd_user_id IS NULL)",
            name=op.f("ck_connections_user_id_matches_kind"),
        ),
        sa.CheckConstraint("token_version >= 1", name=op.f("ck_connections_token_version")),
    )
    op.create_index("ix_connections_owner", "connections", ["owner"])
    op.create_index("ix_connections_status", "connections", ["status"])
    op.create_index("ix_connections_refresh_expires_at", "connections", ["refresh_expires_at"])
    op.create_index(
        "uq_connections_user_grant",
        "connections",
        ["owner", "kind", "account_id", "pd_user_id"],
        unique=True,
        sqlite_where=sa.text("pd_user_id IS NOT NULL"),
        postgresql_where=sa.text("pd_user_id IS NOT NULL"),
    )
    op.create_index(
        "uq_connections_app_grant",
        "connections",
        ["owner", "kind", "account_id"],
        unique=True,
        sqlite_where=sa.text("pd_user_id IS NULL"),
        postgresql_where=sa.text("pd_user_id IS NULL"),
    )


def _pending_authorizations() -> None:
    op.create_table(
        "pending_authorizations",
        sa.Column("state_hash", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("binding_hash", sa.String(128), nullable=False),
        sa.Column("verifier_ct", sa.Text(), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("return_to", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_pending_authorizations")),
    )
    op.create_index("ix_pending_authorizations_owner", "pending_authorizations", ["owner"])
    op.create_index(
        "ix_pending_authorizations_binding_hash", "pending_authorizations", ["binding_hash"]
    )
    op.create_index(
        "ix_pending_authorizations_expires_at", "pending_authorizations", ["expires_at"]
    )


def _events() -> None:
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("connection_id", sa.String(40), nullable=True),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("delivered_at", sa.Double(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Double(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_connection_id", "events", ["connection_id"])
    op.create_index("ix_events_owner", "events", ["owner"])
    op.create_index(
        "ix_events_due",
        "events",
        ["next_attempt_at"],
        sqlite_where=sa.text("delivered_at IS NULL"),
        postgresql_where=sa.text("delivered_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("pending_authorizations")
    op.drop_table("connections")
