"""Serving the service with uvicorn: in the foreground (``pdauth serve``, ``pdauth demo``) or on a
background thread (real-browser tests, benchmarks).

Two uvicorn settings matter for security and are fixed here: ``proxy_headers=False``, because
uvicorn would otherwise believe ``X-Forwarded-For``/``-Proto`` from 127.0.0.1 and rewrite the
client address — the service decides whom to believe itself (``PDAUTH_TRUSTED_PROXIES``,
docs/SECURITY.md item 41) — and ``server_header=False``. Access-log lines pass through
pdauth's redaction filter (``pdauth.logs``) when logging is configured by the CLI, so the
callback's ``code``/``state`` and connect-session tokens never reach a log.
"""

from __future__ import annotations

import logging
import socket

import uvicorn
from starlette.types import ASGIApp

from pdauth._net import ThreadedServer, bind_socket, keep_access_logger

__all__ = ["ServiceServer", "bind_socket", "uvicorn_config"]


def uvicorn_config(
    app: ASGIApp,
    *,
    access_log: bool = True,
    log_level: str | None = "info",
    certfile: str | None = None,
    keyfile: str | None = None,
) -> uvicorn.Config:
    config = uvicorn.Config(
        app,
        log_config=None,
        # None leaves the process-wide "uvicorn.*" logger levels as they are (a background
        # server must not silence the access log of another uvicorn in the same process).
        log_level=log_level.lower() if log_level is not None else None,
        access_log=access_log,
        lifespan="on",
        ws="none",
        proxy_headers=False,
        server_header=False,
        date_header=True,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        timeout_graceful_shutdown=2,
        # Longer than the idle timeout of clients' connection pools (httpx: 5 s, most
        # proxies: 60 s), so the client always closes an idle connection first and never
        # sends a request on one the server is closing.
        timeout_keep_alive=65,
    )
    if access_log:
        # Another uvicorn in this process (the demo's emulator) may have switched the shared
        # access logger off; lines propagate to pdauth's redacting root handler.
        logging.getLogger("uvicorn.access").propagate = True
    return config


class ServiceServer(ThreadedServer):
    """An ASGI app served by uvicorn on a background thread; a context manager.

    ``with ServiceServer(app, port=0) as srv: srv.url`` — binds first (so the port is known),
    serves HTTPS with ``certfile``/``keyfile`` (PEM),
    waits until uvicorn accepts connections, and on exit runs the app's lifespan shutdown,
    joins the thread and closes the socket.
    """

    what = "service"
    thread_name = "pdauth-service"
    grace = 15.0

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
        startup_timeout: float = 15.0,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        super().__init__(host=host, port=port, sock=sock, startup_timeout=startup_timeout)
        self.app = app
        self._certfile = certfile
        self._keyfile = keyfile

    @property
    def scheme(self) -> str:
        return "https" if self._certfile is not None else "http"

    def make_server(self) -> uvicorn.Server:
        with keep_access_logger():  # a test's server must not silence the host's access log
            config = uvicorn_config(
                self.app,
                access_log=False,
                log_level=None,
                certfile=self._certfile,
                keyfile=self._keyfile,
            )
        config.load()
        return uvicorn.Server(config)
