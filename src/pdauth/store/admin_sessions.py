"""Server-side admin sessions: created at sign-in, ended by sign-out, idleness or a new password.

The admin cookie carries a random id; this table keeps only its SHA-256 (``id_hash``), so
reading the table signs nobody in. Each row also keeps a fingerprint of the admin password it
was opened under (an HMAC the caller computes; never the password): :meth:`check_admin_session`
refuses, and deletes, a session whose fingerprint is not the current one, so changing
``PDAUTH_ADMIN_PASSWORD`` ends every admin session at once.
"""

from __future__ import annotations

import sqlalchemy as sa

from pdauth.store.base import StoreBase
from pdauth.store.schema import admin_sessions

__all__ = ["AdminSessionTable"]

_a = admin_sessions.c


def _check_hash(value: str, name: str) -> str:
    if not isinstance(value, str) or not 16 <= len(value) <= 64:
        raise ValueError(f"{name} must be a hex digest of 16 to 64 characters")
    return value


class AdminSessionTable(StoreBase):
    """The ``admin_sessions`` table's operations (part of :class:`pdauth.store.Store`)."""

    def create_admin_session(
        self, id_hash: str, *, password_fingerprint: str, now: float, expires_at: float
    ) -> None:
        """Open a session (expired rows are purged in the same transaction)."""
        now = float(now)
        insert = sa.insert(admin_sessions).values(
            id_hash=_check_hash(id_hash, "id_hash"),
            password_fingerprint=_check_hash(password_fingerprint, "password_fingerprint"),
            created_at=now,
            last_seen_at=now,
            expires_at=float(expires_at),
        )
        purge = sa.delete(admin_sessions).where(_a.expires_at <= now)

        def work(conn: sa.Connection) -> None:
            conn.execute(purge)
            conn.execute(insert)

        self._run("create_admin_session", work, write=True)

    def check_admin_session(
        self,
        id_hash: str,
        *,
        password_fingerprint: str,
        now: float,
        idle_timeout: float,
        touch_interval: float = 60.0,
    ) -> bool:
        """True if the session is live; it is then marked seen (at most once per interval).

        A session past its lifetime, idle for ``idle_timeout`` seconds or opened under
        another admin password is deleted and refused.
        """
        now = float(now)
        select = sa.select(_a.password_fingerprint, _a.last_seen_at, _a.expires_at).where(
            _a.id_hash == id_hash
        )

        def work(conn: sa.Connection) -> bool:
            row = conn.execute(select).first()
            if row is None:
                return False
            fingerprint, last_seen, expires_at = row
            live = (
                fingerprint == password_fingerprint
                and now < float(expires_at)
                and now - float(last_seen) < idle_timeout
            )
            if not live:
                conn.execute(sa.delete(admin_sessions).where(_a.id_hash == id_hash))
            elif now - float(last_seen) >= touch_interval:
                conn.execute(
                    sa.update(admin_sessions).where(_a.id_hash == id_hash).values(last_seen_at=now)
                )
            return live

        return self._run("check_admin_session", work, write=True)

    def delete_admin_session(self, id_hash: str) -> bool:
        """End one session (sign-out); True if it existed."""
        stmt = sa.delete(admin_sessions).where(_a.id_hash == id_hash)
        return self._run(
            "delete_admin_session", lambda conn: conn.execute(stmt).rowcount > 0, write=True
        )

    def delete_admin_sessions(self) -> int:
        """End every admin session; returns how many."""
        stmt = sa.delete(admin_sessions)
        return self._run(
            "delete_admin_sessions", lambda conn: int(conn.execute(stmt).rowcount), write=True
        )
