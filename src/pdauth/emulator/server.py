"""``EmulatorServer``: the emulator on a real socket, in a background thread (tests, demo, benches).

Binds the socket itself (port 0 → a free port, known before serving), loads uvicorn's config —
including TLS — in the caller's thread so a bad certificate raises there, then serves with
``uvicorn.Server`` on its own event loop in a daemon thread and waits until it accepts
connections. ``stop()`` asks uvicorn to exit, waits for the thread and closes the socket, so no
ResourceWarning or thread leaks remain. Usage::

    with EmulatorServer(EmulatorConfig(seed=7), certfile=cert, keyfile=key) as srv:
        httpx.get(srv.url + "/global/oauth/anonymous/jwks", verify=ca_path)
"""

from __future__ import annotations

import os
import socket
import threading

import uvicorn
from starlette.applications import Starlette

from pdauth._net import bind_socket, format_url, start_daemon
from pdauth.emulator.app import create_app
from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.state import EmulatorState

__all__ = ["EmulatorServer", "bind_socket", "format_url"]


class EmulatorServer:
    """The emulator served by uvicorn in a background thread; a context manager.

    ``url`` is the identity and US API base, ``eu_api_url`` the EU one; ``state`` is the live
    :class:`EmulatorState` (advance its clock, inject faults, inspect tokens).
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        state: EmulatorState | None = None,
        app: Starlette | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        certfile: str | os.PathLike[str] | None = None,
        keyfile: str | os.PathLike[str] | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        if keyfile is not None and certfile is None:
            raise ValueError("a keyfile needs a certfile")
        self.app = app if app is not None else create_app(config, state=state)
        self.state: EmulatorState = self.app.state.emulator
        self.host = host
        self._requested_port = port
        self._certfile = certfile
        self._keyfile = keyfile
        self._startup_timeout = startup_timeout
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def scheme(self) -> str:
        return "https" if self._certfile is not None else "http"

    @property
    def url(self) -> str:
        """Base URL of the identity service and of the US REST API."""
        if self._server is None:
            raise RuntimeError("the emulator server is not running")
        return format_url(self.scheme, self.host, self.port)

    @property
    def identity_url(self) -> str:
        return self.url

    @property
    def us_api_url(self) -> str:
        return self.url

    @property
    def eu_api_url(self) -> str:
        return self.url + "/eu"

    def start(self) -> EmulatorServer:
        if self._server is not None:
            raise RuntimeError("the emulator server is already running")
        sock = bind_socket(self.host, self._requested_port)
        try:
            config = uvicorn.Config(
                self.app,
                log_config=None,
                log_level="warning",
                access_log=False,
                lifespan="off",
                ws="none",
                ssl_certfile=self._certfile,
                ssl_keyfile=self._keyfile,
                # A request parked by an injected "timeout" fault must not hold up stop().
                timeout_graceful_shutdown=1,
            )
            config.load()  # here, so a bad certificate raises in the caller's thread
            server = uvicorn.Server(config)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._server = server
        self._thread, ready = start_daemon(
            lambda: server.run(sockets=[sock]),
            lambda: server.started,
            name="pdauth-emulator",
            timeout=self._startup_timeout,
        )
        if not ready:
            self.stop()
            raise RuntimeError("the emulator server did not start")
        return self

    def stop(self) -> None:
        server, thread, sock = self._server, self._thread, self._sock
        self._server = self._thread = self._sock = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=10)
            if thread.is_alive() and server is not None:
                server.force_exit = True
                thread.join(timeout=5)
        if sock is not None:
            sock.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
