"""An OS process that refreshes one connection and freezes right after PagerDuty answered.

Configured by ``PDAUTH_*`` variables (a real emulator socket, a shared database). It calls
``access_token()`` once; its transport forwards the token request to PagerDuty and, when the
answer is a 200 — the refresh token is now rotated at PagerDuty — writes the ``--answered``
file and never hands the answer back to pdauth, so the new pair is never stored. The test then
SIGKILLs it: "a worker killed after the token endpoint answered, before the store write".
Nothing secret is printed or written.
"""

from __future__ import annotations

import argparse
import sys

import anyio
import httpx

from pdauth.config import Settings
from pdauth.connections import Connector


class FreezeAfterAnswer(httpx.AsyncBaseTransport):
    def __init__(self, answered: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.answered = answered

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/oauth/token") and response.status_code == 200:
            await response.aread()
            with open(self.answered, "w") as marker:
                marker.write("answered")
            await anyio.sleep_forever()  # killed here, before the store write
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def main(args: argparse.Namespace) -> int:
    async with Connector(
        Settings.from_env(), transport=FreezeAfterAnswer(args.answered)
    ) as connector:
        await connector.access_token(args.connection_id)
    return 1  # unreachable unless the refresh was not needed: the test sees the exit code


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--connection-id", required=True)
    parser.add_argument("--answered", required=True)
    sys.exit(anyio.run(main, parser.parse_args()))
