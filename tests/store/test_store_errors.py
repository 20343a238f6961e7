"""Failures surface as typed errors that name the operation and never leak values or passwords."""

from __future__ import annotations

import traceback

import pytest
import sqlalchemy as sa

from pdauth.errors import ConfigurationError, StoreError
from pdauth.store import Store

from .store_helpers import T0, new_connection, new_pending

PASSWORD = "s3cr3t-Passw0rd"


@pytest.fixture(params=["sqlite", "postgres"])
def unreachable_url(request: pytest.FixtureRequest, pg_url: str, tmp_path: object) -> str:
    """A URL of each backend that cannot be opened (closed port / missing directory)."""
    if request.param == "postgres":
        # Port 1 on loopback: nothing listens there, so the connection is refused at once.
        url = sa.engine.make_url(pg_url)
        return url.set(port=1, username="pdauth", password=PASSWORD).render_as_string(
            hide_password=False
        )
    return f"sqlite:///{tmp_path}/no/such/dir/pdauth.db"


def test_unreachable_database_is_a_store_error_without_the_password(
    unreachable_url: str,
) -> None:
    store = Store(unreachable_url)
    try:
        assert PASSWORD not in store.url
        assert PASSWORD not in repr(store)
        with pytest.raises(StoreError, match="during get_connection") as info:
            store.get_connection("pdc_x")
        with pytest.raises(StoreError, match="during upgrade"):
            store.upgrade()
    finally:
        store.dispose()
    rendered = "".join(traceback.format_exception(info.value))
    assert PASSWORD not in rendered
    assert info.value.__suppress_context__
    assert info.value.__cause__ is None


def test_unmigrated_database_is_a_store_error_naming_the_operation(db_url: str) -> None:
    with Store(db_url) as store, pytest.raises(StoreError, match="during list_connections"):
        store.list_connections()


def test_write_errors_carry_no_values(db_url: str) -> None:
    rec = new_connection(owner="owner-with-a-distinctive-name")
    with Store(db_url) as store:
        store.upgrade()
        with store.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE connections"))
        with pytest.raises(StoreError, match="during upsert_connection") as info:
            store.upsert_connection(rec, T0)
    rendered = "".join(traceback.format_exception(info.value))
    for value in (rec.owner, rec.access_token_ct, rec.refresh_token_ct or "", rec.account_id):
        assert value not in rendered


def test_integrity_errors_are_store_errors_without_values(store: Store) -> None:
    rec = new_pending("dup", owner="distinctive-owner-name")
    store.create_pending(rec, T0)
    with pytest.raises(StoreError, match="during create_pending") as info:
        store.create_pending(rec, T0)
    rendered = "".join(traceback.format_exception(info.value))
    assert rec.state_hash not in rendered
    assert rec.owner not in rendered


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "not a valid database URL"),
        ("mysql://u@h/db", "only sqlite"),
        ("postgresql+psycopg2://u@h/db", "psycopg 3"),
        ("sqlite+aiosqlite:///x.db", "pysqlite"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite:///file:mem?mode=memory&uri=true", "in-memory"),
    ],
)
def test_unusable_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        Store(url)
    assert "PDAUTH_DATABASE_URL" in str(info.value)


def test_postgres_urls_are_pinned_to_psycopg_and_mask_the_password() -> None:
    for url in (f"postgres://u:{PASSWORD}@h/db", f"postgresql://u:{PASSWORD}@h/db"):
        store = Store(url)
        try:
            assert store.dialect == "postgresql"
            assert store.url == "postgresql+psycopg://u:***@h/db"
        finally:
            store.dispose()


def test_an_unreachable_database_names_the_setting_and_the_fix(unreachable_url: str) -> None:
    with Store(unreachable_url) as store, pytest.raises(StoreError) as info:
        store.list_connections()
    message = str(info.value)
    assert "PDAUTH_DATABASE_URL" in message
    assert PASSWORD not in message
    if store.dialect == "postgresql":
        assert "is PostgreSQL running and reachable" in message
        assert "pdauth:***@" in message  # the masked URL says which server was tried
    else:
        assert "directory must exist" in message


def test_a_reachable_database_error_gets_no_connection_hint(db_url: str) -> None:
    # Negative control: a missing table is not "PostgreSQL is down".
    with Store(db_url) as store, pytest.raises(StoreError) as info:
        store.list_connections()
    assert "PDAUTH_DATABASE_URL" not in str(info.value)


_WITHOUT_PSYCOPG = """
import sys
sys.modules["psycopg"] = None  # what an install without the pdauth[postgres] extra looks like
from pdauth.errors import ConfigurationError
from pdauth.store import Store
for url in ("postgresql://u@h/db", "postgresql+psycopg://u@h/db", "postgres://u@h/db"):
    try:
        Store(url)
    except ConfigurationError as exc:
        print(exc)
    else:
        print("no error")
Store("sqlite:///" + sys.argv[1]).dispose()  # SQLite needs no extra
print("sqlite ok")
"""


def test_a_postgresql_url_without_psycopg_names_the_extra(tmp_path: object) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PSYCOPG, f"{tmp_path}/pdauth.db"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    lines = result.stdout.splitlines()
    assert lines[-1] == "sqlite ok"
    assert len(lines) == 4
    for line in lines[:3]:
        assert "pip install 'pdauth[postgres]'" in line
        assert "PDAUTH_DATABASE_URL" in line
