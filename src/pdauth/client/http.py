"""The httpx client under each of pdauth's outbound callers (the REST client, the identity
client, the Connector, the webhook sender): the caller's own, which pdauth never closes, or one
made here — its timeout set, redirects never followed — which its holder closes.
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["http_client"]


def http_client(
    http: httpx.AsyncClient | None,
    transport: httpx.AsyncBaseTransport | None,
    timeout: float,
    **options: Any,
) -> tuple[httpx.AsyncClient, bool]:
    """``(client, owned)``: ``http`` when given (``owned`` False: the caller closes it), else a
    new client over ``transport`` (``owned`` True). ``options`` go to the new client only."""
    if http is not None:
        return http, False
    client = httpx.AsyncClient(
        transport=transport, timeout=httpx.Timeout(timeout), follow_redirects=False, **options
    )
    return client, True
