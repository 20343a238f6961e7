"""Shared fixtures: the anyio backend, a frozen clock, and the PostgreSQL test URL."""

from __future__ import annotations

import os

import pytest

from pdauth.clock import FrozenClock

PG_URL_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/pdauth_test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The PostgreSQL URL for tests; `make test` makes sure the server and database exist."""
    return os.environ.get("PDAUTH_TEST_PG_URL", PG_URL_DEFAULT)
