"""Refresh storms across OS processes, against a real emulator socket and a shared database.

The emulator runs with strict refresh-token reuse detection (PagerDuty documents none; a
strict server revokes the whole grant when a rotated refresh token is replayed), so two
processes refreshing the same connection at once would kill it. Each worker process delays its
token requests a little, which widens the race window for everybody (the negative control
needs it to show the bug reliably; the positive test gets harder, not easier).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx
import pytest
import sqlalchemy as sa

from pdauth.connections import Connector
from pdauth.emulator import EmulatorConfig, EmulatorServer
from pdauth.errors import NeedsReauthError
from pdauth.store import Store, upgrade
from tests.workers.harness import DEMO_ID, DEMO_REDIRECT, DEMO_SECRET, TEST_KEYS, US_ADMIN

pytestmark = pytest.mark.slow

# Run as a module from the repository root, so the worker can import its test doubles.
WORKER = "tests.workers.refresh_worker"
ROOT = Path(__file__).resolve().parent.parent
PROCESSES = 4
TASKS = 25


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(access_token_ttl=3600, refresh_reuse="strict")) as srv:
        yield srv


def environment(srv: EmulatorServer, db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDAUTH_")}
    env.update(
        {
            "PDAUTH_CLIENT_ID": DEMO_ID,
            "PDAUTH_CLIENT_SECRET": DEMO_SECRET,
            "PDAUTH_REDIRECT_URI": DEMO_REDIRECT,
            "PDAUTH_SCOPES": "read write",
            "PDAUTH_DATABASE_URL": db_url,
            "PDAUTH_ENCRYPTION_KEYS": TEST_KEYS,
            "PDAUTH_IDENTITY_URL": srv.url,
            "PDAUTH_API_URL": srv.url,
            "PDAUTH_API_URL_EU": srv.url + "/eu",
            "PDAUTH_HTTP_TIMEOUT": "4",
            "PDAUTH_LEASE_SECONDS": "6",
        }
    )
    env.update(extra)
    return env


def connector_for(env: dict[str, str]) -> Connector:
    return Connector.from_env(env)


def connect(env: dict[str, str], srv: EmulatorServer) -> tuple[str, str]:
    """Run the real flow in this process; returns (connection id, sha256 of its token)."""

    async def flow() -> tuple[str, str]:
        async with connector_for(env) as connector, httpx.AsyncClient(base_url=srv.url) as web:
            start = await connector.begin("storm-owner")
            params = dict(parse_qsl(urlsplit(start.url).query))
            answer = await web.post(
                "/_emulator/authorize", json={**params, "user": US_ADMIN, "decision": "approve"}
            )
            query = urlsplit(answer.json()["redirect"]).query
            conn = await connector.complete(query, start.binding)
            token = await connector.access_token(conn.id)
            return conn.id, sha(token)

    return anyio.run(flow)


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def expire(db_url: str, connection_id: str) -> None:
    """Make the stored access token expired (what a long idle period would do)."""
    store = Store(db_url)
    try:
        with store.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE connections SET access_expires_at = :t WHERE id = :i"),
                {"t": time.time() - 10, "i": connection_id},
            )
    finally:
        store.dispose()


def stats(srv: EmulatorServer) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(srv.url + "/_emulator/stats").json()
    return data


def refreshes(srv: EmulatorServer, outcome: str | None = None) -> int:
    by_outcome: dict[str, int] = stats(srv)["token_requests"].get("refresh_token", {})
    return sum(by_outcome.values()) if outcome is None else by_outcome.get(outcome, 0)


def spawn(
    env: dict[str, str],
    connection_id: str,
    workdir: Path,
    index: int,
    *,
    mode: str = "normal",
    tasks: int = TASKS,
    delay: float = 0.3,
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            WORKER,
            "--connection-id",
            connection_id,
            "--tasks",
            str(tasks),
            "--ready",
            str(workdir / f"ready-{index}"),
            "--barrier",
            str(workdir / "go"),
            "--mode",
            mode,
            "--delay",
            str(delay),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def storm(
    env: dict[str, str], connection_id: str, workdir: Path, mode: str, delay: float = 0.3
) -> list[list[str]]:
    workers = [
        spawn(env, connection_id, workdir, i, mode=mode, delay=delay) for i in range(PROCESSES)
    ]
    try:
        wait_for(
            lambda: all((workdir / f"ready-{i}").exists() for i in range(PROCESSES)),
            120,
            "the workers to start",
        )
        (workdir / "go").touch()
        results: list[list[str]] = []
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
            results.extend(json.loads(out)["results"])
        return results
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()


def test_refresh_storm_across_processes_makes_exactly_one_refresh(
    db_url: str, emulator: EmulatorServer, tmp_path: Path
) -> None:
    upgrade(db_url)
    env = environment(emulator, db_url)
    connection_id, old = connect(env, emulator)
    expire(db_url, connection_id)

    results = storm(env, connection_id, tmp_path, "normal")

    assert len(results) == PROCESSES * TASKS
    assert {status for status, _ in results} == {"ok"}, results
    tokens = {value for _, value in results}
    assert len(tokens) == 1  # all 100 callers got the same new token
    assert tokens != {old}
    assert refreshes(emulator) == 1
    assert stats(emulator)["refresh_reuse_detections"] == 0

    # The connection keeps refreshing afterwards (its refresh token is alive).
    expire(db_url, connection_id)

    async def again() -> str:
        async with connector_for(env) as connector:
            return await connector.access_token(connection_id)

    assert sha(anyio.run(again)) not in tokens | {old}
    assert refreshes(emulator, "ok") == 2


def test_negative_control_without_the_lease_the_grant_dies(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Proof that the storm test can see the bug: same storm, lease disabled."""
    db_url = "sqlite:///" + str(tmp_path / "control.db")
    upgrade(db_url)
    env = environment(emulator, db_url)
    connection_id, _ = connect(env, emulator)
    expire(db_url, connection_id)

    # A longer delay: every process must read the row before the first refresh lands.
    storm(env, connection_id, tmp_path, "no-lease", delay=1.0)

    assert refreshes(emulator) >= 2  # several processes refreshed with the same token ...
    assert stats(emulator)["refresh_reuse_detections"] >= 1  # ... and PagerDuty noticed,
    assert stats(emulator)["tokens_revoked"]["grant"] == 1  # ... and revoked the grant.

    async def afterwards() -> None:
        async with connector_for(env) as connector:
            await connector.access_token(connection_id)

    expire(db_url, connection_id)
    with pytest.raises(NeedsReauthError):
        anyio.run(afterwards)


def test_a_process_killed_while_holding_the_lease_is_taken_over(
    db_url: str, emulator: EmulatorServer, tmp_path: Path
) -> None:
    upgrade(db_url)
    env = environment(emulator, db_url)
    connection_id, old = connect(env, emulator)
    expire(db_url, connection_id)
    store = Store(db_url)

    def lease_owner() -> str | None:
        row = store.get_connection(connection_id)
        assert row is not None
        return row.lease_owner

    (tmp_path / "go").touch()
    hung = spawn(env, connection_id, tmp_path, 0, mode="hang", tasks=1)
    try:
        wait_for(lambda: lease_owner() is not None, 60, "the worker to take the lease")
        hung.send_signal(signal.SIGKILL)
        hung.communicate(timeout=30)
        assert lease_owner() is not None  # it died holding the lease

        survivor = spawn(env, connection_id, tmp_path, 1, tasks=5, delay=0.0)
        out, err = survivor.communicate(timeout=60)  # no deadlock: it finishes
        assert survivor.returncode == 0, err
    finally:
        if hung.poll() is None:
            hung.kill()
            hung.communicate()
        store.dispose()
    results = json.loads(out)["results"]
    assert {status for status, _ in results} == {"ok"}, results
    assert len({value for _, value in results}) == 1
    assert results[0][1] != old
    assert refreshes(emulator) == 1  # the killed process's request never reached PagerDuty
    store = Store(db_url)
    try:
        row = store.get_connection(connection_id)
    finally:
        store.dispose()
    assert row is not None
    assert row.status == "active"
    assert row.lease_owner is None
