"""Listening sockets and server threads for pdauth's servers (service, demo, emulator).

Shared by the service and the emulator so both serve the same way: the caller binds first
(:func:`bind_socket`; port 0 picks a free port, known before serving), hands the socket to
uvicorn, and — for a server in the background (tests, the demo's emulator, benchmarks) — runs
it with :class:`BackgroundServer` on a daemon thread (:func:`start_daemon`), which returns once
the server says it accepts connections. This module depends on nothing else in pdauth (the
standard library only), so the emulator can use it and still share no code with
the client side it tests.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, Self

__all__ = [
    "BackgroundServer",
    "Server",
    "ThreadedServer",
    "bind_socket",
    "format_url",
    "keep_access_logger",
    "start_daemon",
]

_POLL = 0.005


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0 picks a free port); raises OSError when taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets that name
    # it, and uvicorn writes head and body separately — else each kept-alive request waits
    # ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def format_url(scheme: str, host: str, port: int) -> str:
    """``scheme://host:port`` with an IPv6 literal in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def start_daemon(
    target: Callable[[], object], ready: Callable[[], bool], *, name: str, timeout: float
) -> tuple[threading.Thread, bool]:
    """Run ``target`` on a daemon thread and wait until ``ready()`` (uvicorn's ``started``).

    Returns the thread and whether it became ready: False when it ended first or was not
    ready within ``timeout`` seconds (the caller stops what it started, joins, and reports).
    """
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not ready():
        if not thread.is_alive() or time.monotonic() > deadline:
            return thread, False
        time.sleep(_POLL)
    return thread, True


class Server(Protocol):
    """What :class:`BackgroundServer` needs of a server: ``uvicorn.Server``'s flags and run."""

    started: bool
    should_exit: bool
    force_exit: bool

    def run(self, sockets: list[socket.socket] | None = None) -> None: ...


class BackgroundServer:
    """``server`` (a ``uvicorn.Server`` whose config is loaded, so that a bad TLS certificate
    raised in the caller's thread) serving on ``sock`` in a daemon thread once constructed.

    The socket is closed by :meth:`stop`, also when starting fails. ``what`` names the server
    in the error when it does not start in ``startup_timeout`` seconds. Stopping waits
    ``grace`` seconds for the thread; with ``force_after`` it then forces the exit (open
    connections dropped) and waits that long again.
    """

    def __init__(
        self,
        server: Server,
        sock: socket.socket,
        *,
        name: str,
        what: str,
        startup_timeout: float,
        grace: float,
        force_after: float | None = None,
    ) -> None:
        self.sock = sock
        self._grace = grace
        self._force_after = force_after
        self.server = server
        self.port: int = sock.getsockname()[1]
        self.thread, ready = start_daemon(
            lambda: server.run(sockets=[sock]),
            lambda: server.started,
            name=name,
            timeout=startup_timeout,
        )
        if not ready:
            self.stop()
            raise RuntimeError(f"the {what} did not start")

    def stop(self) -> None:
        """Ask uvicorn to exit, wait for the thread (bounded), close the socket."""
        self.server.should_exit = True
        self.thread.join(timeout=self._grace)
        if self._force_after is not None and self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout=self._force_after)
        self.sock.close()


class ThreadedServer:
    """Base of a server run in the background for a test, the demo or a benchmark; a context
    manager. A subclass says what it serves (:meth:`make_server`), how it is named and how
    long stopping may take; this class binds (port 0: a free one, in :attr:`port` once
    started), starts, stops and gives the URL.
    """

    what = "server"  # in errors: "the <what> is not running"
    thread_name = "pdauth-server"
    grace = 10.0
    force_after: float | None = None

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = 0
        self._requested_port = port
        self._sock = sock
        self._startup_timeout = startup_timeout
        self._running: BackgroundServer | None = None

    @property
    def scheme(self) -> str:
        return "http"

    @property
    def url(self) -> str:
        if self._running is None:
            raise RuntimeError(f"the {self.what} is not running")
        return format_url(self.scheme, self.host, self.port)

    def make_server(self) -> Server:
        """The server to run, its configuration loaded (so that errors raise in the caller)."""
        raise NotImplementedError

    def start(self) -> Self:
        if self._running is not None:
            raise RuntimeError(f"the {self.what} is already running")
        server = self.make_server()
        sock, self._sock = self._sock or bind_socket(self.host, self._requested_port), None
        self._running = BackgroundServer(
            server,
            sock,
            name=self.thread_name,
            what=self.what,
            startup_timeout=self._startup_timeout,
            grace=self.grace,
            force_after=self.force_after,
        )
        self.port = self._running.port
        return self

    def stop(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.stop()
        if self._sock is not None:  # handed in, never served
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextmanager
def keep_access_logger() -> Iterator[None]:
    """Keep the process-wide ``uvicorn.access`` logger as it was around a ``uvicorn.Config``.

    ``uvicorn.Config(access_log=False)`` empties that logger's handlers and stops its
    propagation for the whole process, so a quiet background server (the emulator, a test's
    service) would silence the access log of another uvicorn in the same process — the demo's
    service, or a host app serving pdauth's redacted access log.
    """
    logger = logging.getLogger("uvicorn.access")
    saved = (logger.handlers[:], logger.propagate)
    try:
        yield
    finally:
        logger.handlers, logger.propagate = saved
