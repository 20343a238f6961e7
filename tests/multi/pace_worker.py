"""One OS process of the multi-instance pacing test (run as a script, configured by PDAUTH_*).

``pace_worker.py CONNECTION_ID TASKS CALLS START_AT``: opens a Connector from the environment
exactly as a host app would, waits until the wall-clock instant ``START_AT`` so that every
process starts together, then runs TASKS tasks of CALLS ``GET /users/me`` each through the
connection's client, and prints one JSON line: calls that succeeded, error names, the longest
call in seconds.
"""

from __future__ import annotations

import json
import sys
import time

import anyio

from pdauth import Connector, Settings


async def main(connection_id: str, tasks: int, calls: int, start_at: float) -> None:
    ok = 0
    errors: list[str] = []
    longest = 0.0
    connector = Connector(Settings.from_env())
    async with connector, await connector.client(connection_id) as pagerduty:

        async def worker() -> None:
            nonlocal ok, longest
            for _ in range(calls):
                began = time.monotonic()
                try:
                    await pagerduty.get("/users/me")
                    ok += 1
                except Exception as exc:  # reported, not raised: the test counts them
                    errors.append(type(exc).__name__)
                longest = max(longest, time.monotonic() - began)

        await anyio.sleep(max(0.0, start_at - time.time()))
        async with anyio.create_task_group() as group:
            for _ in range(tasks):
                group.start_soon(worker)
    print(json.dumps({"ok": ok, "errors": errors, "longest": round(longest, 3)}))


if __name__ == "__main__":
    cid, n_tasks, n_calls, start = sys.argv[1:5]
    anyio.run(main, cid, int(n_tasks), int(n_calls), float(start))
