"""Benchmark: memory of ``pdauth serve`` holding many connections under a steady load.

Run alone: ``.venv/bin/python benchmarks/bench_memory.py [--json DIR] [--quick]``. Prints a
table (and writes ``bench_memory.json`` into DIR with ``--json``). Not a timed test: it reports.

For each database (SQLite file; PostgreSQL on ``PDAUTH_TEST_PG_URL``'s server, a fresh
``pdauth_bench_<random>`` database, reported as skipped when unreachable) and each size, the
benchmark migrates the schema, bulk-inserts that many active connections with AES-GCM encrypted
tokens (``_common.seed_connections``), starts the emulator on a real socket in this process and
``python -m pdauth serve`` as a **separate OS process** configured only by ``PDAUTH_*``
variables, then:

1. waits until ``/healthz`` answers and records the idle resident set (``VmRSS`` from
   ``/proc/<pid>/status``);
2. signs a few browsers in the way users are (connect-session link from the JSON API, the
   connect button, consent at the emulator, the callback) and an admin (``/admin/login``);
3. for a fixed duration, C concurrent clients on loopback send a steady closed-loop mix:
   80 % ``POST /api/v1/connections/{id}/access-token`` (token vending, each id taken in turn
   from a shuffled list of every seeded connection, so the TokenManager's cache keeps growing),
   8 % home page of a signed-in user, 8 % that user's connection page, 4 % the admin list
   (the first 1 000 connections rendered);
4. samples ``VmRSS``/``VmHWM`` of the serve process every 0.2 s, and reads its CPU time.

Reported: idle RSS, peak RSS (``VmHWM``, the kernel's high-water mark), RSS at the end,
requests served (2xx/3xx) and failed, throughput, p50/p99 latency of token vending, distinct
connections vended, the serve process's CPU seconds, and — measured at idle, before the load —
the median of 30 sequential ``GET /healthz`` on one keep-alive connection: the per-request floor
of the transport (it exposes e.g. Nagle's algorithm meeting delayed ACKs on loopback). Logging
is at WARNING (no access log) so the figures are the service's, not the log pipeline's.

A bounded run vends only a few thousand distinct connections, while a long-lived service
eventually caches an access token for every connection it vends (up to the TokenManager's cap,
200 000 entries). So a last part, in a fresh process, fills a TokenManager's cache with C
connections (SQLite, ``access_token()`` once each) and reports the bytes the cache holds per
connection (``sys.getsizeof`` over the cache dict, its keys, entries and their fields — this
peeks at ``TokenManager._cache``) and the process's RSS growth per connection, and
extrapolates the first to 100 000 connections and to the cap.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx
from _common import (
    add_common_arguments,
    percentile,
    postgres_database,
    print_table,
    seed_connections,
    sqlite_database,
    write_report,
)

from pdauth.config import Settings
from pdauth.crypto import KeyRing, format_key, generate_key
from pdauth.emulator import EmulatorConfig, EmulatorServer
from pdauth.emulator.state import OAuthApp
from pdauth.oauth import TokenSet
from pdauth.store import AsyncStore, Store, upgrade
from pdauth.tokens import TokenManager

NAME = "bench_memory"
CLIENT_ID = "pdauth-bench-memory"
CLIENT_SECRET = "bench-memory-client-secret"
API_KEY = "bench-memory-api-key-0123456789"
ADMIN_PASSWORD = "bench-memory-admin-password"
SESSION_SECRET = "bench-memory-session-secret-0123456789abcdef"
USER = "admin@acme.example"
BROWSERS = 4
SAMPLE_EVERY = 0.2
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
# The request mix: (name, weight).
# Clients drop an idle pooled connection well before uvicorn does (its keep-alive timeout is
# 5 s). httpx's default expiry is also 5 s, so a connection reused at the very moment the
# server closes it fails with ReadError (RST) or RemoteProtocolError (EOF): that was the one
# "admin:ReadError" in 3 560 requests — the admin client is the least busy, so its pooled
# connections sit idle longest. Reproduced with 60 clients requesting every 1.0 +- 0.02 s
# against uvicorn with a 1 s keep-alive: 9 errors in 784 requests at equal expiry, 0 in 802
# with the client's expiry at half the server's.
KEEPALIVE_EXPIRY = 2.0
MIX = (("vend", 80), ("home", 8), ("connection_page", 8), ("admin", 4))


def _limits(**sizes: int) -> httpx.Limits:
    """Pool limits whose idle expiry is below the server's keep-alive (see KEEPALIVE_EXPIRY)."""
    return httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY, **sizes)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in KiB (empty once the process is gone)."""
    found: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return found


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


class Sampler:
    """Samples VmRSS/VmHWM of a process on a background thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int, int]] = []  # (seconds since start, rss, hwm)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._t0 = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            status = _proc_status(self.pid)
            if status:
                self.samples.append((time.monotonic() - self._t0, status["VmRSS"], status["VmHWM"]))
            self._stop.wait(SAMPLE_EVERY)

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Load:
    """What the load generator saw."""

    counts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    vend_ms: list[float] = field(default_factory=list)
    ms_by_kind: dict[str, list[float]] = field(default_factory=dict)
    vended: set[str] = field(default_factory=set)


@dataclass
class Browser:
    client: httpx.AsyncClient
    connection_id: str


async def _sign_in(
    service: str, emulator: str, owner: str, api: httpx.AsyncClient, web: httpx.AsyncClient
) -> Browser:
    """A user's first visit: connect-session link → connect → consent → callback."""
    made = await api.post("/api/v1/connect-sessions", json={"owner": owner})
    made.raise_for_status()
    link = urlsplit(made.json()["url"])
    browser = httpx.AsyncClient(
        base_url=service, follow_redirects=False, timeout=30.0, limits=_limits()
    )
    try:
        page = await browser.get(f"{link.path}?{link.query}")
        csrf = _CSRF.search(page.text)
        if page.status_code != 200 or csrf is None:
            raise RuntimeError(f"connect-session page: {page.status_code}")
        start = await browser.post(
            "/connect", data={"csrf_token": csrf.group(1), "connect_session": "1"}
        )
        if start.status_code != 303:
            raise RuntimeError(f"POST /connect: {start.status_code}")
        params = dict(parse_qsl(urlsplit(start.headers["location"]).query))
        answer = await web.post("/_emulator/authorize", json={**params, "user": USER})
        callback = urlsplit(answer.json()["redirect"])
        done = await browser.get(f"{callback.path}?{callback.query}")
        if done.status_code != 303:
            raise RuntimeError(f"callback: {done.status_code}")
        listed = await api.get("/api/v1/connections", params={"owner": owner})
        connection_id: str = listed.json()["connections"][0]["id"]
    except BaseException:
        await browser.aclose()
        raise
    return Browser(browser, connection_id)


async def _admin(service: str) -> httpx.AsyncClient:
    admin = httpx.AsyncClient(
        base_url=service, follow_redirects=False, timeout=30.0, limits=_limits()
    )
    page = await admin.get("/admin")  # the sign-in form
    csrf = _CSRF.search(page.text)
    if csrf is None:
        await admin.aclose()
        raise RuntimeError("no CSRF token on the admin sign-in page")
    signed = await admin.post(
        "/admin/login", data={"csrf_token": csrf.group(1), "password": ADMIN_PASSWORD}
    )
    if signed.status_code != 303:
        await admin.aclose()
        raise RuntimeError(f"admin login: {signed.status_code}")
    return admin


async def _drive(
    service: str,
    emulator: str,
    ids: list[str],
    duration: float,
    concurrency: int,
    on_load_start: Callable[[], object],
) -> tuple[Load, float]:
    load = Load()
    order = list(ids)
    random.Random(7).shuffle(order)
    next_id: Iterator[str] = iter(order * 10)  # never exhausted within a bounded run
    names = [name for name, _ in MIX]
    weights = [weight for _, weight in MIX]
    rng = random.Random(11)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    limits = _limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency)
    async with (
        httpx.AsyncClient(base_url=service, headers=headers, timeout=30.0, limits=limits) as api,
        httpx.AsyncClient(base_url=emulator, timeout=30.0, limits=_limits()) as web,
    ):
        browsers = [
            await _sign_in(service, emulator, f"memory-owner-{i}", api, web)
            for i in range(BROWSERS)
        ]
        admin = await _admin(service)
        try:
            on_load_start()
            stop_at = time.monotonic() + duration

            async def one(kind: str) -> None:
                browser = rng.choice(browsers)
                began = time.perf_counter()
                if kind == "vend":
                    cid = next(next_id)
                    response = await api.post(f"/api/v1/connections/{cid}/access-token")
                    if response.status_code == 200:
                        load.vend_ms.append((time.perf_counter() - began) * 1000)
                        load.vended.add(cid)
                elif kind == "home":
                    response = await browser.client.get("/")
                elif kind == "connection_page":
                    response = await browser.client.get(f"/connections/{browser.connection_id}")
                else:
                    response = await admin.get("/admin")
                if response.status_code < 400:
                    load.counts[kind] += 1
                    spent = (time.perf_counter() - began) * 1000
                    load.ms_by_kind.setdefault(kind, []).append(spent)
                else:
                    load.failures[f"{kind}:{response.status_code}"] += 1

            async def worker() -> None:
                while time.monotonic() < stop_at:
                    kind = rng.choices(names, weights)[0]
                    try:
                        await one(kind)
                    except httpx.HTTPError as exc:
                        load.failures[f"{kind}:{type(exc).__name__}"] += 1

            began = time.monotonic()
            async with anyio.create_task_group() as tg:
                for _ in range(concurrency):
                    tg.start_soon(worker)
            elapsed = time.monotonic() - began
        finally:
            await admin.aclose()
            for b in browsers:
                await b.client.aclose()
    return load, elapsed


def _wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pdauth serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("pdauth serve did not answer /healthz in time")


def _sequential_healthz_ms(url: str, count: int = 30) -> float | None:
    """Median of sequential ``GET /healthz`` on one keep-alive connection: the floor every
    request to the process pays (it exposes transport delays such as Nagle + delayed ACK)."""
    times = []
    with httpx.Client(base_url=url, timeout=10.0, limits=_limits()) as client:
        for _ in range(count):
            began = time.perf_counter()
            client.get("/healthz")
            times.append((time.perf_counter() - began) * 1000)
    return percentile(times, 0.5)


def run_case(
    backend: str, db_url: str, size: int, duration: float, concurrency: int, idle_wait: float
) -> dict[str, Any]:
    keys_text = format_key(generate_key("mem1"))
    upgrade(db_url)
    store = Store(db_url)
    try:
        t0 = time.perf_counter()
        ids = seed_connections(store, KeyRing.from_config(keys_text), size, prefix="pdc_mem")
        seed_s = time.perf_counter() - t0
    finally:
        store.dispose()

    port = _free_port()
    service = f"http://127.0.0.1:{port}"
    with EmulatorServer(EmulatorConfig()) as srv:
        srv.state.register_app(
            OAuthApp(
                client_id=CLIENT_ID,
                name="pdauth memory benchmark",
                kind="classic",
                redirect_uris=(service + "/callback",),
                scopes=frozenset({"read", "write"}),
                client_secret=CLIENT_SECRET,
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PDAUTH_")}
        env.update(
            {
                "PDAUTH_CLIENT_ID": CLIENT_ID,
                "PDAUTH_CLIENT_SECRET": CLIENT_SECRET,
                "PDAUTH_REDIRECT_URI": service + "/callback",
                "PDAUTH_SCOPES": "read write",
                "PDAUTH_DATABASE_URL": db_url,
                "PDAUTH_ENCRYPTION_KEYS": keys_text,
                "PDAUTH_SESSION_SECRET": SESSION_SECRET,
                "PDAUTH_IDENTITY_URL": srv.url,
                "PDAUTH_API_URL": srv.url,
                "PDAUTH_API_URL_EU": srv.eu_api_url,
                "PDAUTH_API_KEYS": API_KEY,
                "PDAUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "PDAUTH_CONNECT_RATE_LIMIT": "0",
                "PDAUTH_LOG_LEVEL": "WARNING",
            }
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "pdauth", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_ready(service, proc)
            time.sleep(idle_wait)
            idle = _proc_status(proc.pid)
            floor_ms = _sequential_healthz_ms(service)
            cpu_before = _cpu_seconds(proc.pid)
            marks: dict[str, float] = {}
            with Sampler(proc.pid) as sampler:
                load, elapsed = anyio.run(
                    _drive,
                    service,
                    srv.url,
                    ids,
                    duration,
                    concurrency,
                    lambda: marks.setdefault("load", sampler.elapsed()),
                )
            cpu_after = _cpu_seconds(proc.pid)
            end = _proc_status(proc.pid)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                _, stderr = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, stderr = proc.communicate()
    if proc.returncode not in (0, -signal.SIGTERM):
        print(f"pdauth serve exited with {proc.returncode}: {stderr[-500:]}", file=sys.stderr)
    load_start = marks.get("load", 0.0)
    during = [rss for t, rss, _ in sampler.samples if t >= load_start]
    qs = [
        during[min(len(during) - 1, int(q * len(during)))] if during else None
        for q in (0.25, 0.5, 0.75)
    ]
    served = sum(load.counts.values())
    mib = 1024.0
    return {
        "backend": backend,
        "connections": size,
        "seed_s": round(seed_s, 1),
        "duration_s": round(elapsed, 1),
        "concurrency": concurrency,
        "idle_rss_mib": round(idle.get("VmRSS", 0) / mib, 1),
        "peak_rss_mib": round(end.get("VmHWM", 0) / mib, 1),
        "end_rss_mib": round(end.get("VmRSS", 0) / mib, 1),
        "rss_during_load_quartiles_mib": [None if q is None else round(q / mib, 1) for q in qs],
        "requests_served": served,
        "requests_by_kind": dict(load.counts),
        "p50_ms_by_kind": {
            kind: _rounded(percentile(ms, 0.5)) for kind, ms in sorted(load.ms_by_kind.items())
        },
        "failures": dict(load.failures),
        "requests_per_s": round(served / elapsed, 1) if elapsed else None,
        "healthz_sequential_p50_ms": _rounded(floor_ms),
        "vend_p50_ms": _rounded(percentile(load.vend_ms, 0.5)),
        "vend_p99_ms": _rounded(percentile(load.vend_ms, 0.99)),
        "distinct_connections_vended": len(load.vended),
        "serve_cpu_s": None
        if cpu_before is None or cpu_after is None
        else round(cpu_after - cpu_before, 1),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# -- the TokenManager cache, measured in-process -------------------------------------------------


class _NoRefresh:
    """The seeded tokens are valid for 30 days: a refresh would be a bug in the benchmark."""

    async def refresh(self, refresh_token: str) -> TokenSet:
        raise AssertionError("no refresh expected")

    async def client_credentials(self, scopes: tuple[str, ...] | frozenset[str]) -> TokenSet:
        raise AssertionError("no refresh expected")


async def _cache_footprint(db_url: str, keys_text: str, ids: list[str]) -> dict[str, Any]:
    """Memory per connection held in the TokenManager's cache after ``access_token()`` was
    asked once for each of ``ids`` (as a service vending every connection's token eventually
    does: entries are replaced, not dropped, until the cap): the exact size of the objects the
    cache holds, and this process's RSS growth (noisier: allocator arenas, dict resizes)."""
    settings = Settings(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri="http://127.0.0.1:8000/callback",
        database_url=db_url,
        encryption_keys=keys_text,
        identity_url="http://127.0.0.1:9",
        api_url="http://127.0.0.1:9",
        api_url_eu="http://127.0.0.1:9/eu",
    )
    store = AsyncStore(Store(db_url))
    manager = TokenManager(settings, store, _NoRefresh(), settings.key_ring())
    pid = os.getpid()
    try:
        for cid in ids[-200:]:  # warm-up: pool, worker thread, statement cache, code paths
            await manager.access_token(cid)
        manager.invalidate()
        gc.collect()
        before = _proc_status(pid)["VmRSS"]
        began = time.perf_counter()
        for cid in ids:
            await manager.access_token(cid)
        elapsed = time.perf_counter() - began
        gc.collect()
        after = _proc_status(pid)["VmRSS"]
        held = _deep_size(getattr(manager, "_cache", None))
    finally:
        await store.aclose()
    rss_per = (after - before) * 1024 / len(ids)
    per = held / len(ids) if held else None
    return {
        "cached_connections": len(ids),
        "bytes_per_cached_connection": None if per is None else round(per),
        "rss_growth_bytes_per_cached_connection": round(rss_per),
        "mib_at_100k": None if per is None else round(per * 100_000 / 2**20, 1),
        "mib_at_cap_200k": None if per is None else round(per * 200_000 / 2**20, 1),
        "fill_seconds": round(elapsed, 1),
    }


def _deep_size(cache: object) -> int | None:
    """Bytes of every object the cache dict holds (each counted once): the dict, its keys,
    its entries (frozen dataclasses) and their fields. None if the cache is not a dict of
    dataclasses (an internal detail of TokenManager this benchmark peeks at)."""
    if not isinstance(cache, dict):
        return None
    seen: set[int] = set()
    total = 0

    def add(obj: object) -> None:
        nonlocal total
        if id(obj) not in seen:
            seen.add(id(obj))
            total += sys.getsizeof(obj)

    add(cache)
    for key, entry in cache.items():
        add(key)
        add(entry)
        if not dataclasses.is_dataclass(entry):
            return None
        for f in dataclasses.fields(entry):
            add(getattr(entry, f.name))
    return total


def measure_cache(count: int) -> dict[str, Any]:
    """Seed ``count`` connections, then fill a cache in a fresh process (whose heap was not
    grown by the seeding, so its RSS growth is the cache's)."""
    keys_text = format_key(generate_key("mem2"))
    with sqlite_database() as url:
        upgrade(url)
        store = Store(url)
        try:
            seed_connections(store, KeyRing.from_config(keys_text), count, prefix="pdc_mem")
        finally:
            store.dispose()
        env = {**os.environ, "PDAUTH_ENCRYPTION_KEYS": keys_text}
        done = subprocess.run(
            [sys.executable, __file__, "_cache", url, str(count)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"the cache measurement failed: {done.stderr[-800:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _cache_main(url: str, count: int) -> int:
    ids = [f"pdc_mem{i:09d}" for i in range(count)]
    result = anyio.run(_cache_footprint, url, os.environ["PDAUTH_ENCRYPTION_KEYS"], ids)
    print(json.dumps(result))
    return 0


def main(argv: list[str]) -> int:
    if argv and argv[0] == "_cache":
        return _cache_main(argv[1], int(argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, NAME)
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--sizes", help="comma-separated connection counts (default 1000,100000; quick 10000)"
    )
    parser.add_argument("--duration", type=float, help="seconds of load (default 30, quick 8)")
    parser.add_argument("--concurrency", type=int, help="clients at once (default 16, quick 8)")
    parser.add_argument(
        "--cache-entries",
        type=int,
        help="connections cached in-process (default 20000, quick 2000)",
    )
    args = parser.parse_args(argv)
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([10_000] if args.quick else [1_000, 100_000])
    )
    duration = args.duration or (8.0 if args.quick else 30.0)
    concurrency = args.concurrency or (8 if args.quick else 16)
    idle_wait = 1.0 if args.quick else 3.0
    cache_entries = args.cache_entries or (5_000 if args.quick else 20_000)

    backends: list[tuple[str, Callable[[], AbstractContextManager[str]]]] = [
        ("sqlite", sqlite_database)
    ]
    if not args.no_postgres:
        backends.append(("postgresql", postgres_database))
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for backend, database in backends:
        for size in sizes:
            print(f"pdauth serve on {backend} with {size:,} connections...", file=sys.stderr)
            try:
                with database() as url:
                    rows.append(run_case(backend, url, size, duration, concurrency, idle_wait))
            except Exception as exc:
                if backend == "sqlite":
                    raise
                skipped[backend] = f"{type(exc).__name__}: {str(exc)[:200]}"
                break

    print_table(
        f"pdauth serve (separate process): RSS while serving a steady closed-loop load "
        f"({concurrency} clients; 80% token vending over every connection, 20% pages)",
        (
            "db / connections",
            "idle MiB",
            "peak MiB",
            "end MiB",
            "served",
            "failed",
            "req/s",
            "vend p50 ms",
            "vend p99 ms",
            "healthz ms",
            "distinct vended",
            "CPU s",
        ),
        [
            (
                f"{r['backend']} / {r['connections']:,}",
                r["idle_rss_mib"],
                r["peak_rss_mib"],
                r["end_rss_mib"],
                r["requests_served"],
                sum(r["failures"].values()),
                r["requests_per_s"],
                r["vend_p50_ms"],
                r["vend_p99_ms"],
                r["healthz_sequential_p50_ms"],
                r["distinct_connections_vended"],
                r["serve_cpu_s"],
            )
            for r in rows
        ],
    )
    for backend, why in skipped.items():
        print(f"{backend}: skipped ({why})")
    print(f"TokenManager cache: {cache_entries:,} connections in-process...", file=sys.stderr)
    cache = measure_cache(cache_entries)
    print_table(
        "TokenManager cache: memory per cached connection (fresh process; extrapolated)",
        (
            "cached connections",
            "bytes each",
            "RSS growth each",
            "MiB at 100k",
            "MiB at cap 200k",
            "fill s",
        ),
        [
            (
                cache["cached_connections"],
                cache["bytes_per_cached_connection"],
                cache["rss_growth_bytes_per_cached_connection"],
                cache["mib_at_100k"],
                cache["mib_at_cap_200k"],
                cache["fill_seconds"],
            )
        ],
    )
    write_report(
        args.json,
        NAME,
        {
            "quick": args.quick,
            "duration_s": duration,
            "concurrency": concurrency,
            "mix": dict(MIX),
            "results": rows,
            "skipped": skipped,
            "token_cache": cache,
        },
    )
    return 1 if any(r["failures"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
