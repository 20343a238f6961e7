"""The pieces every ``pdauth`` subcommand shares: registering a parser, typed flag values, the
database URL of the commands that take ``--database-url``, and serving in the foreground.

:class:`Subcommands` is the one thing a command module needs from argparse's subcommand
object (its ``add_parser``), written as a Protocol so no module names argparse's private
classes. :func:`add_command` gives every parser the same help layout (the exit-code table in
the epilog). :func:`port` and :func:`positive_int` are the flag types several commands use,
made (like every numeric flag type) by :func:`number_flag`; :func:`listen` binds a command's
socket or says why it cannot.
:func:`serve_until_stopped` runs a uvicorn server on a bound socket in the foreground: it
listens before printing the banner, and turns SIGTERM into a clean return.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

import uvicorn

from pdauth._net import bind_socket
from pdauth.commands._output import epilog

__all__ = [
    "DEFAULT_DATABASE_URL",
    "Subcommands",
    "add_command",
    "database_url",
    "listen",
    "number_flag",
    "port",
    "positive_int",
    "serve_until_stopped",
]


DEFAULT_DATABASE_URL = "sqlite:///./pdauth.db"

N = TypeVar("N", int, float)


class Subcommands(Protocol):
    """What ``ArgumentParser.add_subparsers()`` returns, as far as the commands use it."""

    def add_parser(
        self,
        name: str,
        *,
        help: str | None = ...,
        description: str | None = ...,
        epilog: str | None = ...,
        formatter_class: type[argparse.HelpFormatter] = ...,
    ) -> argparse.ArgumentParser: ...


def add_command(
    sub: Subcommands,
    name: str,
    help_text: str,
    *notes: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Register ``name`` with ``help_text``; the epilog holds ``notes`` and the exit codes.

    The description defaults to the help text as a sentence.
    """
    return sub.add_parser(
        name,
        help=help_text,
        description=description or help_text[:1].upper() + help_text[1:] + ".",
        epilog=epilog(*notes),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def number_flag(
    convert: Callable[[str], N],
    accept: Callable[[N], bool],
    message: str,
    range_message: str | None = None,
) -> Callable[[str], N]:
    """A flag type: ``convert`` the text (``int``, ``float``) and keep it when ``accept`` says so.

    Text that does not convert is refused with ``message``; a value out of range with
    ``range_message`` (``message`` again when not given).
    """

    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(message) from None
        if not accept(value):
            raise argparse.ArgumentTypeError(range_message or message)
        return value

    return parse


#: A TCP port flag: 0-65535 (0: any free port).
port = number_flag(int, lambda value: 0 <= value <= 65535, "a port is a number 0-65535")

#: A count flag: an integer of at least 1.
positive_int = number_flag(int, lambda value: value >= 1, "expected a positive integer")


def listen(command: str, host: str, port: int) -> socket.socket | None:
    """A socket bound to ``host:port``; None after saying on stderr why it cannot be (the
    command then exits 1)."""
    try:
        return bind_socket(host, port)
    except OSError as exc:
        print(f"pdauth {command}: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return None


def database_url(flag: str | None, env: Mapping[str, str]) -> str:
    """``--database-url``, else ``PDAUTH_DATABASE_URL``, else the default SQLite file."""
    return flag or env.get("PDAUTH_DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL


class _Terminated(Exception):
    """SIGTERM outside uvicorn's own handling (before it starts, or re-raised after it stops)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


def _on_sigint(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve_until_stopped(server: uvicorn.Server, sock: socket.socket, banner: Sequence[str]) -> None:
    """Print ``banner`` and serve on ``sock`` until SIGINT/SIGTERM.

    uvicorn shuts down gracefully on a signal, then re-raises it to the previous handler; ours
    turns SIGTERM into a clean return instead of death by signal (and covers a SIGTERM that
    arrives before uvicorn has installed its handlers). SIGINT comes back as
    KeyboardInterrupt: each command decides what Ctrl-C means for its exit code.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main else None
    # Our own SIGINT handler, not Python's default: with the default one installed,
    # asyncio.run turns the SIGINT uvicorn re-raises at its end into a cancellation of its
    # finishing task, which can lose the race and return normally (exit 0, not 130).
    previous_int = signal.signal(signal.SIGINT, _on_sigint) if main else None
    try:
        # Listening before the banner: a client that reads "Open …" and connects at once is
        # queued by the kernel until uvicorn accepts, instead of being refused.
        sock.listen(2048)
        print("\n".join(banner), flush=True)
        server.run(sockets=[sock])
    except _Terminated:
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
