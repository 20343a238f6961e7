"""One instance or three: token vending and connect flows through ``pdauth serve`` on PostgreSQL.

The deployment of docs/DEPLOYMENT.md at small scale: N ``pdauth serve`` processes (real
sockets, configured only by ``PDAUTH_*`` variables) share one PostgreSQL database and one
Redis; the emulator serves PagerDuty on a real socket; this script is the load balancer,
sending each request to the next instance in turn. Two loads, each for N = 1 and N = 3:

- connect flows: ``flows`` complete Connect flows (connect session minted by the backend,
  link opened, Connect pressed, consent approved at the emulator, callback answered), 8 at a
  time, each step on the next instance;
- token vending: ``POST /api/v1/connections/{id}/access-token`` over 20 connections, 16
  requests in flight, for ``seconds``.

Reported: flows/s and vends/s for each N, the ratio N=3 / N=1, p50/p99 latency and errors.
What it means on this machine: the load generator and every instance share 2 cores, so a
ratio near 1 says the instances add no contention of their own (the shared database and the
lease keep them correct), not that three instances would not scale on three machines.

Usage: ``.venv/bin/python benchmarks/bench_instances.py [--quick] [--json DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from urllib.parse import parse_qsl, urlsplit

import httpx
from _common import add_common_arguments, percentile, postgres_database, print_table, write_report

from pdauth.crypto import format_key, generate_key
from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.server import EmulatorServer
from pdauth.store import upgrade

API_KEY = "bench-instances-api-key-0123456789"
AUTH = {"authorization": f"Bearer {API_KEY}"}
REDIS_URL = "redis://127.0.0.1:6379/6"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
FLOW_CONCURRENCY = 8
VEND_CONCURRENCY = 16
VEND_CONNECTIONS = 20


@dataclass
class Result:
    instances: int
    load: str
    done: int
    errors: int
    seconds: float
    per_second: float
    p50_ms: float | None
    p99_ms: float | None


class Instance:
    """``pdauth serve --port 0`` as a child process; its URL from the line it prints."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pdauth", "serve", "--port", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.url: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            match = LISTENING.search(line)
            if match and self.url is None:
                self.url = match.group(1)
                self._ready.set()

    def wait(self, timeout: float = 90.0) -> str:
        if not self._ready.wait(timeout) or self.url is None:
            raise RuntimeError("pdauth serve did not start")
        return self.url

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def instances(count: int, env: dict[str, str]) -> Iterator[list[str]]:
    started = [Instance(env) for _ in range(count)]
    try:
        yield [instance.wait() for instance in started]
    finally:
        for instance in started:
            instance.stop()


def environment(emulator_url: str, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDAUTH_")}
    env.update(
        PDAUTH_CLIENT_ID="pdauth-demo",
        PDAUTH_CLIENT_SECRET="pdauth-demo-secret",
        PDAUTH_REDIRECT_URI="http://127.0.0.1:8000/callback",
        PDAUTH_SCOPES="read write",
        PDAUTH_IDENTITY_URL=emulator_url,
        PDAUTH_API_URL=emulator_url,
        PDAUTH_API_URL_EU=emulator_url + "/eu",
        PDAUTH_DATABASE_URL=database_url,
        PDAUTH_ENCRYPTION_KEYS=format_key(generate_key("bench1")),
        PDAUTH_SESSION_SECRET="s" * 48,
        PDAUTH_API_KEYS=API_KEY,
        PDAUTH_REDIS_URL=REDIS_URL,
        PDAUTH_CONNECT_RATE_LIMIT="0",  # the benchmark is one client address
        PDAUTH_KEEPER_INTERVAL="3600",
        PDAUTH_LOG_LEVEL="WARNING",
    )
    return env


async def connect_flow(
    http: httpx.AsyncClient, emulator: str, urls: Iterator[str], owner: str
) -> None:
    """One whole Connect flow, each step sent to the next instance."""
    made = await http.post(
        next(urls) + "/api/v1/connect-sessions", json={"owner": owner}, headers=AUTH
    )
    made.raise_for_status()
    link = urlsplit(made.json()["url"])
    async with httpx.AsyncClient(timeout=60) as browser:  # a cookie jar of its own
        base = next(urls)
        page = await browser.get(f"{base}{link.path}?{link.query}")
        token = CSRF.search(page.text)
        if page.status_code != 200 or token is None:
            raise RuntimeError(f"link page answered {page.status_code}")
        begun = await browser.post(
            base + "/connect", data={"csrf_token": token.group(1), "connect_session": "1"}
        )
        if begun.status_code != 303:
            raise RuntimeError(f"connect answered {begun.status_code}")
        params = dict(parse_qsl(urlsplit(begun.headers["location"]).query))
        approved = await http.post(
            emulator + "/_emulator/authorize", json={**params, "user": "admin@acme.example"}
        )
        back = urlsplit(approved.json()["redirect"])
        done = await browser.get(f"{next(urls)}{back.path}?{back.query}")
        if done.status_code != 303:
            raise RuntimeError(f"callback answered {done.status_code}")


async def run_flows(emulator: str, urls: list[str], flows: int, tag: str) -> Result:
    cycle = itertools.cycle(urls)
    latencies: list[float] = []
    errors = 0
    queue = iter(range(flows))

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal errors
        for n in queue:
            began = time.perf_counter()
            try:
                await connect_flow(http, emulator, cycle, f"{tag}-owner-{n}")
                latencies.append(time.perf_counter() - began)
            except (httpx.HTTPError, RuntimeError, KeyError, ValueError):
                errors += 1

    began = time.perf_counter()
    async with httpx.AsyncClient(timeout=60) as http:
        await asyncio.gather(*(worker(http) for _ in range(FLOW_CONCURRENCY)))
    elapsed = time.perf_counter() - began
    return _result(len(urls), "connect flows", latencies, errors, elapsed)


async def connection_ids(url: str) -> list[str]:
    async with httpx.AsyncClient(timeout=60) as http:
        listed = await http.get(url + "/api/v1/connections", headers=AUTH, params={"limit": 100})
        listed.raise_for_status()
        return [c["id"] for c in listed.json()["connections"]]


async def run_vending(urls: list[str], ids: list[str], seconds: float) -> Result:
    cycle = itertools.cycle(urls)
    targets = itertools.cycle(ids)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                answer = await http.post(
                    f"{next(cycle)}/api/v1/connections/{next(targets)}/access-token",
                    headers=AUTH,
                )
                if answer.status_code == 200:
                    latencies.append(time.perf_counter() - began)
                else:
                    errors += 1
            except httpx.HTTPError:
                errors += 1

    # Idle connections expire on the client first (2 s < uvicorn's 5 s keep-alive).
    limits = httpx.Limits(keepalive_expiry=2.0)
    began = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        await asyncio.gather(*(worker(http) for _ in range(VEND_CONCURRENCY)))
    elapsed = time.perf_counter() - began
    return _result(len(urls), "token vending", latencies, errors, elapsed)


def _result(n: int, load: str, latencies: list[float], errors: int, elapsed: float) -> Result:
    return Result(
        instances=n,
        load=load,
        done=len(latencies),
        errors=errors,
        seconds=round(elapsed, 2),
        per_second=round(len(latencies) / elapsed, 1),
        p50_ms=_ms(percentile(latencies, 0.5)),
        p99_ms=_ms(percentile(latencies, 0.99)),
    )


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def measure(count: int, flows: int, seconds: float) -> list[Result]:
    with ExitStack() as stack:
        database_url = stack.enter_context(postgres_database())
        emulator = stack.enter_context(EmulatorServer(EmulatorConfig(rate_limit=1_000_000)))
        upgrade(database_url)  # one migration runner before the instances start
        urls = stack.enter_context(instances(count, environment(emulator.url, database_url)))
        print(f"… {count} instance(s): {flows} connect flows, then {seconds:g} s of vending")
        flow_result = asyncio.run(run_flows(emulator.url, urls, flows, f"n{count}"))
        ids = asyncio.run(connection_ids(urls[0]))[:VEND_CONNECTIONS]
        vend_result = asyncio.run(run_vending(urls, ids, seconds))
        return [flow_result, vend_result]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "bench_instances")
    args = parser.parse_args()
    flows, seconds = (40, 5.0) if args.quick else (200, 20.0)
    try:
        results = measure(1, flows, seconds) + measure(3, flows, seconds)
    except Exception as exc:  # PostgreSQL or Redis missing: say so, exit non-zero
        print(f"bench_instances could not run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print_table(
        "pdauth serve x N on one PostgreSQL and one Redis (requests round-robin over instances)",
        ["load", "instances", "done", "errors", "s", "per s", "p50 ms", "p99 ms"],
        [
            [r.load, r.instances, r.done, r.errors, r.seconds, r.per_second, r.p50_ms, r.p99_ms]
            for r in results
        ],
    )
    ratios = {
        load: next(r.per_second for r in results if r.load == load and r.instances == 3)
        / max(next(r.per_second for r in results if r.load == load and r.instances == 1), 1e-9)
        for load in ("connect flows", "token vending")
    }
    print("ratio 3 / 1:", ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    path = write_report(
        args.json,
        "bench_instances",
        {
            "quick": args.quick,
            "results": [asdict(r) for r in results],
            "ratio_3_over_1": ratios,
        },
    )
    if path is not None:
        print(f"wrote {path}")
    return 0 if all(r.errors == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
