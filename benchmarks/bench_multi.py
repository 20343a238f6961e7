"""Pacing across processes: N OS processes x 8 tasks on one credential, with and without Redis.

One emulator serves a real socket with PagerDuty-style limits scaled down to 100 requests per
5 s window. For 2, 4 and 8 processes, each process runs a PagerDutyClient with 8 concurrent
tasks and the whole group sends ``N`` successful requests on the same credential, twice:

- ``local``: each process paces itself (the default per-process pacer) and believes it has the
  whole budget, so the group overshoots and PagerDuty answers 429 (the client then waits
  ``ratelimit-reset`` and retries: nothing fails, it just gets slower);
- ``redis``: every process paces through one :class:`~pdauth.client.RedisPacer` (Redis on
  ``--redis-url``, keys under a prefix of the run's own, deleted afterwards).

Reported per run: 429s the emulator served, the achieved rate as a fraction of L per W
(N / wall time / (100 / 5 s); wall time from the moment all processes are ready to the last
answer), and the longest single call (its waits included). Targets: with Redis, no 429 and
at least 0.95 L.

Usage: ``.venv/bin/python benchmarks/bench_multi.py [--quick] [--json DIR]
[--procs 2,4,8] [--redis-url URL]``
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import redis
from _common import add_common_arguments, print_table, write_report

from pdauth.client import LocalPacer, Pacer, PagerDutyClient, RedisPacer
from pdauth.client.credentials import ApiKeyToken
from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.server import EmulatorServer

LIMIT, WINDOW = 100, 5.0
TASKS = 8
PATHS = ["/users?limit=25&offset=0", "/incidents?limit=25", "/users?limit=25&offset=25"]


@dataclass
class Run:
    processes: int
    pacing: str
    requests: int
    wall_s: float
    rate_fraction: float
    rate_limited: int
    longest_call_s: float

    def tail(self) -> tuple[int, float]:
        return self.rate_limited, self.longest_call_s


@dataclass
class Job:
    """What one worker process needs (picklable: the spawn start method sends it)."""

    index: int
    base_url: str
    key: str
    requests: int
    redis_url: str | None
    prefix: str


async def _work(job: Job, barrier: Any) -> dict[str, float]:
    pacer: Pacer = RedisPacer(job.redis_url, prefix=job.prefix) if job.redis_url else LocalPacer()
    longest = 0.0
    counter = iter(range(job.requests))
    async with PagerDutyClient(
        job.base_url, ApiKeyToken(job.key), pacer=pacer, max_concurrency=TASKS, deadline=900
    ) as client:

        async def task() -> None:
            nonlocal longest
            for i in counter:
                start = time.monotonic()
                await client.get(PATHS[(job.index + i) % len(PATHS)])
                longest = max(longest, time.monotonic() - start)

        barrier.wait()  # every process imported and built its client: start together
        await asyncio.gather(*(task() for _ in range(TASKS)))
        finished = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process here
    if isinstance(pacer, RedisPacer):
        await pacer.aclose()
    return {"finished": finished, "longest": longest}


def worker(job: Job, barrier: Any, results: Any) -> None:
    results.put((job.index, asyncio.run(_work(job, barrier))))


def one_run(processes: int, total: int, redis_url: str | None) -> Run:
    ctx = mp.get_context("spawn")  # fresh interpreters: nothing shared but the socket
    prefix = f"pdauth-bench:{uuid.uuid4().hex}:"
    config = EmulatorConfig(rate_limit=LIMIT, rate_window=WINDOW)
    with EmulatorServer(config) as server:
        key = server.state.directory.api_keys["PACME01"].token
        barrier = ctx.Barrier(processes + 1)
        results = ctx.Queue()
        shares = [
            total // processes + (1 if i < total % processes else 0) for i in range(processes)
        ]
        procs = [
            ctx.Process(
                target=worker,
                args=(Job(i, server.url, key, shares[i], redis_url, prefix), barrier, results),
            )
            for i in range(processes)
        ]
        for proc in procs:
            proc.start()
        barrier.wait(timeout=300)
        started = time.monotonic()
        outcomes = dict(results.get(timeout=1800) for _ in procs)
        for proc in procs:
            proc.join(timeout=60)
        limited = server.state.stats.snapshot()["rate_limited"]
        assert isinstance(limited, dict)
    if redis_url:
        with redis.Redis.from_url(redis_url) as r:
            for stale in r.scan_iter(match=f"{prefix}*"):
                r.delete(stale)
    wall = max(o["finished"] for o in outcomes.values()) - started
    return Run(
        processes=processes,
        pacing="redis" if redis_url else "local",
        requests=total,
        wall_s=round(wall, 2),
        rate_fraction=round(total / wall / (LIMIT / WINDOW), 3),
        rate_limited=int(limited["total"]),
        longest_call_s=round(max(o["longest"] for o in outcomes.values()), 2),
    )


def redis_reachable(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=0.5) as r:
            return bool(r.ping())
    except redis.RedisError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "bench_multi")
    parser.add_argument("--procs", default="2,4,8", help="process counts (default 2,4,8)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    counts = [int(p) for p in args.procs.split(",") if p]
    total = 200 if args.quick else 600  # 2 or 6 windows' worth
    with_redis = redis_reachable(args.redis_url)
    if not with_redis:
        print(f"no Redis at {args.redis_url}: the shared-pacing runs are skipped")
    runs: list[Run] = []
    for processes in counts:
        for url in [None, args.redis_url] if with_redis else [None]:
            print(f"… {processes} processes x {TASKS} tasks, {'redis' if url else 'local'}")
            runs.append(one_run(processes, total, url))
    print_table(
        f"pacing one credential from several processes ({LIMIT} / {WINDOW:g} s, N={total})",
        ["processes", "pacing", "N", "wall s", "rate/L", "429s", "longest call s"],
        [[r.processes, r.pacing, r.requests, r.wall_s, r.rate_fraction, *r.tail()] for r in runs],
    )
    shared = [r for r in runs if r.pacing == "redis"]
    targets = {
        "redis_zero_429": bool(shared) and all(r.rate_limited == 0 for r in shared),
        "redis_at_least_0.95L": bool(shared) and all(r.rate_fraction >= 0.95 for r in shared),
    }
    print("targets:", ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in targets.items()))
    path = write_report(
        args.json,
        "bench_multi",
        {
            "quick": args.quick,
            "limit": LIMIT,
            "window_s": WINDOW,
            "tasks_per_process": TASKS,
            "runs": [asdict(r) for r in runs],
            "targets": targets,
        },
    )
    if path is not None:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
