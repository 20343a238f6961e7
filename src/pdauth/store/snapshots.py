"""Each table as the migration that created it made it: columns, constraints and indexes.

The migrations (``migrations/versions``) create their tables from these lists and the live
metadata (:mod:`pdauth.store.schema`, :mod:`pdauth.store.pd_events`) starts from the same
lists, then adds what later migrations added; so a table's first shape is written once.
**Frozen:** a database migrated yesterday was built from these exact lists, so editing one
would silently make new databases differ from old ones. A later change is a new migration
plus a line in the live metadata, never an edit here; ``tests/store/test_snapshots.py`` pins
the DDL each list compiles to on SQLite and PostgreSQL, and fails on any edit.

Primary keys are declared on their column and constraints carry short names: the naming
convention of :data:`pdauth.store.schema.metadata` (which Alembic also applies to
``op.create_table``, through the environment's ``target_metadata``) turns them into the stable
names ``pk_<table>``, ``ck_<table>_<name>`` and ``uq_<table>_<column>``.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "admin_sessions_0002",
    "connections_0001",
    "events_0001",
    "pd_deliveries_0003",
    "pd_subscriptions_0003",
    "pending_authorizations_0001",
    "retry_schedule",
]

#: Table items: columns, constraints and indexes, in the order the table lists them.
Items = list[sa.schema.SchemaItem]

# BIGSERIAL on PostgreSQL; on SQLite it must be exactly INTEGER to alias the rowid (the events
# table also sets sqlite_autoincrement, so ids are never reused and the cursor never moves back).
_EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, *, required: bool = True) -> sa.Column[float]:
    """A time: float Unix seconds (``DOUBLE PRECISION`` on PostgreSQL)."""
    return sa.Column(name, sa.Double(), nullable=not required)


def _text(name: str, *, required: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=not required)


def _string(name: str, length: int, *, required: bool = True) -> sa.Column[str]:
    return sa.Column(name, sa.String(length), nullable=not required)


def retry_schedule() -> Items:
    """The columns of work retried on a schedule (the event outbox, PagerDuty webhook
    subscriptions): attempts so far, when the next is due (NULL: not due), the last error."""
    return [
        sa.Column("attempts", sa.Integer(), nullable=False),
        _time("next_attempt_at", required=False),
        _text("last_error"),
    ]


def _grant_indexes() -> Items:
    # Reconnecting the same PagerDuty user (or the same app grant) for the same owner
    # updates that row. NULL never equals NULL in a unique index, so app grants get their
    # own partial index instead of a placeholder user id.
    where_user = sa.text("pd_user_id IS NOT NULL")
    where_app = sa.text("pd_user_id IS NULL")
    return [
        sa.Index(
            "uq_connections_user_grant", "owner", "kind", "account_id", "pd_user_id",
            unique=True, sqlite_where=where_user, postgresql_where=where_user,
        ),
        sa.Index(
            "uq_connections_app_grant", "owner", "kind", "account_id",
            unique=True, sqlite_where=where_app, postgresql_where=where_app,
        ),
    ]  # fmt: skip


def connections_0001() -> Items:
    """``connections``, revision 0001. Token columns hold ciphertext only."""
    return [
        _string("id", 40),
        _string("owner", 255),
        _string("kind", 8),
        _string("region", 8),
        _string("account_id", 255),
        _text("subdomain"),
        _string("pd_user_id", 255, required=False),
        _text("pd_user_name"),
        _text("pd_user_email"),
        _text("delegation_id"),
        _text("scopes", required=True),
        _string("status", 16),
        _text("access_token_ct"),
        _text("refresh_token_ct"),
        _string("key_id", 64, required=False),
        _time("access_expires_at", required=False),
        _time("refresh_expires_at", required=False),
        sa.Column("token_version", sa.Integer(), nullable=False),
        _string("lease_owner", 255, required=False),
        _time("lease_until", required=False),
        _time("created_at"),
        _time("updated_at"),
        _time("last_refreshed_at", required=False),
        _time("last_used_at", required=False),
        _string("last_error_code", 64, required=False),
        _text("last_error_message"),
        _time("last_error_at", required=False),
        sa.PrimaryKeyConstraint("id"),
        sa.CheckConstraint("kind IN ('user', 'app')", name="kind"),
        sa.CheckConstraint("region IN ('us', 'eu')", name="region"),
        sa.CheckConstraint("status IN ('active', 'needs_reauth', 'revoked')", name="status"),
        sa.CheckConstraint(
            "(kind = 'user' AND pd_user_id IS NOT NULL) OR (kind = 'app' AND pd_user_id IS NULL)",
            name="user_id_matches_kind",
        ),
        sa.CheckConstraint("token_version >= 1", name="token_version"),
        sa.Index("ix_connections_owner", "owner"),
        sa.Index("ix_connections_status", "status"),
        sa.Index("ix_connections_refresh_expires_at", "refresh_expires_at"),
        *_grant_indexes(),
    ]


def pending_authorizations_0001() -> Items:
    """``pending_authorizations``, revision 0001: a flow begun and not yet completed, found by
    the SHA-256 of its state; the PKCE verifier is ciphertext."""
    return [
        _string("state_hash", 64),
        _string("owner", 255),
        _string("binding_hash", 128),
        _text("verifier_ct", required=True),
        _text("redirect_uri", required=True),
        _text("scopes", required=True),
        _text("return_to"),
        _time("created_at"),
        _time("expires_at"),
        sa.PrimaryKeyConstraint("state_hash"),
        sa.Index("ix_pending_authorizations_owner", "owner"),
        sa.Index("ix_pending_authorizations_binding_hash", "binding_hash"),
        sa.Index("ix_pending_authorizations_expires_at", "expires_at"),
    ]


def events_0001() -> Items:
    """``events``, revision 0001: the outbox (create the table with ``sqlite_autoincrement``)."""
    return [
        sa.Column("id", _EVENT_ID, autoincrement=True, nullable=False),
        _string("type", 64),
        _string("connection_id", 40, required=False),
        _string("owner", 255, required=False),
        _text("data", required=True),
        _time("created_at"),
        _time("delivered_at", required=False),
        *retry_schedule(),
        sa.PrimaryKeyConstraint("id"),
        sa.Index("ix_events_connection_id", "connection_id"),
        sa.Index("ix_events_owner", "owner"),
        sa.Index(
            "ix_events_due",
            "next_attempt_at",
            sqlite_where=sa.text("delivered_at IS NULL"),
            postgresql_where=sa.text("delivered_at IS NULL"),
        ),
    ]


def admin_sessions_0002() -> Items:
    """``admin_sessions``, revision 0002: the SHA-256 of each session cookie's random id and
    an HMAC fingerprint of the admin password (never the password)."""
    return [
        _string("id_hash", 64),
        _string("password_fingerprint", 64),
        _time("created_at"),
        _time("last_seen_at"),
        _time("expires_at"),
        sa.PrimaryKeyConstraint("id_hash"),
        sa.Index("ix_admin_sessions_expires_at", "expires_at"),
    ]


def pd_subscriptions_0003() -> Items:
    """``pd_subscriptions``, revision 0003: one PagerDuty webhook subscription per connection;
    ``key`` is the receiver URL's unguessable last segment, ``secret_ct`` ciphertext."""
    return [
        _string("connection_id", 40),
        _string("key", 64),
        _string("state", 16),
        _string("pd_subscription_id", 64, required=False),
        _text("secret_ct"),
        _text("events", required=True),
        *retry_schedule(),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("connection_id"),
        sa.UniqueConstraint("key"),
    ]


def pd_deliveries_0003() -> Items:
    """``pd_deliveries``, revision 0003: the ``X-Webhook-Id`` of every delivery accepted."""
    return [
        _string("webhook_id", 128),
        _string("subscription_key", 64),
        _string("connection_id", 40),
        _time("received_at"),
        sa.PrimaryKeyConstraint("webhook_id"),
        sa.Index("ix_pd_deliveries_received_at", "received_at"),
    ]
