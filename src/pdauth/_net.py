"""Listening sockets and server threads for pdauth's servers (service, demo, emulator); stdlib only.

Shared by the service and the emulator so both serve the same way: the caller binds first
(:func:`bind_socket`; port 0 picks a free port, known before serving), hands the socket to
uvicorn, and — for a server in the background (tests, the demo's emulator, benchmarks) — runs
it on a daemon thread started by :func:`start_daemon`, which returns once the server says it
accepts connections. This module depends on nothing else in pdauth, so the emulator can use it
and still share no code with the client side it tests.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

__all__ = ["bind_socket", "format_url", "start_daemon"]

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
