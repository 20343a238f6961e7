"""Benchmark: TokenManager.access_token() — cache hit, database path, and a refresh storm.

Run alone: ``.venv/bin/python benchmarks/bench_tokens.py [--json DIR] [--quick]``. Prints a table
(and writes ``bench_tokens.json`` into DIR with ``--json``). Not a timed test: it reports.

- cache hit: the token is in the in-process cache (no database, no crypto);
- database path: the cache is dropped before each call, so each call reads the row (primary-key
  lookup through AsyncStore's worker thread) and decrypts the token (AES-GCM);
- both with 1 000 and with 100 000 connections stored, on SQLite and on PostgreSQL (a fresh
  ``pdauth_bench_<random>`` database on ``PDAUTH_TEST_PG_URL``'s server, dropped afterwards);
- refresh storm: 4 OS processes x 25 concurrent tasks ask for the same expired connection,
  against the emulator on a real socket; wall time from the start line to the last answer,
  and the number of refreshes the emulator saw (must be 1).

Targets: cache hit median <= 20 us; database path grows < 1.2x from 1 000 to 100 000 rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx
import sqlalchemy as sa
from _common import write_report

from pdauth.clock import SystemClock
from pdauth.config import Settings
from pdauth.connections import Connector
from pdauth.crypto import KeyRing, format_key, generate_key
from pdauth.errors import PdauthError
from pdauth.oauth import TokenSet
from pdauth.sealing import GrantKey, Sealer, TokenColumn
from pdauth.store import AsyncStore, Store, upgrade
from pdauth.store.schema import connections
from pdauth.tokens import TokenManager

PG_URL_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/pdauth_test"
KEYS = format_key(generate_key("bench1"))
CACHE_TARGET_US = 20.0
GROWTH_TARGET = 1.2


class NoNetwork:
    """The benchmark's tokens never expire; a refresh would be a bug in the benchmark."""

    async def refresh(self, refresh_token: str) -> TokenSet:
        raise AssertionError("no refresh expected")

    async def client_credentials(self, scopes: tuple[str, ...] | frozenset[str]) -> TokenSet:
        raise AssertionError("no refresh expected")


def settings_for(db_url: str, base: str = "http://127.0.0.1:9") -> Settings:
    return Settings(
        client_id="pdauth-demo",
        client_secret="pdauth-demo-secret",
        redirect_uri="http://127.0.0.1:8000/callback",
        scopes=("read", "write"),
        database_url=db_url,
        encryption_keys=KEYS,
        identity_url=base,
        api_url=base,
        api_url_eu=base + "/eu",
        http_timeout=4.0,
        lease_seconds=6.0,
    )


# -- databases --------------------------------------------------------------------------------


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="pdauth-bench-") as tmp:
        yield "sqlite:///" + os.path.join(tmp, "bench.db")


@contextmanager
def postgres_database() -> Iterator[str]:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo
    from sqlalchemy.engine import make_url

    base = make_url(os.environ.get("PDAUTH_TEST_PG_URL", PG_URL_DEFAULT))
    admin = make_conninfo(
        host=base.host or "127.0.0.1",
        port=base.port or 5432,
        user=base.username or "postgres",
        password=base.password,
        dbname="postgres",
    )
    name = "pdauth_bench_" + os.urandom(6).hex()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def seed(store: Store, keys: KeyRing, start: int, stop: int, now: float) -> None:
    """Bulk-insert connections ``start..stop-1`` (tokens encrypted, bound to each row)."""
    sealer = Sealer(keys)
    chunk: list[dict[str, Any]] = []

    def flush() -> None:
        if chunk:
            with store.engine.begin() as conn:
                conn.execute(sa.insert(connections), chunk)
            chunk.clear()

    for i in range(start, stop):
        owner, user = f"owner-{i}", f"PU{i:07d}"

        def seal(value: str, column: TokenColumn, owner: str = owner, user: str = user) -> str:
            return sealer.seal_token(GrantKey(owner, "user", "PBENCH1", user), column, value)

        chunk.append(
            {
                "id": f"pdc_bench{i:09d}",
                "owner": owner,
                "kind": "user",
                "region": "us",
                "account_id": "PBENCH1",
                "subdomain": "bench",
                "pd_user_id": user,
                "pd_user_name": None,
                "pd_user_email": None,
                "delegation_id": None,
                "scopes": "openid read write",
                "status": "active",
                "access_token_ct": seal(f"pdus+_0BENCH_{i:09d}-access", "access_token"),
                "refresh_token_ct": seal(f"pdus+_1BENCH_{i:09d}-refresh", "refresh_token"),
                "key_id": keys.primary_key_id,
                "access_expires_at": now + 30 * 86_400,
                "refresh_expires_at": now + 210 * 86_400,
                "token_version": 1,
                "lease_owner": None,
                "lease_until": None,
                "created_at": now,
                "updated_at": now,
                "last_refreshed_at": now,
                "last_used_at": None,
                "last_error_code": None,
                "last_error_message": None,
                "last_error_at": None,
            }
        )
        if len(chunk) >= 5000:
            flush()
    flush()
    if store.dialect == "postgresql":
        with store.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE connections"))


# -- measurements -----------------------------------------------------------------------------


async def time_calls(call: Callable[[], Any], samples: int) -> list[float]:
    """Microseconds per call, one sample per call."""
    times: list[float] = []
    for _ in range(samples):
        t0 = time.perf_counter_ns()
        await call()
        times.append((time.perf_counter_ns() - t0) / 1000)
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_us": statistics.median(ordered),
        "p90_us": ordered[int(0.9 * (len(ordered) - 1))],
        "p99_us": ordered[int(0.99 * (len(ordered) - 1))],
        "samples": len(ordered),
    }


async def measure_backend(urls: dict[int, str], samples: int) -> list[dict[str, Any]]:
    """Seed one database per size, then measure them interleaved (round by round, order
    alternating), so load from anything else on the machine hits every size alike."""
    sizes = sorted(urls)
    stores: dict[int, Store] = {}
    managers: dict[int, TokenManager] = {}
    astores: list[AsyncStore] = []
    seed_seconds: dict[int, float] = {}
    rng = random.Random(1)
    try:
        for size in sizes:
            settings = settings_for(urls[size])
            keys = settings.key_ring()
            store = stores[size] = Store(urls[size])
            store.upgrade()
            t0 = time.perf_counter()
            seed(store, keys, 0, size, time.time())
            seed_seconds[size] = time.perf_counter() - t0
            astore = AsyncStore(store)
            astores.append(astore)
            managers[size] = TokenManager(settings, astore, NoNetwork(), keys, clock=SystemClock())

        def ids_of(size: int) -> list[str]:
            return [f"pdc_bench{i:09d}" for i in range(size)]

        ids = {size: ids_of(size) for size in sizes}

        async def from_db(size: int) -> None:
            cid = rng.choice(ids[size])
            managers[size].invalidate(cid)
            await managers[size].access_token(cid)

        cache: dict[int, list[float]] = {size: [] for size in sizes}
        database: dict[int, list[float]] = {size: [] for size in sizes}
        for size in sizes:  # warm-up: pool connections, page cache, the hot cache entry
            await managers[size].access_token(ids[size][0])
            for _ in range(50):
                await from_db(size)
        batch = 50
        for round_no in range(max(1, samples // batch)):
            for size in sizes if round_no % 2 == 0 else reversed(sizes):
                hot = ids[size][0]
                manager = managers[size]

                async def cached(manager: TokenManager = manager, hot: str = hot) -> None:
                    await manager.access_token(hot)

                async def uncached(size: int = size) -> None:
                    await from_db(size)

                cache[size] += await time_calls(cached, batch * 10)
                database[size] += await time_calls(uncached, batch)
        return [
            {
                "backend": stores[size].dialect,
                "connections": size,
                "seed_seconds": round(seed_seconds[size], 2),
                "cache_hit": summary(cache[size]),
                "database_path": summary(database[size]),
            }
            for size in sizes
        ]
    finally:
        for astore in astores:
            await astore.aclose()


# -- refresh storm ----------------------------------------------------------------------------


async def _storm_connect(settings: Settings, base: str) -> str:
    async with Connector(settings) as connector, httpx.AsyncClient(base_url=base) as web:
        start = await connector.begin("bench-owner")
        params = dict(parse_qsl(urlsplit(start.url).query))
        answer = await web.post(
            "/_emulator/authorize",
            json={**params, "user": "admin@acme.example", "decision": "approve"},
        )
        query = urlsplit(answer.json()["redirect"]).query
        conn = await connector.complete(query, start.binding)
        return conn.id


def run_storm(url: str, processes: int, tasks: int) -> dict[str, Any]:
    from pdauth.emulator import EmulatorConfig, EmulatorServer

    with (
        EmulatorServer(EmulatorConfig(access_token_ttl=3600)) as srv,
        tempfile.TemporaryDirectory() as tmp,
    ):
        settings = settings_for(url, srv.url)
        upgrade(url)
        connection_id = anyio.run(_storm_connect, settings, srv.url)
        store = Store(url)
        try:
            with store.engine.begin() as conn:
                conn.execute(
                    sa.text("UPDATE connections SET access_expires_at = :t WHERE id = :i"),
                    {"t": time.time() - 10, "i": connection_id},
                )
        finally:
            store.dispose()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PDAUTH_")}
        env.update(
            {
                "PDAUTH_CLIENT_ID": settings.client_id,
                "PDAUTH_CLIENT_SECRET": "pdauth-demo-secret",
                "PDAUTH_REDIRECT_URI": settings.redirect_uri,
                "PDAUTH_SCOPES": "read write",
                "PDAUTH_DATABASE_URL": url,
                "PDAUTH_ENCRYPTION_KEYS": KEYS,
                "PDAUTH_IDENTITY_URL": srv.url,
                "PDAUTH_API_URL": srv.url,
                "PDAUTH_API_URL_EU": srv.url + "/eu",
                "PDAUTH_HTTP_TIMEOUT": "4",
                "PDAUTH_LEASE_SECONDS": "6",
            }
        )
        go = Path(tmp) / "go"
        launched = time.perf_counter()
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "_worker",
                    connection_id,
                    str(tasks),
                    str(go),
                    str(Path(tmp) / f"ready-{i}"),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(processes)
        ]
        try:
            while not all((Path(tmp) / f"ready-{i}").exists() for i in range(processes)):
                if any(w.poll() is not None for w in workers):
                    raise RuntimeError("a storm worker died: " + workers[0].communicate()[1][-500:])
                time.sleep(0.01)
            ready = time.perf_counter()
            go.write_text(str(time.time()))
            outputs = [w.communicate(timeout=120) for w in workers]
            finished = time.perf_counter()
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.communicate()
        results: list[Any] = []
        for out, _ in outputs:
            results.extend(json.loads(out)["results"])
        stats = httpx.get(srv.url + "/_emulator/stats").json()
    ok = [r for r in results if r[0] == "ok"]
    return {
        "backend": "sqlite" if url.startswith("sqlite") else "postgresql",
        "processes": processes,
        "tasks_per_process": tasks,
        "callers_ok": len(ok),
        "distinct_tokens": len({r[1] for r in ok}),
        "refreshes": sum(stats["token_requests"].get("refresh_token", {}).values()),
        "storm_wall_seconds": round(finished - ready, 3),
        "including_process_start_seconds": round(finished - launched, 3),
    }


async def _worker(connection_id: str, tasks: int, go: str, ready: str) -> None:
    settings = Settings.from_env()
    results: list[list[str]] = []
    async with Connector(settings) as connector:
        await connector.store.count_by_status()
        await anyio.Path(ready).write_text(str(os.getpid()))
        # Another process creates the start file; polling a file is the simplest barrier.
        while not await anyio.Path(go).exists():  # noqa: ASYNC110
            await anyio.sleep(0.002)

        async def call() -> None:
            try:
                token = await connector.access_token(connection_id)
            except PdauthError as exc:
                results.append(["error", type(exc).__name__])
            else:
                results.append(["ok", hashlib.sha256(token.encode()).hexdigest()])

        async with anyio.create_task_group() as tg:
            for _ in range(tasks):
                tg.start_soon(call)
    print(json.dumps({"results": results}))


# -- report -----------------------------------------------------------------------------------


def print_table(rows: list[dict[str, Any]], storms: list[dict[str, Any]]) -> None:
    print()
    print(
        f"{'backend':<11} {'connections':>11} {'path':<14} {'median µs':>10} {'p90 µs':>9} "
        f"{'p99 µs':>9} {'samples':>8}"
    )
    print("-" * 78)
    for row in rows:
        for path in ("cache_hit", "database_path"):
            s = row[path]
            print(
                f"{row['backend']:<11} {row['connections']:>11,} {path:<14} "
                f"{s['median_us']:>10.1f} {s['p90_us']:>9.1f} {s['p99_us']:>9.1f} "
                f"{s['samples']:>8}"
            )
    print()
    for backend in sorted({r["backend"] for r in rows}):
        mine = [r for r in rows if r["backend"] == backend]
        if len(mine) >= 2:
            small, large = mine[0], mine[-1]
            growth = large["database_path"]["median_us"] / small["database_path"]["median_us"]
            verdict = "ok" if growth < GROWTH_TARGET else "OVER TARGET"
            print(
                f"{backend}: database path {small['connections']:,} -> "
                f"{large['connections']:,} rows: x{growth:.2f} (target < {GROWTH_TARGET}) {verdict}"
            )
        worst_cache = max(r["cache_hit"]["median_us"] for r in mine)
        verdict = "ok" if worst_cache <= CACHE_TARGET_US else "OVER TARGET"
        print(
            f"{backend}: cache hit median {worst_cache:.2f} µs (target <= {CACHE_TARGET_US}) "
            f"{verdict}"
        )
    if storms:
        print()
        print(
            f"{'storm backend':<14} {'callers':>8} {'ok':>5} {'tokens':>7} {'refreshes':>10} "
            f"{'wall s':>8} {'with start s':>13}"
        )
        print("-" * 70)
        for s in storms:
            print(
                f"{s['backend']:<14} {s['processes'] * s['tasks_per_process']:>8} "
                f"{s['callers_ok']:>5} {s['distinct_tokens']:>7} {s['refreshes']:>10} "
                f"{s['storm_wall_seconds']:>8.3f} {s['including_process_start_seconds']:>13.3f}"
            )


def main(argv: list[str]) -> int:
    if argv and argv[0] == "_worker":
        anyio.run(_worker, argv[1], int(argv[2]), argv[3], argv[4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="DIR", help="write bench_tokens.json into DIR")
    parser.add_argument("--quick", action="store_true", help="small sizes, few samples")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    sizes = [1_000, 10_000] if args.quick else [1_000, 100_000]
    samples = 300 if args.quick else 2_000
    storm_shape = (2, 10) if args.quick else (4, 25)

    rows: list[dict[str, Any]] = []
    storms: list[dict[str, Any]] = []
    backends: list[tuple[str, Callable[[], Any]]] = [("sqlite", sqlite_database)]
    if not args.no_postgres:
        backends.append(("postgresql", postgres_database))
    for name, database in backends:
        try:
            with ExitStack() as stack:
                urls = {size: stack.enter_context(database()) for size in sizes}
                print(
                    f"measuring {name} ({', '.join(f'{s:,}' for s in sizes)} connections)...",
                    file=sys.stderr,
                )
                rows.extend(anyio.run(measure_backend, urls, samples))
            with database() as url:
                print(f"refresh storm on {name}...", file=sys.stderr)
                storms.append(run_storm(url, *storm_shape))
        except Exception as exc:  # report it and go on with the other backend
            print(f"{name}: skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
    print_table(rows, storms)
    report = {
        "quick": args.quick,
        "access_token": rows,
        "refresh_storm": storms,
        "targets": {"cache_hit_median_us": CACHE_TARGET_US, "db_growth": GROWTH_TARGET},
    }
    write_report(args.json, "bench_tokens", report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
