"""SyncConnector: the Connector's operations from blocking code, on one background loop.

Driven against a real-socket emulator through the real consent flow: begin → Approve →
complete → list/get → access token → a SyncPagerDutyClient on the connection → refresh_due →
disconnect; errors arrive as the Connector's own exception types; several threads share one
SyncConnector; closing it stops its thread; a forgotten one neither hangs the interpreter nor
goes unreported.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pdauth import SyncConnector, SyncPagerDutyClient
from pdauth.connect_flow import UnexpectedGrantError
from pdauth.connections import Connector
from pdauth.errors import (
    AuthorizationDeniedError,
    BindingMismatchError,
    ConnectionNotFoundError,
    UnknownStateError,
)
from tests.integrations.sync_flow import consent, emulator, host_settings

REDIRECT = "http://127.0.0.1:8000/callback"


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    with emulator(REDIRECT) as url:
        yield url


@pytest.fixture
def sync(emulator_url: str, tmp_path: Path) -> Iterator[SyncConnector]:
    with SyncConnector(host_settings(emulator_url, REDIRECT, str(tmp_path / "db.sqlite"))) as s:
        yield s


def connect(sync: SyncConnector, emulator_url: str, owner: str = "user-42") -> str:
    start = sync.begin(owner, return_to="/settings")
    callback = consent(emulator_url, start.url)
    connection, return_to = sync.complete_with_return_to(urlsplit(callback).query, start.binding)
    assert return_to == "/settings"
    return connection.id


def test_the_whole_flow_and_every_operation(sync: SyncConnector, emulator_url: str) -> None:
    connection_id = connect(sync, emulator_url)
    assert isinstance(sync.connector, Connector)
    [listed] = sync.connections("user-42")
    assert listed.id == connection_id
    assert listed.status == "active"
    assert sync.get(connection_id, owner="user-42").user_email == "admin@acme.example"
    assert sync.access_token(connection_id)
    with sync.client(connection_id) as pd:
        assert isinstance(pd, SyncPagerDutyClient)
        me = pd.get("/users/me")
        assert me["user"]["email"] == "admin@acme.example"
        incidents = list(pd.iter_all("/incidents"))
        assert incidents
        # The python-pagerduty conveniences work on the connection's client too.
        assert pd.rget("/users/me")["email"] == "admin@acme.example"
        assert len(pd.list_all("/incidents")) == len(incidents)
    report = sync.refresh_due(horizon=10 * 365 * 86_400.0)
    assert report is not None
    assert sync.disconnect(connection_id, owner="user-42").status == "revoked"
    with pytest.raises(ConnectionNotFoundError):
        sync.get(connection_id, owner="someone-else")


def test_failures_are_the_connectors_exceptions(sync: SyncConnector, emulator_url: str) -> None:
    start = sync.begin("user-42")
    denied = consent(emulator_url, start.url, decision="deny")
    with pytest.raises(AuthorizationDeniedError):
        sync.complete(urlsplit(denied).query, start.binding)
    with pytest.raises(UnknownStateError):  # the state was consumed: a replay is refused
        sync.complete(urlsplit(denied).query, start.binding)
    start = sync.begin("user-42")
    callback = consent(emulator_url, start.url)
    with pytest.raises(BindingMismatchError):
        sync.complete(urlsplit(callback).query, "not-this-browsers-binding")
    assert sync.connections("user-42") == []


def test_threads_share_one_connector(sync: SyncConnector, emulator_url: str) -> None:
    connection_id = connect(sync, emulator_url)
    results: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(sync.get(connection_id).id)
            results.append(sync.access_token(connection_id))
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results.count(connection_id) == 8
    assert len({r for r in results if r != connection_id}) == 1  # one token, no refresh storm


def test_close_stops_the_thread_and_refuses_more_calls(emulator_url: str, tmp_path: Path) -> None:
    sync = SyncConnector(host_settings(emulator_url, REDIRECT, str(tmp_path / "db.sqlite")))
    thread = sync._loop.thread
    assert thread.is_alive()
    assert thread.daemon
    sync.close()
    sync.close()  # idempotent
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        sync.connections()


def test_an_unclosed_sync_connector_lets_the_script_exit_and_says_so(
    emulator_url: str, tmp_path: Path
) -> None:
    """The script prints its result and exits although it never closes anything."""
    database = tmp_path / "db.sqlite"
    host_settings(emulator_url, REDIRECT, str(database))  # migrates the file
    script = textwrap.dedent(
        f"""
        from pdauth import SyncConnector
        from tests.integrations.sync_flow import host_settings

        sync = SyncConnector(host_settings({emulator_url!r}, {REDIRECT!r}, {str(database)!r}))
        print("connections:", len(sync.connections()))
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "connections: 0" in done.stdout
    assert "SyncConnector was not closed" in done.stderr


def test_a_new_database_is_a_clear_error_or_migrated_on_request(
    emulator_url: str, tmp_path: Path
) -> None:
    from pdauth.errors import ConfigurationError
    from tests.service.conftest import make_settings

    fresh = make_settings(f"sqlite:///{tmp_path}/new.db", identity_url=emulator_url)
    with pytest.raises(ConfigurationError, match="pdauth db upgrade"):
        SyncConnector(fresh)
    with SyncConnector(fresh, migrate=True) as sync:
        assert sync.connections() == []


def test_a_forked_child_gets_an_error_not_a_hang(emulator_url: str, tmp_path: Path) -> None:
    """gunicorn --preload forks after import: the child must not wait on a missing thread."""
    import os
    import warnings

    sync = SyncConnector(host_settings(emulator_url, REDIRECT, str(tmp_path / "db.sqlite")))
    try:
        read, write = os.pipe()
        with warnings.catch_warnings():
            # Python >= 3.12 warns that forking a threaded process is risky: that is the point.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: report what a call does, then leave at once
            try:
                sync.connections()
                message = b"no error"
            except RuntimeError as exc:
                message = str(exc).encode()
            os.write(write, message)
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            answer = pipe.read().decode()
        os.waitpid(pid, 0)
        assert "create it in each worker process" in answer
        assert sync.connections() == []  # the parent's SyncConnector still works
    finally:
        sync.close()


def test_expectations_and_pagerduty_events_pass_through(
    sync: SyncConnector, emulator_url: str
) -> None:
    start = sync.begin("user-43", expect_account="someone-elses-subdomain")
    callback = consent(emulator_url, start.url)
    with pytest.raises(UnexpectedGrantError):  # the approver's account is acme
        sync.complete(urlsplit(callback).query, start.binding)
    assert sync.connections("user-43") == []
    seen: list[object] = []
    remove = sync.on_pagerduty_event(seen.append)
    remove()
    status = sync.ensure_subscription(connect(sync, emulator_url, "user-44"))
    assert status.state == "off"  # PDAUTH_PAGERDUTY_EVENTS is not set for this host


def test_every_connector_operation_has_a_blocking_twin_with_its_signature() -> None:
    """A coroutine method added to Connector without its line in SyncConnector fails here."""
    bound = SyncConnector.__new__(SyncConnector)  # bound methods only: no loop is started
    lifecycle = {"open", "aclose"}  # the SyncConnector opens at construction, closes by close()
    for name, method in inspect.getmembers(Connector, inspect.iscoroutinefunction):
        if name.startswith("_") or name in lifecycle:
            continue
        twin = getattr(SyncConnector, name, None)
        assert twin is not None, f"SyncConnector has no {name}"
        if name == "client":  # returns the blocking client instead
            continue
        expected = list(inspect.signature(method).parameters.values())[1:]
        assert list(inspect.signature(getattr(bound, name)).parameters.values()) == expected
