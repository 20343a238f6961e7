"""uvicorn settings of ``pdauth serve``."""

from __future__ import annotations

from starlette.applications import Starlette

from pdauth.service.server import uvicorn_config


def test_keep_alive_outlasts_client_pools() -> None:
    # Clients' pools (httpx 5 s, most proxies 60 s) close idle connections first, so no
    # request is ever sent on a connection the server is closing.
    assert uvicorn_config(Starlette(), access_log=False).timeout_keep_alive == 65
