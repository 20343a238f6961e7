"""One OS process of the refresh-storm tests: N concurrent ``access_token()`` calls.

Configured by ``PDAUTH_*`` environment variables (a real emulator socket, a shared database).
It builds its Connector, touches the database once, writes ``--ready``, waits for the
``--barrier`` file (so all processes start together), runs ``--tasks`` concurrent calls and
prints one JSON object: ``{"results": [["ok", sha256-of-token] | ["error", ErrorName], …]}``.
Tokens themselves are never printed.

Modes: ``normal``; ``no-lease`` (the negative control: the Connector gets a
:class:`~tests.workers.naive_store.NoLeaseStore`, whose lease never refuses); ``hang``
(token requests never leave this process, so it sits on the refresh lease until it is killed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import anyio
import httpx

from pdauth.config import Settings
from pdauth.connections import Connector
from pdauth.errors import PdauthError
from pdauth.store import AsyncStore, Store
from tests.workers.naive_store import NoLeaseStore


class SlowTokenEndpoint(httpx.AsyncBaseTransport):
    """Delays (or, with ``hang``, holds forever) requests to the token endpoint."""

    def __init__(self, delay: float, hang: bool) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.delay = delay
        self.hang = hang

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/token"):
            if self.hang:
                await anyio.sleep_forever()
            await anyio.sleep(self.delay)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:  # the Connector's httpx client closes its transport
        await self.inner.aclose()


async def main(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    transport = SlowTokenEndpoint(args.delay, hang=args.mode == "hang")
    results: list[list[str]] = []
    store: AsyncStore | None = None
    if args.mode == "no-lease":
        store = NoLeaseStore(Store(settings.database_url))
    async with Connector(settings, transport=transport, store=store) as connector:
        await connector.store.count_by_status()  # open the database before the start line
        with open(args.ready, "w") as ready:
            ready.write(str(os.getpid()))
        while not os.path.exists(args.barrier):
            await anyio.sleep(0.005)

        async def call() -> None:
            try:
                token = await connector.access_token(args.connection_id)
            except PdauthError as exc:
                results.append(["error", type(exc).__name__])
            else:
                results.append(["ok", hashlib.sha256(token.encode()).hexdigest()])

        async with anyio.create_task_group() as tg:
            for _ in range(args.tasks):
                tg.start_soon(call)
    if store is not None:
        await store.aclose()  # a store passed in is the caller's to close
    print(json.dumps({"results": results}))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--connection-id", required=True)
    parser.add_argument("--tasks", type=int, default=25)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--barrier", required=True)
    parser.add_argument("--mode", choices=["normal", "no-lease", "hang"], default="normal")
    parser.add_argument("--delay", type=float, default=0.0)
    sys.exit(anyio.run(main, parser.parse_args()))
