"""The tables, as SQLAlchemy Core metadata: the shape the newest migration produces.

Queries in :mod:`pdauth.store.database` are built from these objects. Each table starts from
its frozen first shape in :mod:`pdauth.store.snapshots` (the list its creating migration
used) and adds what later migrations added, each marked with its revision; a test checks
that migrating an empty database yields exactly this metadata. Times are float Unix seconds
(``DOUBLE PRECISION`` on PostgreSQL); token and verifier columns hold ciphertext only.
"""

from __future__ import annotations

import sqlalchemy as sa

from pdauth.store.snapshots import (
    admin_sessions_0002,
    connections_0001,
    events_0001,
    pending_authorizations_0001,
    retry_schedule,
)

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

connections = sa.Table(
    "connections",
    metadata,
    *connections_0001(),
    # 0002. Space-separated scopes PagerDuty said a call needs and the grant lacks (its 403
    # "Token missing required scopes"); NULL when none is known.
    sa.Column("missing_scopes", sa.Text(), nullable=True),
)

pending_authorizations = sa.Table(
    "pending_authorizations",
    metadata,
    *pending_authorizations_0001(),
    # 0002. Who a connect link was meant for (a subdomain or account id; a user id or
    # email): an approval by anyone else stores nothing.
    sa.Column("expected_account", sa.Text(), nullable=True),
    sa.Column("expected_user", sa.Text(), nullable=True),
    # 0002. Set for a re-consent: the connection the approval updates in place.
    sa.Column("connection_id", sa.String(40), nullable=True),
)

events = sa.Table("events", metadata, *events_0001(), sqlite_autoincrement=True)

# Server-side admin sign-in. The cookie carries a random id; only its SHA-256 is stored, so a
# copy of this table signs nobody in. ``password_fingerprint`` is an HMAC of the admin
# password under the session secret (never the password): a password change ends them all.
admin_sessions = sa.Table("admin_sessions", metadata, *admin_sessions_0002())
