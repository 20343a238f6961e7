"""Engines for SQLite and PostgreSQL, and the translation of driver errors into StoreError.

SQLite gets WAL, a long ``busy_timeout``, foreign keys and full fsync on every connection,
and takes over transaction control from pysqlite so that write transactions can start with
``BEGIN IMMEDIATE``: taking the write lock up front means two writers never both hold a read
snapshot and then deadlock when upgrading to a write (SQLITE_BUSY that busy_timeout cannot
wait out). PostgreSQL goes through psycopg 3. Error messages name the operation and a short
driver reason, never SQL parameters, and a password in the URL is masked everywhere.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Engine, make_url

from pdauth.errors import ConfigurationError, StoreError

__all__ = ["WRITE_OPTION", "create_store_engine", "is_transient", "normalize_url", "store_errors"]

#: Execution option that makes the next transaction on a SQLite connection ``BEGIN IMMEDIATE``.
WRITE_OPTION: Final = "pdauth_write"

SQLITE_BUSY_TIMEOUT_MS: Final = 15_000
# Switching a new SQLite file to WAL: retried every few milliseconds for up to busy_timeout.
_WAL_RETRY_MAX_MS: Final = 20
_WAL_SWITCH_BUDGET_MS: Final = SQLITE_BUSY_TIMEOUT_MS
_PG_TRANSIENT_SQLSTATES: Final = frozenset({"40001", "40P01"})  # serialization, deadlock
_MAX_REASON: Final = 200


def normalize_url(url: str) -> URL:
    """Parse a database URL, pin the driver, and refuse what pdauth cannot serve correctly."""
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError, TypeError):
        raise ConfigurationError(
            "PDAUTH_DATABASE_URL is not a valid database URL "
            "(expected sqlite:///path/to/pdauth.db or postgresql+psycopg://user@host/db)"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend == "postgresql":
        if driver not in ("", "psycopg"):
            raise ConfigurationError("PDAUTH_DATABASE_URL: PostgreSQL is supported via psycopg 3")
        _require_psycopg()
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise ConfigurationError("PDAUTH_DATABASE_URL: SQLite is supported via pysqlite")
        database = parsed.database or ""
        if (
            database in ("", ":memory:")
            or "mode=memory" in database
            or parsed.query.get("mode") == "memory"
        ):
            # Every pooled connection would get its own empty database, so threads (and
            # AsyncStore's worker threads) would not see each other's writes.
            raise ConfigurationError(
                "PDAUTH_DATABASE_URL: an in-memory SQLite database cannot be shared between "
                "threads; use a file, e.g. sqlite:///./pdauth.db"
            )
        return parsed.set(drivername="sqlite+pysqlite")
    raise ConfigurationError(
        "PDAUTH_DATABASE_URL: only sqlite:/// and postgresql+psycopg:// databases are supported"
    )


def _require_psycopg() -> None:
    """psycopg is the optional extra ``pdauth[postgres]``: name it when it is missing."""
    try:
        import psycopg  # noqa: F401 - only PostgreSQL users need it
    except ImportError:
        raise ConfigurationError(
            "PDAUTH_DATABASE_URL is a PostgreSQL URL but psycopg is not installed: "
            "pip install 'pdauth[postgres]'"
        ) from None


def _create_private_file(path: str) -> None:
    """Create the SQLite file owner-only before SQLite does; its -wal/-shm inherit the mode."""
    if path.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError, FileNotFoundError, PermissionError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _switch_to_wal(cursor: sqlite3.Cursor) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds the file.

    Only a new database file is still in rollback mode (WAL is stored in the file). There,
    several processes or threads opening it together each hold a shared lock and want the
    exclusive one to switch: SQLite fails all but one at once with "database is locked"
    instead of calling the busy handler (waiting could deadlock). The winner's switch makes
    the retry a no-op, so a short, jittered retry is enough; the budget matches busy_timeout.
    """
    attempts = _WAL_SWITCH_BUDGET_MS // _WAL_RETRY_MAX_MS
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if attempt == attempts - 1:
                raise
            jitter_ms = random.uniform(_WAL_RETRY_MAX_MS / 4, _WAL_RETRY_MAX_MS)  # noqa: S311
            time.sleep(jitter_ms / 1000)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite must not BEGIN on its own: the "begin" listener emits the right BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL needs a lock another connection may hold.
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA foreign_keys = ON")
        # FULL: a committed token rotation survives power loss (NORMAL may lose it in WAL,
        # and a lost rotation means a dead grant).
        cursor.execute("PRAGMA synchronous = FULL")
    finally:
        cursor.close()


def _on_sqlite_begin(conn: sa.Connection) -> None:
    immediate = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_store_engine(url: URL, *, echo: bool = False) -> Engine:
    """An engine whose logs and errors never show bound parameters (ciphertexts, owners)."""
    try:
        if url.get_backend_name() == "sqlite":
            if url.database:
                _create_private_file(url.database)
            engine = sa.create_engine(url, echo=echo, hide_parameters=True)
            event.listen(engine, "connect", _on_sqlite_connect)
            event.listen(engine, "begin", _on_sqlite_begin)
            return engine
        connect_args: dict[str, Any] = {"application_name": "pdauth"}
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = 10
        return sa.create_engine(
            url,
            echo=echo,
            hide_parameters=True,
            pool_pre_ping=True,
            connect_args=connect_args,
        )
    except (exc.ArgumentError, exc.NoSuchModuleError, ImportError):
        raise ConfigurationError("PDAUTH_DATABASE_URL: cannot create a database engine") from None


def is_transient(error: exc.DBAPIError) -> bool:
    """A PostgreSQL deadlock or serialization failure: the whole transaction may be retried."""
    sqlstate = getattr(error.orig, "sqlstate", None)
    return sqlstate in _PG_TRANSIENT_SQLSTATES


def _reason(error: BaseException, password: str | None) -> str:
    """A short, value-free reason: driver messages, never SQL text or parameters."""
    if isinstance(error, exc.DBAPIError):
        orig = error.orig
        diag = getattr(orig, "diag", None)
        if isinstance(error, exc.IntegrityError):
            constraint = getattr(diag, "constraint_name", None) if diag is not None else None
            if constraint:
                return f"constraint {constraint} violated"
            # SQLite names the constraint or the columns, never the values.
            text = str(orig)
        else:
            primary = getattr(diag, "message_primary", None) if diag is not None else None
            text = primary or str(orig)
        kind = type(error).__name__
    elif isinstance(error, exc.TimeoutError):
        return "timed out waiting for a pooled database connection"
    else:
        kind, text = type(error).__name__, ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    if password:
        line = line.replace(password, "***")
    if len(line) > _MAX_REASON:
        line = line[:_MAX_REASON] + "…"
    return f"{kind}: {line}" if line else kind


def _hint(error: BaseException, url: str | None) -> str:
    """What to do when the database cannot be reached at all (``url`` is password-masked)."""
    if url is None or not isinstance(error, exc.OperationalError):
        return ""
    text = str(error.orig)
    where = f"PDAUTH_DATABASE_URL ({url})"
    if text.startswith("connection failed") or "could not connect" in text:
        return (
            f"; check {where}: is PostgreSQL running and reachable there, and do the "
            "database and the role exist? (`pdauth doctor` checks it)"
        )
    if "unable to open database file" in text:
        return f"; check {where}: its directory must exist and be writable by pdauth"
    return ""


@contextlib.contextmanager
def store_errors(
    operation: str, password: str | None = None, url: str | None = None
) -> Iterator[None]:
    """Turn any SQLAlchemy error inside the block into a StoreError naming ``operation``.

    With ``url`` (masked), an unreachable database also names PDAUTH_DATABASE_URL and the fix.
    """
    try:
        yield
    except exc.SQLAlchemyError as error:
        # "from None": the chained SQLAlchemy error would carry the SQL statement and
        # driver details into every logged traceback.
        reason = _reason(error, password) + _hint(error, url)
        raise StoreError(f"database error during {operation}: {reason}") from None
