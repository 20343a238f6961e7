"""Benchmark: a refresh storm — pdauth vs the common Authlib wiring, on the strict emulator.

Run alone: ``.venv/bin/python benchmarks/bench_refresh_storm.py [--json DIR] [--quick]``. Prints a
table (and writes ``bench_refresh_storm.json`` into DIR with ``--json``). Not a timed test: it
reports, and exits 1 only if pdauth itself loses a connection or refreshes one twice.

Setting. The emulator (``EmulatorServer``, a real socket) runs in *strict* refresh-reuse mode:
presenting an already-rotated refresh token revokes the whole grant, as OAuth 2.0 Security BCP
§4.14.2 allows and PagerDuty may do (it does not say). K connections are made through each
tool's own authorization-code + PKCE flow; then every stored access token is marked expired and
the emulator's clock is moved past their lifetime, so they really are expired. N OS processes
start, each with M concurrent tasks; on a common start signal every task calls
``GET /users/me`` once for every connection (in its own random order): N x M x K calls. The
REST budget is raised far above PagerDuty's 960/min so pacing never enters the picture.

- **pdauth**: one ``Connector`` per process and a ``PagerDutyClient`` per connection over its
  ``TokenManager`` (lease on the row, single flight, fenced write) — the documented use.
- **Authlib** (1.6+, ``authlib.integrations.httpx_client.AsyncOAuth2Client``), wired as its
  documentation shows ("Auto Update Token"): the token lives in a database row (same database
  engine as pdauth's run); each process loads the row at start-up into one ``AsyncOAuth2Client``
  per connection, shared by all its tasks (so Authlib's own per-client lock de-duplicates
  refreshes inside the process), with ``token_endpoint`` set so the client refreshes by itself
  on expiry, ``leeway`` at its default, ``client_secret_post`` as PagerDuty documents, and an
  async ``update_token(token, refresh_token=None, access_token=None)`` callback that finds the
  row by the old refresh token and writes the new pair (skipping a row another process already
  replaced, where the documented sample would fail on ``None``).

Reported per tool and shape: calls that succeeded; refresh requests the token endpoint received
and reuse detections (emulator counters, storm only); **connections lost** — after the storm,
the refresh token held in the tool's store no longer works at the emulator (rotated, revoked,
or its grant revoked), so the user must reconnect — and, for pdauth, how many of those it
marked ``needs_reauth`` itself; wall time from the start signal to the last call's answer. A
1-process row per tool is the control: in one process both tools are correct.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx
import sqlalchemy as sa
from _common import (
    add_common_arguments,
    percentile,
    postgres_database,
    print_table,
    sqlite_database,
    write_report,
)

from pdauth.client import PagerDutyClient
from pdauth.config import Settings
from pdauth.connections import Connector
from pdauth.crypto import format_key, generate_key
from pdauth.emulator import EmulatorConfig, EmulatorServer, EmulatorState
from pdauth.errors import PdauthError
from pdauth.sealing import Sealer
from pdauth.store import Store, upgrade

NAME = "bench_refresh_storm"
CLIENT_ID = "pdauth-demo"
CLIENT_SECRET = "pdauth-demo-secret"
REDIRECT_URI = "http://127.0.0.1:8000/callback"
USER = "admin@acme.example"
ACCEPT = "application/vnd.pagerduty+json;version=2"
KEYS = format_key(generate_key("storm1"))
ACCESS_TTL = 3600  # the emulator's access-token lifetime; the clock is moved past it
START_TIMEOUT = 120.0
# REST budget per token per minute, far above PagerDuty's 960: the storm measures refresh
# coordination, not rate-limit pacing (bench_ratelimit.py does that).
RATE_LIMIT = 1_000_000

# The Authlib side's token table: one row per connection, as in Authlib's own example.
_meta = sa.MetaData()
authlib_tokens = sa.Table(
    "oauth2_token",
    _meta,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("token_type", sa.String(40)),
    sa.Column("access_token", sa.String(200), nullable=False),
    sa.Column("refresh_token", sa.String(200)),
    sa.Column("expires_at", sa.Integer()),
)


def _settings(db_url: str, base: str) -> Settings:
    return Settings(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=REDIRECT_URI,
        scopes=("read", "write"),
        database_url=db_url,
        encryption_keys=KEYS,
        identity_url=base,
        api_url=base,
        api_url_eu=base + "/eu",
    )


def _approve(web: httpx.Client, authorize_url: str) -> str:
    """What the user does on PagerDuty's consent page: approve; returns the callback URL."""
    params = dict(parse_qsl(urlsplit(authorize_url).query))
    answer = web.post("/_emulator/authorize", json={**params, "user": USER})
    answer.raise_for_status()
    redirect: str = answer.json()["redirect"]
    return redirect


# -- setting up K connections per tool ----------------------------------------------------------


async def _connect_pdauth(db_url: str, base: str, count: int) -> list[str]:
    settings = _settings(db_url, base)
    ids: list[str] = []
    with httpx.Client(base_url=base) as web:
        async with Connector(settings) as connector:
            for i in range(count):
                start = await connector.begin(f"storm-owner-{i}")
                callback = await anyio.to_thread.run_sync(_approve, web, start.url)
                made = await connector.complete(urlsplit(callback).query, start.binding)
                ids.append(made.id)
    store = Store(db_url)
    try:
        with store.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE connections SET access_expires_at = :t"), {"t": time.time() - 10}
            )
    finally:
        store.dispose()
    return ids


async def _connect_authlib(db_url: str, base: str, count: int) -> list[str]:
    from authlib.common.security import generate_token
    from authlib.integrations.httpx_client import AsyncOAuth2Client

    engine = sa.create_engine(db_url)
    _meta.create_all(engine)
    ids: list[str] = []
    try:
        with httpx.Client(base_url=base) as web:
            for i in range(count):
                async with AsyncOAuth2Client(
                    CLIENT_ID,
                    CLIENT_SECRET,
                    token_endpoint_auth_method="client_secret_post",
                    redirect_uri=REDIRECT_URI,
                    scope="read write",
                    code_challenge_method="S256",
                ) as client:
                    verifier = generate_token(48)
                    url, state = client.create_authorization_url(
                        base + "/oauth/authorize", code_verifier=verifier
                    )
                    callback = await anyio.to_thread.run_sync(_approve, web, url)
                    token = await client.fetch_token(
                        base + "/oauth/token",
                        authorization_response=callback,
                        state=state,
                        code_verifier=verifier,
                    )
                name = f"storm-{i}"
                with engine.begin() as conn:
                    conn.execute(
                        sa.insert(authlib_tokens).values(
                            name=name,
                            token_type=token["token_type"],
                            access_token=token["access_token"],
                            refresh_token=token["refresh_token"],
                            expires_at=int(time.time()) - 10,  # expired
                        )
                    )
                ids.append(name)
    finally:
        engine.dispose()
    return ids


# -- workers (one OS process each) ----------------------------------------------------------------


async def _barrier(go: str, ready: str) -> float:
    """Say we are ready, then wait for the start signal; returns the agreed start time."""
    await anyio.Path(ready).write_text(str(os.getpid()))
    path = anyio.Path(go)
    # Another process creates the start file; polling a file is the simplest barrier.
    while not await path.exists():  # noqa: ASYNC110
        await anyio.sleep(0.002)
    return float(await path.read_text())


def _orders(ids: list[str], tasks: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    orders = []
    for _ in range(tasks):
        order = list(ids)
        rng.shuffle(order)
        orders.append(order)
    return orders


async def _pdauth_worker(spec: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.from_env()
    ids: list[str] = spec["ids"]
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    last = 0.0
    async with (
        Connector(settings) as connector,
        httpx.AsyncClient(timeout=settings.http_timeout, follow_redirects=False) as http,
    ):
        clients = {
            cid: PagerDutyClient(settings.api_url, connector.tokens.token_source(cid), http=http)
            for cid in ids
        }
        await connector.store.count_by_status()  # the database pool is open before the start
        started = await _barrier(spec["go"], spec["ready"])

        async def task(order: list[str]) -> None:
            nonlocal last
            for cid in order:
                began = time.perf_counter()
                try:
                    await clients[cid].get("/users/me")
                    outcomes["ok"] += 1
                except PdauthError as exc:
                    outcomes[type(exc).__name__] += 1
                latencies.append((time.perf_counter() - began) * 1000)
                last = max(last, time.time())

        async with anyio.create_task_group() as tg:
            for order in _orders(ids, spec["tasks"], spec["seed"]):
                tg.start_soon(task, order)
        for client in clients.values():
            await client.aclose()
    return {"outcomes": dict(outcomes), "started": started, "last": last, "ms": latencies}


async def _authlib_worker(spec: dict[str, Any]) -> dict[str, Any]:
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import AsyncOAuth2Client

    ids: list[str] = spec["ids"]
    base: str = spec["base"]
    engine = sa.create_engine(spec["db_url"])
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    last = 0.0

    async def update_token(
        token: dict[str, Any], refresh_token: str | None = None, access_token: str | None = None
    ) -> None:
        # Authlib's documented callback: find the row by the token that was replaced, update it.
        if refresh_token:
            where = authlib_tokens.c.refresh_token == refresh_token
        elif access_token:
            where = authlib_tokens.c.access_token == access_token
        else:
            return

        def write() -> None:
            with engine.begin() as conn:
                conn.execute(
                    sa.update(authlib_tokens)
                    .where(where)
                    .values(
                        access_token=token["access_token"],
                        refresh_token=token.get("refresh_token"),
                        expires_at=token["expires_at"],
                    )
                )

        await anyio.to_thread.run_sync(write)

    def load(name: str) -> dict[str, Any]:
        with engine.connect() as conn:
            row = conn.execute(sa.select(authlib_tokens).where(authlib_tokens.c.name == name)).one()
        return {
            "token_type": row.token_type,
            "access_token": row.access_token,
            "refresh_token": row.refresh_token,
            "expires_at": row.expires_at,
        }

    clients = {
        name: AsyncOAuth2Client(
            CLIENT_ID,
            CLIENT_SECRET,
            token_endpoint_auth_method="client_secret_post",
            token=load(name),
            update_token=update_token,
            token_endpoint=base + "/oauth/token",
            base_url=base,
            headers={"Accept": ACCEPT},
            timeout=10.0,
        )
        for name in ids
    }
    try:
        started = await _barrier(spec["go"], spec["ready"])

        async def task(order: list[str]) -> None:
            nonlocal last
            for name in order:
                began = time.perf_counter()
                try:
                    response = await clients[name].get("/users/me")
                    status = response.status_code
                    outcomes["ok" if status == 200 else f"http_{status}"] += 1
                except OAuthError as exc:
                    outcomes[f"oauth_error:{exc.error}"] += 1
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1
                latencies.append((time.perf_counter() - began) * 1000)
                last = max(last, time.time())

        async with anyio.create_task_group() as tg:
            for order in _orders(ids, spec["tasks"], spec["seed"]):
                tg.start_soon(task, order)
    finally:
        for client in clients.values():
            await client.aclose()
        engine.dispose()
    return {"outcomes": dict(outcomes), "started": started, "last": last, "ms": latencies}


def _worker_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    worker = _pdauth_worker if spec["tool"] == "pdauth" else _authlib_worker
    result = anyio.run(worker, spec)
    print(json.dumps(result))
    return 0


# -- one case: a tool, a database, a shape ---------------------------------------------------------


def _refresh_token_alive(state: EmulatorState, value: str | None) -> bool:
    """Would PagerDuty (the emulator) still accept this refresh token?"""
    if not value:
        return False
    with state.lock:
        rt = state.refresh_tokens.get(value)
        if rt is None or rt.revoked or rt.rotated:
            return False
        grant = state.grants.get(rt.grant_id)
        return grant is not None and not grant.revoked and state.clock.now() < rt.expires_at


def _losses(tool: str, db_url: str, ids: list[str], state: EmulatorState) -> tuple[int, int]:
    """(connections lost, of which the tool marked needs_reauth itself)."""
    lost = flagged = 0
    if tool == "pdauth":
        keys = _settings(db_url, "http://127.0.0.1:9").key_ring()
        store = Store(db_url)
        try:
            for cid in ids:
                row = store.get_connection(cid)
                if row is None or row.status != "active" or row.refresh_token_ct is None:
                    lost += 1
                    flagged += row is not None and row.status == "needs_reauth"
                    continue
                value = Sealer(keys).open_token(row, "refresh_token", row.refresh_token_ct)
                lost += not _refresh_token_alive(state, value)
        finally:
            store.dispose()
        return lost, flagged
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(authlib_tokens.c.refresh_token)).scalars().all()
    finally:
        engine.dispose()
    lost = sum(not _refresh_token_alive(state, value) for value in rows)
    return lost, 0


def run_case(
    tool: str, backend: str, db_url: str, processes: int, tasks: int, count: int
) -> dict[str, Any]:
    config = EmulatorConfig(
        refresh_reuse="strict", access_token_ttl=ACCESS_TTL, rate_limit=RATE_LIMIT
    )
    with EmulatorServer(config) as srv, tempfile.TemporaryDirectory() as tmp:
        if tool == "pdauth":
            upgrade(db_url)
            ids = anyio.run(_connect_pdauth, db_url, srv.url, count)
        else:
            ids = anyio.run(_connect_authlib, db_url, srv.url, count)
        # The stored access tokens are expired for the clients; make them expired at PagerDuty
        # too, then count only what the storm does.
        srv.state.clock.advance(ACCESS_TTL + 60)
        srv.state.stats.reset()

        env = {k: v for k, v in os.environ.items() if not k.startswith("PDAUTH_")}
        env.update(
            {
                "PDAUTH_CLIENT_ID": CLIENT_ID,
                "PDAUTH_CLIENT_SECRET": CLIENT_SECRET,
                "PDAUTH_REDIRECT_URI": REDIRECT_URI,
                "PDAUTH_SCOPES": "read write",
                "PDAUTH_DATABASE_URL": db_url,
                "PDAUTH_ENCRYPTION_KEYS": KEYS,
                "PDAUTH_IDENTITY_URL": srv.url,
                "PDAUTH_API_URL": srv.url,
                "PDAUTH_API_URL_EU": srv.url + "/eu",
            }
        )
        go = Path(tmp) / "go"
        readies = [Path(tmp) / f"ready-{i}" for i in range(processes)]
        workers = []
        for i in range(processes):
            spec = {
                "tool": tool,
                "db_url": db_url,
                "base": srv.url,
                "ids": ids,
                "tasks": tasks,
                "seed": 1000 + i,
                "go": str(go),
                "ready": str(readies[i]),
            }
            spec_path = Path(tmp) / f"spec-{i}.json"
            spec_path.write_text(json.dumps(spec))
            workers.append(
                subprocess.Popen(
                    [sys.executable, __file__, "_worker", str(spec_path)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not all(r.exists() for r in readies):
                dead = [w for w in workers if w.poll() is not None]
                if dead or time.monotonic() > deadline:
                    detail = dead[0].communicate()[1][-800:] if dead else "timeout"
                    raise RuntimeError(f"a storm worker did not get ready: {detail}")
                time.sleep(0.01)
            go_at = time.time()
            go.write_text(repr(go_at))
            outputs = [w.communicate(timeout=300) for w in workers]
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.communicate()
        results = []
        for w, (out, err) in zip(workers, outputs, strict=True):
            if w.returncode != 0:
                raise RuntimeError(f"a storm worker failed: {err[-800:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        stats = srv.state.stats.snapshot()
        lost, flagged = _losses(tool, db_url, ids, srv.state)

    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    for r in results:
        outcomes.update(r["outcomes"])
        latencies.extend(r["ms"])
    token_requests = stats["token_requests"]
    assert isinstance(token_requests, dict)
    refresh = token_requests.get("refresh_token", {})
    return {
        "tool": tool,
        "backend": backend,
        "processes": processes,
        "tasks_per_process": tasks,
        "connections": count,
        "calls": sum(outcomes.values()),
        "calls_ok": outcomes.get("ok", 0),
        "outcomes": dict(sorted(outcomes.items())),
        "refresh_requests": sum(refresh.values()),
        "refresh_requests_by_outcome": refresh,
        "reuse_detections": stats["refresh_reuse_detections"],
        "grants_revoked": stats["tokens_revoked"]["grant"],  # type: ignore[index]
        "connections_lost": lost,
        "lost_marked_needs_reauth": flagged if tool == "pdauth" else None,
        "call_p50_ms": _rounded(percentile(latencies, 0.5)),
        "call_p99_ms": _rounded(percentile(latencies, 0.99)),
        "call_max_ms": _rounded(max(latencies, default=None)),
        "wall_s": round(max(r["last"] for r in results) - go_at, 3),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "_worker":
        return _worker_main(argv[1])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, NAME)
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--connections", type=int, help="K (default 20, quick 5)")
    parser.add_argument("--processes", type=int, help="N (default 4, quick 2)")
    parser.add_argument("--tasks", type=int, help="M per process (default 10, quick 4)")
    parser.add_argument("--tools", default="pdauth,authlib", help="comma-separated subset")
    args = parser.parse_args(argv)
    count = args.connections or (5 if args.quick else 20)
    processes = args.processes or (2 if args.quick else 4)
    tasks = args.tasks or (4 if args.quick else 10)

    backends: list[tuple[str, Callable[[], AbstractContextManager[str]]]] = [
        ("sqlite", sqlite_database)
    ]
    if not args.no_postgres:
        backends.append(("postgresql", postgres_database))
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for backend, database in backends:
        for shape in (1, processes):
            for tool in [t for t in ("pdauth", "authlib") if t in args.tools.split(",")]:
                print(f"{tool} on {backend}, {shape} x {tasks} tasks, {count} connections...",
                      file=sys.stderr)  # fmt: skip
                try:
                    with database() as url:
                        rows.append(run_case(tool, backend, url, shape, tasks, count))
                except Exception as exc:  # report an unreachable PostgreSQL, go on
                    if backend == "sqlite":
                        raise
                    skipped[backend] = f"{type(exc).__name__}: {str(exc)[:200]}"
                    break
            if backend in skipped:
                break

    print_table(
        f"Refresh storm on the strict emulator: {count} connections with expired access "
        f"tokens, N processes x {tasks} tasks, each task calls GET /users/me once per connection",
        (
            "tool / db / N",
            "calls",
            "ok",
            "refreshes",
            "reuse detected",
            "grants revoked",
            "lost",
            "flagged",
            "p50 ms",
            "p99 ms",
            "wall s",
        ),
        [
            (
                f"{r['tool']} / {r['backend']} / {r['processes']}",
                r["calls"],
                r["calls_ok"],
                r["refresh_requests"],
                r["reuse_detections"],
                r["grants_revoked"],
                r["connections_lost"],
                r["lost_marked_needs_reauth"],
                r["call_p50_ms"],
                r["call_p99_ms"],
                r["wall_s"],
            )
            for r in rows
        ],
    )
    for backend, why in skipped.items():
        print(f"{backend}: skipped ({why})")
    write_report(
        args.json,
        NAME,
        {
            "quick": args.quick,
            "shape": {"connections": count, "processes": processes, "tasks_per_process": tasks},
            "results": rows,
            "skipped": skipped,
        },
    )
    # pdauth's promise: one refresh per connection, no connection lost.
    broken = [
        r
        for r in rows
        if r["tool"] == "pdauth"
        and (r["connections_lost"] or r["refresh_requests"] != r["connections"])
    ]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
