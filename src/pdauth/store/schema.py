"""The tables, as SQLAlchemy Core metadata: the shape the newest migration produces.

Queries in :mod:`pdauth.store.database` are built from these objects; the migrations in
``migrations/versions`` are frozen snapshots written out by hand, and a test checks that
migrating an empty database yields exactly this metadata. Times are float Unix seconds
(``DOUBLE PRECISION`` on PostgreSQL); token and verifier columns hold ciphertext only.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "admin_sessions",
    "connections",
    "events",
    "metadata",
    "pending_authorizations",
    "retry_schedule",
]

# Deterministic constraint names, identical on SQLite and PostgreSQL, so later migrations
# can drop or alter them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# BIGSERIAL on PostgreSQL; on SQLite it must be exactly INTEGER to alias the rowid, and
# AUTOINCREMENT keeps ids from being reused, so the event cursor never moves backwards.
_EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def retry_schedule() -> tuple[sa.Column[int], sa.Column[float], sa.Column[str]]:
    """The columns of work retried on a schedule (the event outbox, PagerDuty webhook
    subscriptions): attempts so far, when the next is due (NULL: not due), the last error."""
    return (
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Double(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
    )


connections = sa.Table(
    "connections",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
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
    # Space-separated scopes PagerDuty said a call needs and the grant lacks (its 403
    # "Token missing required scopes"); NULL when none is known.
    sa.Column("missing_scopes", sa.Text(), nullable=True),
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
    # Reconnecting the same PagerDuty user (or the same app grant) for the same owner
    # updates that row. NULL never equals NULL in a unique index, so app grants get their
    # own partial index instead of a placeholder user id.
    sa.Index(
        "uq_connections_user_grant",
        "owner",
        "kind",
        "account_id",
        "pd_user_id",
        unique=True,
        sqlite_where=sa.text("pd_user_id IS NOT NULL"),
        postgresql_where=sa.text("pd_user_id IS NOT NULL"),
    ),
    sa.Index(
        "uq_connections_app_grant",
        "owner",
        "kind",
        "account_id",
        unique=True,
        sqlite_where=sa.text("pd_user_id IS NULL"),
        postgresql_where=sa.text("pd_user_id IS NULL"),
    ),
)

pending_authorizations = sa.Table(
    "pending_authorizations",
    metadata,
    sa.Column("state_hash", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("binding_hash", sa.String(128), nullable=False),
    sa.Column("verifier_ct", sa.Text(), nullable=False),
    sa.Column("redirect_uri", sa.Text(), nullable=False),
    sa.Column("scopes", sa.Text(), nullable=False),
    sa.Column("return_to", sa.Text(), nullable=True),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("expires_at", sa.Double(), nullable=False),
    # Who a connect link was meant for (a subdomain or account id; a user id or email):
    # an approval by anyone else stores nothing.
    sa.Column("expected_account", sa.Text(), nullable=True),
    sa.Column("expected_user", sa.Text(), nullable=True),
    # Set for a re-consent: the connection the approval updates in place.
    sa.Column("connection_id", sa.String(40), nullable=True),
    sa.Index("ix_pending_authorizations_owner", "owner"),
    sa.Index("ix_pending_authorizations_binding_hash", "binding_hash"),
    sa.Index("ix_pending_authorizations_expires_at", "expires_at"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", _EVENT_ID, primary_key=True, autoincrement=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("connection_id", sa.String(40), nullable=True),
    sa.Column("owner", sa.String(255), nullable=True),
    sa.Column("data", sa.Text(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("delivered_at", sa.Double(), nullable=True),
    *retry_schedule(),
    sa.Index("ix_events_connection_id", "connection_id"),
    sa.Index("ix_events_owner", "owner"),
    sa.Index(
        "ix_events_due",
        "next_attempt_at",
        sqlite_where=sa.text("delivered_at IS NULL"),
        postgresql_where=sa.text("delivered_at IS NULL"),
    ),
    sqlite_autoincrement=True,
)

# Server-side admin sign-in. The cookie carries a random id; only its SHA-256 is stored, so a
# copy of this table signs nobody in. ``password_fingerprint`` is an HMAC of the admin
# password under the session secret (never the password): a password change ends them all.
admin_sessions = sa.Table(
    "admin_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("password_fingerprint", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("last_seen_at", sa.Double(), nullable=False),
    sa.Column("expires_at", sa.Double(), nullable=False),
    sa.Index("ix_admin_sessions_expires_at", "expires_at"),
)
