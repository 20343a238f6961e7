"""SyncPagerDutyClient: the async client driven from plain threads, over a real socket."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
from collections.abc import Iterator

import anyio
import pytest

from pdauth.client import LocalPacer, SyncPagerDutyClient
from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.server import EmulatorServer
from pdauth.errors import AuthenticationError, PagerDutyAPIError

from .emulator_helpers import Emulator, RefreshingTokens


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(seed=11)) as srv:
        yield srv


def api_key(server: EmulatorServer) -> str:
    return server.state.directory.api_keys["PACME01"].token


def test_get_iterate_and_fail_like_the_async_client(server: EmulatorServer) -> None:
    with SyncPagerDutyClient.from_token(
        api_key(server), kind="api_key", base_url=server.url, pacer=LocalPacer()
    ) as client:
        page = client.get("/users", params={"limit": 3})
        users = list(client.iter_all("/users"))
        with pytest.raises(PagerDutyAPIError) as caught:
            client.get("/users/PNOPE00")
    assert len(page["users"]) == 3
    assert len({u["id"] for u in users}) == 250
    assert caught.value.status == 404


def test_breaking_out_of_an_iteration_is_clean(server: EmulatorServer) -> None:
    with SyncPagerDutyClient.from_token(
        api_key(server), kind="api_key", base_url=server.url, pacer=LocalPacer()
    ) as client:
        first = []
        for user in client.iter_all("/users", page_size=10):
            first.append(user)
            if len(first) == 15:
                break
        assert len(first) == 15
        assert client.get("/users", params={"limit": 1})["users"]  # still usable


def test_one_client_serves_several_threads(server: EmulatorServer) -> None:
    errors: list[BaseException] = []
    counts: list[int] = []
    with SyncPagerDutyClient.from_token(
        api_key(server), kind="api_key", base_url=server.url, pacer=LocalPacer()
    ) as client:

        def work() -> None:
            try:
                for _ in range(5):
                    counts.append(len(client.get("/users", params={"limit": 2})["users"]))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert counts == [2] * 20


def test_errors_and_refresh_work_through_the_facade() -> None:
    emulator = Emulator.create(access_token_ttl=60)
    issued = anyio.run(emulator.user_tokens)
    tokens = RefreshingTokens(emulator, issued["access_token"], issued["refresh_token"])
    emulator.state.clock.advance(120)
    with SyncPagerDutyClient(
        "http://127.0.0.1", tokens, transport=emulator.transport(), pacer=LocalPacer()
    ) as client:
        assert client.get("/users/me")["user"]["email"] == "admin@acme.example"
    assert tokens.refreshes == 1
    with (
        SyncPagerDutyClient.from_token(
            "bogus",
            base_url="http://127.0.0.1",
            transport=emulator.transport(),
            pacer=LocalPacer(),
        ) as client,
        pytest.raises(AuthenticationError),
    ):
        client.get("/users")


def test_a_closed_client_refuses_calls(server: EmulatorServer) -> None:
    client = SyncPagerDutyClient.from_token(api_key(server), kind="api_key", base_url=server.url)
    client.close()
    client.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        client.get("/users")
    assert "base_url" in repr(client)


def test_bad_arguments_fail_in_the_callers_thread() -> None:
    with pytest.raises(ValueError, match="kind"):
        SyncPagerDutyClient.from_token("t", kind="basic")  # type: ignore[arg-type]
    with pytest.raises(Exception, match="https"):
        SyncPagerDutyClient.from_token("t", base_url="http://api.example.com")


# A script that never closes its client: it must still exit, and say it was not closed.
UNCLOSED_SCRIPT = """
import sys
from pdauth.client import SyncPagerDutyClient

client = SyncPagerDutyClient.from_token(sys.argv[2], kind="api_key", base_url=sys.argv[1])
print(len(client.get("/users", params={"limit": 2})["users"]))
if sys.argv[3] == "close":
    client.close()
"""


def run_script(server: EmulatorServer, mode: str) -> subprocess.CompletedProcess[str]:
    argv = [server.url, api_key(server), mode]
    return subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-c", UNCLOSED_SCRIPT, *argv],
        capture_output=True,
        text=True,
        timeout=120,  # a generous bound: the bug this guards against never exits at all
        check=False,
    )


def test_an_unclosed_client_does_not_keep_the_interpreter_alive(server: EmulatorServer) -> None:
    done = run_script(server, "leave-open")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"
    assert "SyncPagerDutyClient was not closed" in done.stderr
    assert "ResourceWarning" in done.stderr


def test_a_closed_client_exits_without_a_warning(server: EmulatorServer) -> None:
    done = run_script(server, "close")  # negative control for the warning
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"
    assert "not closed" not in done.stderr


def test_a_collected_client_warns_and_stops_its_thread(server: EmulatorServer) -> None:
    client = SyncPagerDutyClient.from_token(api_key(server), kind="api_key", base_url=server.url)
    assert client.get("/users", params={"limit": 1})["users"]
    thread = client._loop.thread
    assert thread.daemon
    with pytest.warns(ResourceWarning, match="not closed"):
        del client  # no reference cycle: collected at once
    assert not thread.is_alive()  # the finalizer joined it


def test_close_stops_the_thread_without_a_warning(server: EmulatorServer) -> None:
    client = SyncPagerDutyClient.from_token(api_key(server), kind="api_key", base_url=server.url)
    thread = client._loop.thread
    client.close()
    assert not thread.is_alive()
    del client
    gc.collect()  # a warning here would fail the test (warnings are errors)
