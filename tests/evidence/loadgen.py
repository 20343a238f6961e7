"""A bounded load generator, run as its own OS process: POST …/access-token on loopback.

The API key comes from the ``LOADGEN_API_KEY`` environment variable (not the command line,
which other users of the machine can read). ``--concurrency`` workers share one keep-alive
``httpx.AsyncClient`` and send, round-robin over ``--ids``, at most ``--requests`` requests
in all, stopping early when ``--time-cap`` seconds have passed. It prints one JSON object:
how many were sent and completed, the statuses, the elapsed time, throughput (completed per
second), latency percentiles in milliseconds, and per connection a count of the tokens
received — as a short SHA-256 prefix, never the token. Transport errors are counted under
their class name, not raised.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
from collections import Counter, defaultdict

import httpx


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


async def run(args: argparse.Namespace) -> dict[str, object]:
    ids = args.ids.split(",")
    statuses: Counter[str] = Counter()
    tokens: dict[str, Counter[str]] = defaultdict(Counter)
    latencies: list[float] = []
    next_index = 0
    started = time.perf_counter()
    stop_at = started + args.time_cap
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    headers = {"Authorization": f"Bearer {os.environ['LOADGEN_API_KEY']}"}

    async with httpx.AsyncClient(base_url=args.url, limits=limits, timeout=30.0) as client:

        async def worker() -> None:
            nonlocal next_index
            while next_index < args.requests and time.perf_counter() < stop_at:
                connection_id = ids[next_index % len(ids)]
                next_index += 1
                sent = time.perf_counter()
                try:
                    response = await client.post(
                        f"/api/v1/connections/{connection_id}/access-token", headers=headers
                    )
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - sent)
                statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    token = response.json()["access_token"]
                    tokens[connection_id][hashlib.sha256(token.encode()).hexdigest()[:16]] += 1

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "sent": next_index,
        "completed": len(latencies),
        "capped": next_index < args.requests,
        "statuses": dict(statuses),
        "elapsed_s": round(elapsed, 3),
        "throughput_rps": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(1000 * percentile(ordered, 0.50), 2),
        "p99_ms": round(1000 * percentile(ordered, 0.99), 2),
        "max_ms": round(1000 * (ordered[-1] if ordered else 0.0), 2),
        "tokens": {cid: dict(found) for cid, found in tokens.items()},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--ids", required=True, help="comma-separated connection ids")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--time-cap", type=float, default=60.0)
    report = asyncio.run(run(parser.parse_args()))
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
