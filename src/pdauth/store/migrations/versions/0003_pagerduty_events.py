"""PagerDuty's events per connection: webhook subscriptions and received deliveries.

Adds ``pd_subscriptions`` (one row per connection: the receiver URL's unguessable key,
PagerDuty's subscription id, the signing secret sealed, a state and the retry schedule) and
``pd_deliveries`` (the ``X-Webhook-Id`` of every delivery accepted, for de-duplication).
"""

from __future__ import annotations

from alembic import op

from pdauth.store.snapshots import pd_deliveries_0003, pd_subscriptions_0003

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table("pd_subscriptions", *pd_subscriptions_0003())
    op.create_table("pd_deliveries", *pd_deliveries_0003())  # with its index


def downgrade() -> None:
    op.drop_index("ix_pd_deliveries_received_at", table_name="pd_deliveries")
    op.drop_table("pd_deliveries")
    op.drop_table("pd_subscriptions")
