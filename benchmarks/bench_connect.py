"""Benchmark: completed "Connect PagerDuty" flows per second, and the callback's latency.

Run alone: ``.venv/bin/python benchmarks/bench_connect.py [--json DIR] [--quick]``. Prints a table
(and writes ``bench_connect.json`` into DIR with ``--json``). Not a timed test: it reports.

One flow is what a browser and a user do: ``GET /`` (session + CSRF token), ``POST /connect``
(pending authorization stored, 303 to PagerDuty), the consent decision at the emulator
(``POST /_emulator/authorize``, what the Approve button does), then ``GET /callback`` — state
consumed, code exchanged, id_token verified against the JWKS, ``/users/me`` read, tokens
encrypted and the connection upserted with its event — answered 303. A flow counts when the
callback answered 303. Each flow uses a new owner, so every flow inserts a row. The service and
the emulator run in-process (``httpx.ASGITransport``): the figures are the service's own cost
plus the emulator's (RSA signing), with no network. Concurrency: N browsers at once.

Backends: SQLite (a file in a temporary directory) and PostgreSQL (a fresh
``pdauth_bench_<random>`` database on ``PDAUTH_TEST_PG_URL``'s server, dropped afterwards;
reported as skipped when the server is unreachable).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx
from _common import write_report
from starlette.requests import Request

from pdauth.config import Settings
from pdauth.crypto import format_key, generate_key
from pdauth.emulator import EmulatorConfig, create_app as create_emulator
from pdauth.service import create_app
from pdauth.store import upgrade

PG_URL_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/pdauth_test"
EMULATOR = "http://127.0.0.1:9"
SERVICE = "http://127.0.0.1:8000"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _owner(request: Request) -> str | None:
    return request.headers.get("x-bench-owner")


def _settings(database_url: str) -> Settings:
    return Settings.from_env(
        {},
        client_id="pdauth-demo",
        client_secret="pdauth-demo-secret",
        redirect_uri=SERVICE + "/callback",
        encryption_keys=format_key(generate_key("bench1")),
        session_secret="bench-session-secret-0123456789abcdef",
        identity_url=EMULATOR,
        api_url=EMULATOR,
        api_url_eu=EMULATOR + "/eu",
        database_url=database_url,
        connect_rate_limit=0,  # the benchmark is one client hammering on purpose
    )


async def _flows(database_url: str, flows: int, concurrency: int, warmup: int) -> dict[str, Any]:
    upgrade(database_url)
    emulator = create_emulator(EmulatorConfig())
    app = create_app(_settings(database_url), _owner, transport=httpx.ASGITransport(app=emulator))
    callback_ms: list[float] = []
    failures = 0
    counter = iter(range(10**9))

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=emulator), base_url=EMULATOR
    ) as pagerduty:

        async def one_flow(browser: httpx.AsyncClient, record: bool) -> None:
            nonlocal failures
            owner = f"bench-owner-{next(counter)}"
            headers = {"x-bench-owner": owner}
            page = await browser.get("/", headers=headers)
            token = _CSRF.search(page.text)
            assert token, "no CSRF token on the home page"
            start = await browser.post(
                "/connect", data={"csrf_token": token.group(1)}, headers=headers
            )
            params = dict(parse_qsl(urlsplit(start.headers["location"]).query))
            answer = await pagerduty.post(
                "/_emulator/authorize", json={**params, "user": "admin@acme.example"}
            )
            callback = answer.json()["redirect"][len(SERVICE) :]
            began = time.perf_counter()
            done = await browser.get(callback, headers=headers)
            elapsed = (time.perf_counter() - began) * 1000
            if done.status_code != 303:
                failures += 1
            elif record:
                callback_ms.append(elapsed)

        async def browser_loop(quota: int, record: bool) -> None:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=SERVICE
            ) as browser:
                for _ in range(quota):
                    await one_flow(browser, record)

        await browser_loop(warmup, record=False)
        quotas = [
            flows // concurrency + (1 if i < flows % concurrency else 0) for i in range(concurrency)
        ]
        began = time.perf_counter()
        async with anyio.create_task_group() as group:
            for quota in quotas:
                group.start_soon(browser_loop, quota, True)
        wall = time.perf_counter() - began
        stats = (await pagerduty.get("/_emulator/stats")).json()

    await app.state.pdauth.aclose()
    ordered = sorted(callback_ms)
    return {
        "flows": flows,
        "completed": len(callback_ms),
        "failed": failures,
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "flows_per_s": round(len(callback_ms) / wall, 1) if wall else None,
        "callback_p50_ms": round(statistics.median(ordered), 2) if ordered else None,
        "callback_p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2)
        if ordered
        else None,
        "token_requests": stats["token_requests_total"],
    }


@contextmanager
def _sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="pdauth-bench-") as directory:
        yield f"sqlite:///{directory}/bench.db"


@contextmanager
def _postgres_url() -> Iterator[str]:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo
    from sqlalchemy.engine import make_url

    base = os.environ.get("PDAUTH_TEST_PG_URL", PG_URL_DEFAULT)
    url = make_url(base)
    admin = make_conninfo(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        dbname="postgres",
        connect_timeout=5,
    )
    name = "pdauth_bench_" + os.urandom(6).hex()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="DIR", help="also write bench_connect.json here")
    parser.add_argument("--quick", action="store_true", help="a smoke run (few flows)")
    parser.add_argument("--flows", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=None)
    args = parser.parse_args(argv)
    flows = args.flows or (24 if args.quick else 300)
    concurrency = args.concurrency or (4 if args.quick else 8)
    warmup = 2 if args.quick else 10

    results: dict[str, Any] = {}
    for backend, make_url in (("sqlite", _sqlite_url), ("postgresql", _postgres_url)):
        try:
            with make_url() as url:
                results[backend] = anyio.run(_flows, url, flows, concurrency, warmup)
        except Exception as exc:  # an unreachable PostgreSQL is reported, not fatal
            if backend == "sqlite":
                raise
            results[backend] = {"skipped": f"{type(exc).__name__}: PostgreSQL unavailable"}

    print(f"Connect flows (in-process service + emulator), {flows} flows, {concurrency} at once")
    header = ("backend", "completed", "failed", "wall s", "flows/s", "callback p50 ms", "p99 ms")
    print("  ".join(f"{h:>15}" for h in header))
    for backend, row in results.items():
        if "skipped" in row:
            print(f"{backend:>15}  skipped: {row['skipped']}")
            continue
        cells = (
            backend,
            row["completed"],
            row["failed"],
            row["wall_s"],
            row["flows_per_s"],
            row["callback_p50_ms"],
            row["callback_p99_ms"],
        )
        print("  ".join(f"{c!s:>15}" for c in cells))

    write_report(args.json, "bench_connect", {"quick": args.quick, "results": results})
    failed = any(row.get("failed") for row in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
