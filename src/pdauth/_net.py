"""Listening sockets for pdauth's servers (the service, the demo, the emulator); stdlib only.

One function, shared by the service and the emulator so both bind the same way: the caller
binds first (port 0 picks a free port, known before serving) and hands the socket to uvicorn.
It depends on nothing else in pdauth, so the emulator can use it and still share no code with
the client side it tests.
"""

from __future__ import annotations

import socket

__all__ = ["bind_socket", "format_url"]


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
