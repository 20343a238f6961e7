"""Benchmark: PagerDuty's events per connection — incident to host hook, restarts, throughput.

Run alone: ``.venv/bin/python benchmarks/bench_pd_events.py [--json DIR] [--quick]``. Prints
tables (and writes ``bench_pd_events.json`` into DIR with ``--json``). Not a timed test.

Set-up: the emulator (real time, PagerDuty's retry schedule scaled by 1/1000) and the pdauth
service app run in-process; the emulator's deliveries reach the app's real receiver route
through ``httpx.ASGITransport`` (no network), SQLite underneath. ``C`` connections (distinct
owners) of one PagerDuty account are subscribed by the keeper, so every incident is delivered
once per connection: ``N`` incidents make ``C x N`` deliveries.

1. **Latency**: time from ``POST /_emulator/incidents`` to the Python hook
   (``Connector.on_pagerduty_event``), per delivery: median, p99, max. In a burst (the
   default) this measures the backlog: PagerDuty delivers each subscription's webhooks in
   order, so the last of ``N`` waits for the ``N - 1`` before it; ``--spread S`` creates the
   incidents over ``S`` seconds instead (below capacity: the per-delivery latency).
2. **Restarts**: the same, while the receiver is "restarted" every few hundred milliseconds
   (a new service app and Connector on the same database; unreachable — 503 — in between) and
   some answers are lost after recording. Counted: deliveries lost (an incident x connection
   pair never recorded) and duplicated (recorded twice); PagerDuty's own give-up after 5
   attempts is reported apart.
3. **Receiver throughput**: signed deliveries POSTed straight to the receiver route by 8
   concurrent senders: accepted per second.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx
from _common import percentile, print_table, sqlite_database, write_report
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette

from pdauth.config import Settings
from pdauth.connections import Connector
from pdauth.crypto import format_key, generate_key
from pdauth.emulator import EmulatorConfig, create_app as create_emulator
from pdauth.emulator.app import build_state
from pdauth.emulator.state import EmulatorClock, EmulatorState, KeyRing
from pdauth.keeper import Keeper
from pdauth.pagerduty_webhooks import sign
from pdauth.service import create_app
from pdauth.store import Store
from pdauth.subscriptions import PagerDutyNotice, events_of

BASE = "http://127.0.0.1:9"
SERVICE = "http://127.0.0.1:8000"
EVENTS = ("incident.triggered",)


@functools.cache
def _signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _settings(db_url: str) -> Settings:
    return Settings(
        client_id="pdauth-demo",
        client_secret="pdauth-demo-secret",
        redirect_uri=SERVICE + "/callback",
        scopes=("read", "write"),
        encryption_keys=format_key(generate_key("bench")),
        session_secret="bench-session-secret-0123456789abcdef",
        identity_url=BASE,
        api_url=BASE,
        api_url_eu=BASE + "/eu",
        database_url=db_url,
        pagerduty_events=EVENTS,
    )


class Gate(httpx.AsyncBaseTransport):
    """Between the emulator and pdauth: down (503 without passing on), or lose an answer."""

    def __init__(self, app: Starlette) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.down = False
        self.lose_every = 0  # lose the answer of every n-th delivery (0: never)
        self.seen = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            return httpx.Response(503)
        self.seen += 1
        number = self.seen
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if self.lose_every and number % self.lose_every == 0:
            return httpx.Response(503)
        return response


class Bench:
    """One emulator, one database, ``C`` subscribed connections, a hook that stamps arrivals."""

    def __init__(self, state: EmulatorState, settings: Settings, store: Store) -> None:
        self.state, self.settings, self.store = state, settings, store
        self.emulator = create_emulator(state=state)
        self.control = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.emulator), base_url=BASE
        )
        self.arrivals: dict[tuple[str, str], list[float]] = {}
        self.created: dict[str, float] = {}
        self.connectors: list[Connector] = []
        self.account = ""

    def connector(self) -> Connector:
        c = Connector(
            self.settings, transport=httpx.ASGITransport(app=self.emulator), store=self.store
        )
        c.on_pagerduty_event(self.hook)
        self.connectors.append(c)
        return c

    def hook(self, notice: PagerDutyNotice) -> None:
        key = (str(notice.event.data.get("id")), notice.connection_id)
        self.arrivals.setdefault(key, []).append(time.perf_counter())

    async def connect(self, connector: Connector, owner: str) -> None:
        start = await connector.begin(owner)
        params = dict(parse_qsl(urlsplit(start.url).query))
        body = {**params, "user": "admin@acme.example", "decision": "approve"}
        answer = await self.control.post("/_emulator/authorize", json=body)
        query = urlsplit(answer.json()["redirect"]).query
        self.account = (await connector.complete(query, start.binding)).account_id

    async def incidents(self, count: int, concurrency: int = 4, spread: float = 0.0) -> None:
        """Create ``count`` incidents, at most ``concurrency`` at once, over ``spread`` s."""
        limiter = anyio.CapacityLimiter(concurrency)

        async def one(i: int) -> None:
            await anyio.sleep(spread * i / max(count, 1))
            async with limiter:
                t0 = time.perf_counter()
                answer = await self.control.post(
                    "/_emulator/incidents", json={"account": self.account, "title": f"i{i}"}
                )
                self.created[answer.json()["incident"]["id"]] = t0

        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(one, i)

    async def drain(self, expected: int, within: float) -> None:
        """Until ``expected`` arrivals and nothing queued at the emulator (or ``within`` s)."""
        with anyio.move_on_after(within):
            while self.busy(expected):  # noqa: ASYNC110 - two sources, no common event
                await anyio.sleep(0.02)

    def busy(self, expected: int) -> bool:
        arrived = sum(len(v) for v in self.arrivals.values())
        return arrived < expected or bool(self.state.webhooks.stats()["pending"])

    def latencies(self) -> list[float]:
        return [
            (times[0] - self.created[incident]) * 1000
            for (incident, _), times in self.arrivals.items()
            if incident in self.created
        ]


async def _setup(db_url: str, connections: int) -> tuple[Bench, Connector, Gate]:
    Store(db_url).upgrade()
    config = EmulatorConfig(webhook_retry_scale=0.001)
    state = build_state(config, clock=EmulatorClock(), keys=KeyRing(_signing_key()))
    bench = Bench(state, _settings(db_url), Store(db_url))
    connector = bench.connector()
    gate = Gate(create_app(bench.settings, connector=connector))
    state.webhooks.transport = gate
    for i in range(connections):
        await bench.connect(connector, f"owner-{i}")
    async with Keeper(connector) as keeper:
        await keeper.run_once()
    return bench, connector, gate


async def _latency(connections: int, incidents: int, spread: float) -> dict[str, Any]:
    with sqlite_database() as db_url:
        bench, _, _ = await _setup(db_url, connections)
        t0 = time.perf_counter()
        await bench.incidents(incidents, spread=spread)
        await bench.drain(connections * incidents, within=600)
        elapsed = time.perf_counter() - t0
        lat = bench.latencies()
        await _close(bench)
    got = sum(len(v) for v in bench.arrivals.values())
    return {
        "connections": connections,
        "incidents": incidents,
        "spread_s": spread,
        "deliveries": got,
        "expected": connections * incidents,
        "median_ms": percentile(lat, 0.5),
        "p99_ms": percentile(lat, 0.99),
        "max_ms": max(lat) if lat else None,
        "deliveries_per_s": got / elapsed if elapsed else None,
    }


async def _restarts(connections: int, incidents: int, period: float) -> dict[str, Any]:
    with sqlite_database() as db_url:
        bench, _, gate = await _setup(db_url, connections)
        gate.lose_every = 17
        restarts = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(bench.incidents, incidents, spread=4.0))

            async def restart_loop() -> None:
                nonlocal restarts
                while True:
                    await anyio.sleep(period)
                    gate.down = True  # the process is gone
                    await anyio.sleep(period / 5)
                    fresh = bench.connector()  # a new process on the same database
                    gate.inner = httpx.ASGITransport(
                        app=create_app(bench.settings, connector=fresh)
                    )
                    gate.down = False
                    restarts += 1

            tg.start_soon(restart_loop)
            await anyio.sleep(4.5)
            await bench.drain(connections * incidents, within=600)
            tg.cancel_scope.cancel()
        stats = bench.state.webhooks.stats()
        rows = _count_events(bench.store)
        await _close(bench)
    pairs = {k: len(v) for k, v in bench.arrivals.items()}
    expected = connections * incidents
    return {
        "connections": connections,
        "incidents": incidents,
        "restarts": restarts,
        "expected": expected,
        "events_recorded": rows,
        "lost": expected - len(pairs),
        "duplicated_hooks": sum(n - 1 for n in pairs.values()),
        "duplicated_events": rows - len(pairs) if rows >= len(pairs) else 0,
        "pagerduty_gave_up": stats["failed"],
        "retries": stats["retries"],
    }


def _count_events(store: Store) -> int:
    total, after = 0, 0
    while True:
        page = store.list_events(after_id=after, limit=1000, type="pagerduty.incident.triggered")
        total += len(page)
        if len(page) < 1000:
            return total
        after = page[-1].id


async def _throughput(deliveries: int, senders: int = 8) -> dict[str, Any]:
    with sqlite_database() as db_url:
        bench, connector, _ = await _setup(db_url, 1)
        sub = await events_of(connector).store.get_subscription(connector_ids(bench)[0])
        assert sub is not None
        pd_sub = next(iter(bench.state.webhooks.subscriptions.values()))
        secret = pd_sub.secrets[0]
        app = create_app(bench.settings, connector=connector)
        path = f"/pagerduty/webhooks/{sub.key}"
        accepted = 0
        limiter = anyio.CapacityLimiter(senders)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=SERVICE) as c:

            async def one(i: int) -> None:
                nonlocal accepted
                body = _body(i)
                headers = {"X-PagerDuty-Signature": sign([secret], body), "X-Webhook-Id": str(i)}
                async with limiter:
                    response = await c.post(path, content=body, headers=headers)
                if response.status_code == 202:
                    accepted += 1

            t0 = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for i in range(deliveries):
                    tg.start_soon(one, i)
            elapsed = time.perf_counter() - t0
        await _close(bench)
    return {"deliveries": deliveries, "accepted": accepted, "per_s": accepted / elapsed}


def connector_ids(bench: Bench) -> list[str]:
    return [r.id for r in bench.store.list_connections(limit=10)]


def _body(i: int) -> bytes:
    event = {
        "id": str(uuid.uuid4()),
        "event_type": "incident.triggered",
        "resource_type": "incident",
        "occurred_at": "2027-01-15T08:00:00.000Z",
        "agent": None,
        "client": None,
        "data": {"id": f"P{i:06d}", "type": "incident", "title": f"incident {i}"},
    }
    return json.dumps({"event": event}).encode()


async def _close(bench: Bench) -> None:
    await bench.state.webhooks.aclose()
    for c in bench.connectors:
        await c.aclose()
    await bench.control.aclose()
    bench.store.dispose()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    c, n = (10, 20) if args.quick else (args.connections, args.incidents)
    latency = await _latency(c, n, args.spread)
    how = f"over {args.spread:g} s" if args.spread else "in a burst"
    print_table(
        f"incident -> host hook ({c} connections x {n} incidents {how}, in-process)",
        ("deliveries", "median ms", "p99 ms", "max ms", "deliveries/s"),
        [
            (
                f"{latency['deliveries']}/{latency['expected']}",
                _f(latency["median_ms"]),
                _f(latency["p99_ms"]),
                _f(latency["max_ms"]),
                _f(latency["deliveries_per_s"]),
            )
        ],
    )
    rc, rn = (5, 20) if args.quick else (min(c, 20), min(n, 200))
    restarts = await _restarts(rc, rn, period=0.3)
    print_table(
        f"receiver restarts ({rc} connections x {rn} incidents)",
        ("restarts", "expected", "lost", "dup hooks", "dup events", "PD gave up", "retries"),
        [
            (
                restarts["restarts"],
                restarts["expected"],
                restarts["lost"],
                restarts["duplicated_hooks"],
                restarts["duplicated_events"],
                restarts["pagerduty_gave_up"],
                restarts["retries"],
            )
        ],
    )
    throughput = await _throughput(200 if args.quick else 2000)
    print_table(
        "receiver throughput (signed deliveries, 8 senders)",
        ("deliveries", "accepted", "per second"),
        [(throughput["deliveries"], throughput["accepted"], _f(throughput["per_s"]))],
    )
    return {"latency": latency, "restarts": restarts, "throughput": throughput}


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="DIR", help="also write bench_pd_events.json into DIR")
    parser.add_argument("--quick", action="store_true", help="a smoke run (small sizes)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--incidents", type=int, default=1000)
    parser.add_argument(
        "--spread", type=float, default=0.0, help="create the incidents over this many seconds"
    )
    ns = parser.parse_args()
    os.environ.setdefault("PDAUTH_LOG_LEVEL", "WARNING")
    report = anyio.run(main, ns)
    write_report(ns.json, "bench_pd_events", report)
    sys.exit(0)
