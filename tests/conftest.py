"""Shared fixtures: the anyio backend, a frozen clock, the in-process emulator, and databases.

The emulator: ``emulator_state`` is a fresh seeded emulator on a frozen ``emulator_clock``
(moved only by ``advance``) built from ``emulator_config`` — override that fixture in a
conftest, or parametrize it (``@pytest.mark.parametrize("emulator_config", [...])``), to change
it; ``emulator_app`` is its Starlette app and ``emulator_client`` an ``httpx.AsyncClient``
reaching it through ``httpx.ASGITransport`` at ``http://emulator``. Code that cannot take a
fixture uses tests/emulator_kit.py, which these are built on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from pdauth.clock import FrozenClock

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from pdauth.emulator.config import EmulatorConfig
    from pdauth.emulator.state import EmulatorClock, EmulatorState
    from pdauth.store import Store

PG_URL_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/pdauth_test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


# -- the in-process emulator ------------------------------------------------------------------


# The emulator is imported when a test asks for it, so tests that never use it do not load it.


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    from pdauth.emulator.config import EmulatorConfig

    return EmulatorConfig()


@pytest.fixture
def emulator_clock() -> EmulatorClock:
    from pdauth.emulator.state import EmulatorClock
    from tests.emulator_kit import EMULATOR_START

    return EmulatorClock(start=EMULATOR_START)


@pytest.fixture
def emulator_state(emulator_config: EmulatorConfig, emulator_clock: EmulatorClock) -> EmulatorState:
    from tests.emulator_kit import make_emulator_state

    return make_emulator_state(emulator_config, clock=emulator_clock)


@pytest.fixture
def emulator_app(emulator_state: EmulatorState) -> Starlette:
    from pdauth.emulator.app import create_app

    return create_app(state=emulator_state)


@pytest.fixture
async def emulator_client(emulator_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    from tests.emulator_kit import EMULATOR_BASE

    transport = httpx.ASGITransport(app=emulator_app)
    async with httpx.AsyncClient(transport=transport, base_url=EMULATOR_BASE) as client:
        yield client


# -- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The PostgreSQL URL for tests; `make test` makes sure the server and database exist."""
    return os.environ.get("PDAUTH_TEST_PG_URL", PG_URL_DEFAULT)


# -- databases for pdauth.store (and everything built on it) -------------------------------


def _pg_admin_conninfo(pg_url: str) -> str:
    """A libpq conninfo for the ``postgres`` maintenance database of the pg_url server."""
    from psycopg.conninfo import make_conninfo
    from sqlalchemy.engine import make_url

    url = make_url(pg_url)
    return make_conninfo(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        dbname="postgres",
    )


_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextlib.contextmanager
def _fresh_pg_database(pg_url: str) -> Iterator[str]:
    """Create ``pdauth_t_<random>`` on the pg_url server, yield its URL, drop it afterwards."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    admin = _pg_admin_conninfo(pg_url)
    name = "pdauth_t_" + os.urandom(8).hex()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(params=_BACKENDS)
def db_url(
    request: pytest.FixtureRequest, tmp_path: os.PathLike[str], pg_url: str
) -> Iterator[str]:
    """The URL of an EMPTY, never-migrated database for one test, on each backend.

    sqlite: a file in tmp_path. postgres: a fresh ``pdauth_t_<random>`` database created on
    the server behind ``pg_url`` and dropped after the test, so parallel runs never share one.
    """
    if request.param == "sqlite":
        yield "sqlite:///" + os.path.join(os.fspath(tmp_path), "pdauth.db")
    else:
        with _fresh_pg_database(pg_url) as url:
            yield url


@pytest.fixture(scope="module")
def _pg_store_url(pg_url: str) -> Iterator[str]:
    """A migrated PostgreSQL database shared by one test module (``store`` empties it per test)."""
    from pdauth import store as store_module

    with _fresh_pg_database(pg_url) as url:
        store_module.upgrade(url)
        yield url


@pytest.fixture(scope="session")
def _sqlite_store_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file, copied for each test (cheaper than migrating every time)."""
    from pdauth import store as store_module

    path = os.path.join(os.fspath(tmp_path_factory.mktemp("pdauth-template")), "pdauth.db")
    store_module.upgrade("sqlite:///" + path)  # disposing checkpoints the WAL into the file
    return path


@pytest.fixture(params=_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[Store]:
    """A migrated, empty :class:`pdauth.store.Store` on each backend; disposed after the test.

    sqlite: a fresh copy of a migrated file per test. postgres: this module's own database,
    emptied before each test (a database per test is too slow on a shared machine). Tests
    that change the schema must use ``db_url`` instead. The unmasked URL is
    ``store.engine.url.render_as_string(hide_password=False)``.
    """
    import shutil

    import sqlalchemy as sa

    from pdauth import store as store_module
    from pdauth.store.schema import metadata

    if request.param == "sqlite":
        path = os.path.join(os.fspath(tmp_path), "pdauth.db")
        shutil.copy(request.getfixturevalue("_sqlite_store_template"), path)
        opened = store_module.Store("sqlite:///" + path)
        try:
            yield opened
        finally:
            opened.dispose()
        return
    opened = store_module.Store(request.getfixturevalue("_pg_store_url"))
    try:
        with opened.engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(sa.delete(table))
        yield opened
    finally:
        opened.dispose()
