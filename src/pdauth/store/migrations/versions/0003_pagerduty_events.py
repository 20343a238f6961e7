"""PagerDuty's events per connection: webhook subscriptions and received deliveries.

Adds ``pd_subscriptions`` (one row per connection: the receiver URL's unguessable key,
PagerDuty's subscription id, the signing secret sealed, a state and the retry schedule) and
``pd_deliveries`` (the ``X-Webhook-Id`` of every delivery accepted, for de-duplication).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pd_subscriptions",
        sa.Column("connection_id", sa.String(40), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("pd_subscription_id", sa.String(64), nullable=True),
        sa.Column("secret_ct", sa.Text(), nullable=True),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Double(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("connection_id", name=op.f("pk_pd_subscriptions")),
        sa.UniqueConstraint("key", name=op.f("uq_pd_subscriptions_key")),
    )
    op.create_table(
        "pd_deliveries",
        sa.Column("webhook_id", sa.String(128), nullable=False),
        sa.Column("subscription_key", sa.String(64), nullable=False),
        sa.Column("connection_id", sa.String(40), nullable=False),
        sa.Column("received_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("webhook_id", name=op.f("pk_pd_deliveries")),
    )
    op.create_index("ix_pd_deliveries_received_at", "pd_deliveries", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_pd_deliveries_received_at", table_name="pd_deliveries")
    op.drop_table("pd_deliveries")
    op.drop_table("pd_subscriptions")
