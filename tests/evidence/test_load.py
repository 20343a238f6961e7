"""Load: 200 connect flows at once, and a steady stream of access-token requests.

The first test runs 200 complete connect flows concurrently through one Connector (begin →
consent at the in-process emulator → complete) on each database backend and then audits every
row: 200 distinct states, 200 rows for 200 owners, nothing left pending, each row's access
token decrypts and is accepted by PagerDuty, each refresh token decrypts and is the live one
of the same grant. The second serves pdauth on a real loopback socket and drives
``POST /api/v1/connections/{id}/access-token`` from a second OS process (tests/evidence/
loadgen.py: a fixed request count and a time cap) and prints throughput and p99. Both assert
correctness — every flow completes, every request is a 200 with the connection's one current
token and PagerDuty sees no refresh — never speed.
"""

from __future__ import annotations

import hashlib
import json
import os
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

from pdauth.connections import AuthorizationStart, Connection, Connector
from pdauth.emulator import EmulatorConfig, EmulatorServer
from pdauth.sealing import Sealer
from pdauth.service import create_app
from pdauth.service.server import ServiceServer
from pdauth.store import Store, upgrade
from pdauth.store.schema import pending_authorizations
from tests.evidence.rig import rig
from tests.service.conftest import API_KEY, make_settings

pytestmark = pytest.mark.slow

FLOWS = 200
LOADGEN = Path(__file__).parent / "loadgen.py"
LOAD_CONNECTIONS = 10
LOAD_REQUESTS = 3000
LOAD_CONCURRENCY = 16
LOAD_TIME_CAP = 60.0


@pytest.mark.anyio
async def test_200_concurrent_connect_flows_all_complete_and_every_row_works(
    db_url: str,
) -> None:
    async with rig(db_url) as r:
        connector = r.connector()
        starts: dict[str, AuthorizationStart] = {}
        done: dict[str, Connection] = {}

        async def flow(owner: str) -> None:
            start = await connector.begin(owner)
            starts[owner] = start
            done[owner] = await connector.complete(await r.consent(start.url), start.binding)

        began = time.perf_counter()
        with anyio.fail_after(180):
            async with anyio.create_task_group() as tg:
                for i in range(FLOWS):
                    tg.start_soon(flow, f"load-owner-{i:03d}")
        took = time.perf_counter() - began

        # Every flow completed, each with its own state and its own row.
        assert len(done) == FLOWS
        assert len({s.state for s in starts.values()}) == FLOWS
        assert len({s.binding for s in starts.values()}) == FLOWS
        assert len({c.id for c in done.values()}) == FLOWS
        rows = await r.store.list_connections(limit=1000)
        assert len(rows) == FLOWS
        assert {row.owner: row.id for row in rows} == {o: c.id for o, c in done.items()}
        assert {row.status for row in rows} == {"active"}
        with r._stores[0].engine.connect() as conn:
            left = conn.execute(sa.select(sa.func.count()).select_from(pending_authorizations))
            assert left.scalar_one() == 0  # every pending authorization was consumed once
        created = await r.store.list_events(type="connection.created", limit=1000)
        assert sorted(e.connection_id or "" for e in created) == sorted(c.id for c in done.values())

        # Each row's tokens decrypt (bound to that row) and are live at PagerDuty.
        sealer = Sealer(r.settings.key_ring())
        grants = set()
        for row in rows:
            assert row.access_token_ct is not None
            assert row.refresh_token_ct is not None
            access = sealer.open_token(row, "access_token", row.access_token_ct)
            refresh = sealer.open_token(row, "refresh_token", row.refresh_token_ct)
            issued = r.state.authenticate(access)
            assert issued is not None, row.owner
            assert await r.users_me(access) == 200
            stored = r.state.refresh_tokens[refresh]
            assert stored.grant_id == issued.grant_id
            assert not stored.rotated
            assert not stored.revoked
            grants.add(issued.grant_id)
        assert len(grants) == FLOWS
        print(f"\n{FLOWS} concurrent connect flows on {r.store!r}: {took:.1f} s")


# -- steady load on the access-token endpoint, from a second process --------------------------


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(rate_limit=1_000_000)) as srv:
        yield srv


async def _connect(connector: Connector, srv: EmulatorServer, owner: str) -> tuple[str, str]:
    start = await connector.begin(owner)
    async with httpx.AsyncClient(base_url=srv.url) as pagerduty:
        answer = await pagerduty.post(
            "/_emulator/authorize",
            json={
                **dict(parse_qsl(urlsplit(start.url).query)),
                "user": "admin@acme.example",
                "decision": "approve",
            },
        )
    connection = await connector.complete(urlsplit(answer.json()["redirect"]).query, start.binding)
    token = await connector.access_token(connection.id)
    return connection.id, hashlib.sha256(token.encode()).hexdigest()[:16]


def test_steady_access_token_load_from_a_second_process(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path}/pdauth.db"
    upgrade(database_url)
    settings = make_settings(
        database_url,
        identity_url=emulator.url,
        api_url=emulator.url,
        api_url_eu=emulator.eu_api_url,
    )

    async def setup() -> dict[str, str]:
        async with Connector(settings) as connector:
            pairs = [
                await _connect(connector, emulator, f"load-owner-{i}")
                for i in range(LOAD_CONNECTIONS)
            ]
        return dict(pairs)

    before = anyio.run(setup)
    token_requests = emulator.state.stats.snapshot()["token_requests_total"]
    with ServiceServer(create_app(settings)) as service:
        run = subprocess.run(
            [
                sys.executable,
                str(LOADGEN),
                "--url",
                service.url,
                "--ids",
                ",".join(before),
                "--requests",
                str(LOAD_REQUESTS),
                "--concurrency",
                str(LOAD_CONCURRENCY),
                "--time-cap",
                str(LOAD_TIME_CAP),
            ],
            env={**os.environ, "LOADGEN_API_KEY": API_KEY},
            capture_output=True,
            text=True,
            timeout=LOAD_TIME_CAP + 60,
            check=False,
        )
    assert run.returncode == 0, run.stderr
    report: dict[str, Any] = json.loads(run.stdout)
    print(
        f"\naccess-token load ({LOAD_CONCURRENCY} concurrent, loopback, second process): "
        f"{report['completed']} requests in {report['elapsed_s']} s, "
        f"{report['throughput_rps']} req/s, p50 {report['p50_ms']} ms, "
        f"p99 {report['p99_ms']} ms, max {report['max_ms']} ms"
        + (" (stopped by the time cap)" if report["capped"] else "")
    )
    # Correctness, not speed: every request answered 200 with the connection's one token.
    assert report["completed"] == report["sent"] > 0
    assert report["statuses"] == {"200": report["completed"]}
    assert {cid: set(found) for cid, found in report["tokens"].items()} == {
        cid: {digest} for cid, digest in before.items()
    }
    # No refresh happened (none was due): the tokens came from pdauth's cache and database.
    assert emulator.state.stats.snapshot()["token_requests_total"] == token_requests
    store = Store(database_url)
    try:
        assert store.count_by_status()["active"] == LOAD_CONNECTIONS
    finally:
        store.dispose()
