"""What the operations commands take from the outside world, replaceable in tests.

A :class:`Runtime` names the environment, clock, HTTP transport, Connector factory and browser
opener a command uses; the defaults are the real ones (``os.environ``, the system clock, the
network, :func:`webbrowser.open`). Tests install another with :func:`use_runtime` around
``pdauth.cli.run(argv)`` — e.g. an ``httpx.ASGITransport`` to the in-process emulator — since
``run`` builds its parser from scratch and cannot be handed objects. This module also maps
pdauth's error tree to the shared exit codes, sets up redacted logging for a command, and runs
a command's body with a Connector on a migrated database (:func:`with_connector`).
"""

from __future__ import annotations

import logging
import os
import sys
import webbrowser
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

import anyio
import httpx

from pdauth.clock import Clock, SystemClock
from pdauth.commands._output import (
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    clean,
    report_error,
)
from pdauth.config import Settings
from pdauth.connections import Connector
from pdauth.errors import (
    ConfigurationError,
    ConnectionNotFoundError,
    InvalidClientError,
    PdauthError,
)
from pdauth.logs import configure_logging, protect_host_loggers
from pdauth.store import ConnectionRow

__all__ = [
    "Body",
    "ConnectorFactory",
    "Runtime",
    "command_logging",
    "current_runtime",
    "exit_code_for",
    "fail",
    "require_row",
    "run_async",
    "use_runtime",
    "with_connector",
]

T = TypeVar("T")
ConnectorFactory = Callable[[Settings], Connector]
Body = Callable[[Connector, Settings], Awaitable[int]]


@dataclass(frozen=True)
class Runtime:
    """The outside world of a command. ``None`` everywhere means the real thing."""

    env: Mapping[str, str] | None = None
    clock: Clock | None = None
    transport: httpx.AsyncBaseTransport | None = None
    connector_factory: ConnectorFactory | None = None
    open_browser: Callable[[str], bool] | None = None

    def environ(self) -> Mapping[str, str]:
        return os.environ if self.env is None else self.env

    def settings(self) -> Settings:
        """``Settings.from_env`` on this runtime's environment (ConfigurationError if bad)."""
        return Settings.from_env(self.environ())

    def now(self) -> float:
        return (self.clock or SystemClock()).now()

    def connector(self, settings: Settings) -> Connector:
        if self.connector_factory is not None:
            return self.connector_factory(settings)
        return Connector(settings, clock=self.clock, transport=self.transport)

    def browse(self, url: str) -> bool:
        """Open ``url`` in the user's browser; False if no browser could be started."""
        opener = self.open_browser or webbrowser.open
        try:
            return bool(opener(url))
        except webbrowser.Error:
            return False


_runtime: ContextVar[Runtime | None] = ContextVar("pdauth_commands_runtime", default=None)


def current_runtime(runtime: Runtime | None = None) -> Runtime:
    """``runtime`` if given, else the one installed by :func:`use_runtime`, else the real one."""
    if runtime is not None:
        return runtime
    return _runtime.get() or Runtime()


@contextmanager
def use_runtime(runtime: Runtime) -> Iterator[Runtime]:
    """Run the commands inside the ``with`` block against ``runtime``."""
    token = _runtime.set(runtime)
    try:
        yield runtime
    finally:
        _runtime.reset(token)


def exit_code_for(exc: PdauthError) -> int:
    """The shared exit code for an error: 2 configuration, 3 not found, 1 otherwise."""
    if isinstance(exc, ConfigurationError | InvalidClientError):
        return EXIT_USAGE  # InvalidClientError: PagerDuty refused our client id/secret
    if isinstance(exc, ConnectionNotFoundError):
        return EXIT_NOT_FOUND
    return EXIT_FAILURE


def fail(command: str, exc: PdauthError) -> int:
    """Report ``exc`` on stderr and return its exit code."""
    message = str(exc)
    if isinstance(exc, InvalidClientError):
        message = (
            "PagerDuty rejected the client credentials (invalid_client): check "
            "PDAUTH_CLIENT_ID and PDAUTH_CLIENT_SECRET"
        )
    report_error(command, message)
    return exit_code_for(exc)


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a command's async body on a fresh event loop."""
    return anyio.run(fn)


def with_connector(command: str, runtime: Runtime | None, body: Body) -> int:
    """Settings, logging, a Connector on a current schema, then ``body``; errors → exit codes."""
    rt = current_runtime(runtime)
    try:
        settings = rt.settings()
    except ConfigurationError as exc:
        return fail(command, exc)
    with command_logging(settings, rt.environ()):

        async def main() -> int:
            async with rt.connector(settings) as connector:
                if not await connector.store.is_up_to_date():
                    raise ConfigurationError(
                        "the database schema is not current; run `pdauth db upgrade`"
                    )
                return await body(connector, settings)

        try:
            return run_async(main)
        except PdauthError as exc:
            return fail(command, exc)


async def require_row(connector: Connector, connection_id: str) -> ConnectionRow:
    """The stored row of ``connection_id``; ConnectionNotFoundError (exit 3) if there is none."""
    row = await connector.store.get_connection(connection_id)
    if row is None:
        raise ConnectionNotFoundError(f"no connection {clean(connection_id)}")
    return row


class _Stderr:
    """Writes to whatever ``sys.stderr`` is at the time (tests swap it between commands)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@contextmanager
def command_logging(settings: Settings | None, env: Mapping[str, str]) -> Iterator[None]:
    """pdauth's redacting log handler for the duration of one command.

    A command talks to people, so library chatter (httpx request lines) stays below the
    threshold unless PDAUTH_LOG_LEVEL asks for it. Every configured secret is registered
    with the redaction filter first. The root logger is restored afterwards, so running a
    command in-process (tests, host apps) leaves no handler behind.
    """
    root = logging.getLogger()
    level_before = root.level
    explicit = any(key.upper() == "PDAUTH_LOG_LEVEL" for key in env)
    level = settings.log_level if settings is not None and explicit else "WARNING"
    fmt = settings.log_format if settings is not None else "text"
    handler = configure_logging(level, fmt, stream=_Stderr())
    if settings is not None:
        protect_host_loggers(settings)  # registers every configured secret for redaction
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level_before)
