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

import uvicorn
from starlette.applications import Starlette
from uvicorn.config import LOGGING_CONFIG

from pdauth._net import ThreadedServer, bind_socket, format_url, keep_access_logger
from pdauth.emulator.app import create_app
from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.state import EmulatorState

__all__ = ["EmulatorServer", "bind_socket", "format_url", "uvicorn_config"]

Path = str | os.PathLike[str]


def uvicorn_config(
    app: Starlette,
    *,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    foreground: bool = False,
) -> uvicorn.Config:
    """How the emulator is served: no lifespan, no websockets, no access log, TLS when
    ``certfile`` is given. In the foreground (``pdauth emulator``) uvicorn logs its own lines at
    info and gives requests 2 s to finish on stop; in the background (tests, the demo) it keeps
    quiet and gives them 1 s, so a request parked by an injected "timeout" fault does not hold
    up ``stop()``."""
    if foreground:
        return _config(app, certfile, keyfile, foreground=True)
    with keep_access_logger():
        return _config(app, certfile, keyfile, foreground=False)


def _config(
    app: Starlette, certfile: Path | None, keyfile: Path | None, *, foreground: bool
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_config=LOGGING_CONFIG if foreground else None,
        # In the background uvicorn must not set the level of the process-wide "uvicorn.*"
        # loggers: the host (the demo, a test) may serve its own access log through them.
        log_level="info" if foreground else None,
        access_log=False,
        lifespan="off",
        ws="none",
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        timeout_graceful_shutdown=2 if foreground else 1,
    )


class EmulatorServer(ThreadedServer):
    """The emulator served by uvicorn in a background thread; a context manager.

    ``url`` is the identity and US API base, ``eu_api_url`` the EU one; ``state`` is the live
    :class:`EmulatorState` (advance its clock, inject faults, inspect tokens).
    """

    what = "emulator server"
    thread_name = "pdauth-emulator"
    grace = 10.0
    force_after = 5.0

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
        super().__init__(host=host, port=port, startup_timeout=startup_timeout)
        self.app = app if app is not None else create_app(config, state=state)
        self.state: EmulatorState = self.app.state.emulator
        self._certfile = certfile
        self._keyfile = keyfile

    @property
    def scheme(self) -> str:
        return "https" if self._certfile is not None else "http"

    @property
    def identity_url(self) -> str:
        return self.url

    @property
    def us_api_url(self) -> str:
        return self.url

    @property
    def eu_api_url(self) -> str:
        return self.url + "/eu"

    def make_server(self) -> uvicorn.Server:
        config = uvicorn_config(self.app, certfile=self._certfile, keyfile=self._keyfile)
        config.load()  # here, so a bad certificate raises in the caller's thread
        return uvicorn.Server(config)
