"""``pdauth connect --owner NAME``: the connect flow for command-line users (RFC 8252 §7.3).

A native app receives the authorization response on a loopback redirect: this command listens
on the loopback address and port of the configured ``PDAUTH_REDIRECT_URI`` (which must be a
registered ``http://127.0.0.1:<port>/<path>`` style URI — PagerDuty compares redirect URIs
exactly; ``--port`` overrides the port only for servers that accept any loopback port, as
RFC 8252 §7.3 asks), calls :meth:`Connector.begin`, opens the browser (or prints the URL), and
waits for one request on the redirect path that carries *this* flow's ``state`` (compared in
constant time; anything else — other paths, a stray or forged callback — is answered and
ignored). That request goes to :meth:`Connector.complete` with the binding kept in memory: the
listener and the CLI are the same party, so no cookie is needed. The browser gets a small page
in the service pages' style (:mod:`pdauth.commands._loopback_page`: no-store, no referrer, a
strict CSP, nothing from the query echoed); the terminal gets the connection.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import threading
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import anyio
from anyio.abc import SocketAttribute, SocketStream

from pdauth.commands._common import Subcommands, add_command, number_flag, port
from pdauth.commands._loopback_page import Tone, loopback_response
from pdauth.commands._output import (
    EXIT_FAILURE,
    EXIT_OK,
    clean,
    print_fields,
    print_json,
    report_error,
)
from pdauth.commands._runtime import (
    Runtime,
    command_logging,
    current_runtime,
    fail,
    run_async,
)
from pdauth.commands._views import account_label, connection_json, user_label
from pdauth.config import Settings
from pdauth.connections import PENDING_TTL, Connection, Connector
from pdauth.errors import AuthorizationDeniedError, ConfigurationError, PdauthError
from pdauth.oauth import constant_time_equals

__all__ = ["LoopbackRedirect", "add_connect_command", "loopback_redirect", "run_connect"]

COMMAND = "connect"
MAX_REQUEST_HEAD = 16 * 1024
REQUEST_READ_TIMEOUT = 10.0  # browsers open idle speculative connections; do not wait on them
DEFAULT_TIMEOUT = 300.0


@dataclass(frozen=True)
class LoopbackRedirect:
    """A loopback ``http`` redirect URI and where to listen for it."""

    uri: str
    host: str  # as in the URI (may be "localhost")
    bind_host: str  # the address to listen on
    port: int
    path: str

    def with_port(self, port: int) -> LoopbackRedirect:
        """The same URI on another port (``--port``)."""
        parts = urlsplit(self.uri)
        shown = f"[{self.host}]" if ":" in self.host else self.host
        uri = urlunsplit((parts.scheme, f"{shown}:{port}", parts.path, parts.query, ""))
        return LoopbackRedirect(uri, self.host, self.bind_host, port, self.path)


def loopback_redirect(uri: str) -> LoopbackRedirect:
    """Check that ``uri`` is a loopback ``http`` redirect URI (RFC 8252 §7.3) and split it.

    Raises :class:`ConfigurationError` saying why the CLI flow cannot use it.
    """
    parts = urlsplit(uri)
    host = parts.hostname or ""
    bind_host: str | None = None
    if host == "localhost":
        bind_host = "127.0.0.1"  # RFC 8252 §8.3 prefers the IP literal; we listen there
    else:
        with suppress(ValueError):
            if ipaddress.ip_address(host).is_loopback:
                bind_host = host
    if parts.scheme != "http" or bind_host is None:
        raise ConfigurationError(
            "pdauth connect needs PDAUTH_REDIRECT_URI to be a loopback http URI registered for "
            "the app, e.g. http://127.0.0.1:8765/callback (RFC 8252 §7.3), so the browser can "
            f"hand the answer to this command; it is {clean(uri)}. Connect through the service "
            "that serves that URI instead (pdauth serve), or register and configure a loopback "
            "redirect URI"
        )
    return LoopbackRedirect(uri, host, bind_host, parts.port or 80, parts.path or "/")


# -- parser ------------------------------------------------------------------------------------


def _owner(text: str) -> str:
    if not text or len(text) > 255:
        raise argparse.ArgumentTypeError("an owner is 1-255 characters")
    return text


# The pending authorization lives PENDING_TTL seconds; waiting longer is pointless.
_timeout = number_flag(
    float,
    lambda value: 1 <= value <= PENDING_TTL,
    "a timeout is a number of seconds",
    f"a timeout is 1-{PENDING_TTL:g} seconds",
)


def add_connect_command(sub: Subcommands) -> None:
    """Register ``pdauth connect``."""
    parser = add_command(
        sub,
        "connect",
        "connect a PagerDuty account from the command line (browser + loopback redirect)",
        "PDAUTH_REDIRECT_URI must be a loopback http URI registered for the app, such as "
        "http://127.0.0.1:8765/callback; the command listens on that address and port. "
        "Exit code 1 when PagerDuty access is denied, the flow fails, or no answer "
        "arrives before --timeout.",
        description="Connect a PagerDuty account for OWNER: open PagerDuty's consent page in a "
        "browser and receive the answer on a one-shot listener at the loopback "
        "PDAUTH_REDIRECT_URI (RFC 8252 §7.3), then store the connection.",
    )
    parser.add_argument(
        "--owner", required=True, type=_owner, help="your application's user or tenant id"
    )
    parser.add_argument(
        "--no-browser",
        action="store_true",
        help="print the URL to open instead of starting a browser",
    )
    parser.add_argument(
        "--port",
        type=port,
        help="listen on this port instead of the redirect URI's (0: any free port); only for "
        "authorization servers that accept any loopback port (PagerDuty does not)",
    )
    parser.add_argument(
        "--timeout",
        type=_timeout,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for the browser ({DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument("--json", action="store_true", help="print the connection as JSON")
    parser.set_defaults(handler=run_connect)


# -- running -----------------------------------------------------------------------------------


def run_connect(args: argparse.Namespace, runtime: Runtime | None = None) -> int:
    """``pdauth connect``."""
    rt = current_runtime(runtime)
    try:
        settings = rt.settings()
        redirect = loopback_redirect(settings.redirect_uri)
    except ConfigurationError as exc:
        return fail(COMMAND, exc)
    with command_logging(settings, rt.environ()):
        try:
            return run_async(lambda: _connect(args, rt, settings, redirect))
        except PdauthError as exc:
            return fail(COMMAND, exc)


@dataclass
class _Flow:
    """One flow's waiting state, shared by the connection handlers."""

    state: str
    binding: str
    owner: str
    path: str
    connector: Connector
    claimed: anyio.Event
    done: anyio.Event
    result: Connection | BaseException | None = None


async def _connect(
    args: argparse.Namespace, rt: Runtime, settings: Settings, redirect: LoopbackRedirect
) -> int:
    port = redirect.port if args.port is None else args.port
    try:
        listener = await anyio.create_tcp_listener(local_host=redirect.bind_host, local_port=port)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        report_error(COMMAND, f"cannot listen on {redirect.bind_host}:{port} ({reason})")
        return EXIT_FAILURE
    async with listener:
        if args.port is not None:
            actual = listener.extra(SocketAttribute.local_port)  # noqa: S610 - anyio, not Django
            redirect = redirect.with_port(actual)
            settings = settings.model_copy(update={"redirect_uri": redirect.uri})
        async with rt.connector(settings) as connector:
            if not await connector.store.is_up_to_date():
                raise ConfigurationError(
                    "the database schema is not current; run `pdauth db upgrade`"
                )
            start = await connector.begin(args.owner)
            flow = _Flow(
                start.state,
                start.binding,
                args.owner,
                redirect.path,
                connector,
                anyio.Event(),
                anyio.Event(),
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(listener.serve, _handler(flow))
                _announce(rt, args, start.url, redirect)
                with anyio.move_on_after(args.timeout):
                    await flow.claimed.wait()
                if flow.claimed.is_set():
                    await flow.done.wait()  # the exchange is bounded by PDAUTH_HTTP_TIMEOUT
                tg.cancel_scope.cancel()
            if not flow.claimed.is_set():
                report_error(
                    COMMAND,
                    f"no answer from the browser within {args.timeout:g} s; run `pdauth "
                    "connect` again",
                )
                return EXIT_FAILURE
            result = flow.result
            if isinstance(result, BaseException):
                raise result
            assert result is not None
            row = await connector.store.get_connection(result.id)
            assert row is not None
            view = connection_json(row, settings.api_base_urls, settings.scopes)
    if args.json:
        print_json({"connection": view})
    else:
        print_fields(
            {
                "connected": view["id"],
                "owner": view["owner"],
                "account": account_label(view),
                "user": user_label(view),
                "scopes": " ".join(view["scopes"]),
                "access_expires_at": view["access_expires_at"],
            }
        )
    return EXIT_OK


def _announce(rt: Runtime, args: argparse.Namespace, url: str, redirect: LoopbackRedirect) -> None:
    """Tell the user what to do. The URL carries this flow's state: it goes to the user's own
    terminal only when they must open it themselves."""
    wait = f"Waiting up to {args.timeout:g} s for PagerDuty's answer on {redirect.uri} ..."
    if args.no_browser:
        print(
            f"Open this URL in a browser signed in to PagerDuty to connect {clean(args.owner)}:"
            f"\n\n  {url}\n\n{wait}",
            file=sys.stderr,
            flush=True,
        )
        return
    print(
        f"Opening PagerDuty in your browser to connect {clean(args.owner)}.\n{wait}",
        file=sys.stderr,
        flush=True,
    )

    def open_browser() -> None:
        # A thread: some browsers block until they exit, and the listener must keep serving.
        if not rt.browse(url):
            print(
                f"No browser could be started; open this URL yourself:\n\n  {url}\n",
                file=sys.stderr,
                flush=True,
            )

    threading.Thread(target=open_browser, name="pdauth-connect-browser", daemon=True).start()


def _handler(flow: _Flow) -> Callable[[SocketStream], Awaitable[None]]:
    async def handle(stream: SocketStream) -> None:
        async with stream:
            head: bytes | None = None
            with anyio.move_on_after(REQUEST_READ_TIMEOUT):
                head = await _read_head(stream)
            if head is None:
                return
            request = _request_line(head)
            if request is None:
                await _respond(stream, 400, "Bad Request", "Bad request", "Not an HTTP request.")
                return
            method, target = request
            path, _, query = target.partition("?")
            if path != flow.path:
                await _respond(stream, 404, "Not Found", "Not found", "Nothing here.")
                return
            if method != "GET":
                await _respond(stream, 405, "Method Not Allowed", "Not allowed", "Use GET.")
                return
            if flow.claimed.is_set():
                await _respond(
                    stream, 409, "Conflict", "Already answered", "This flow already has its answer."
                )
                return
            if not _carries_state(query, flow.state):
                # Not this flow's answer (stale tab, another process): nothing is consumed.
                await _respond(
                    stream,
                    400,
                    "Bad Request",
                    "Not the expected answer",
                    "This is not the answer pdauth connect is waiting for. Start again from the "
                    "terminal if needed.",
                )
                return
            flow.claimed.set()  # no await since the check: no second request can slip in
            try:
                flow.result = await flow.connector.complete(query, flow.binding, owner=flow.owner)
            except Exception as exc:  # reported by the command, after the page is sent
                flow.result = exc
            try:
                await _respond(stream, *_page_for(flow.result))
            finally:
                flow.done.set()

    return handle


def _carries_state(query: str, expected: str) -> bool:
    states = [value for name, value in parse_qsl(query, keep_blank_values=True) if name == "state"]
    return len(states) == 1 and constant_time_equals(states[0], expected)


def _page_for(result: Connection | BaseException | None) -> tuple[int, str, str, str, Tone]:
    if isinstance(result, Connection):
        account = result.subdomain or result.account_id
        return (
            200,
            "OK",
            "PagerDuty connected",
            f"The PagerDuty account {account} is connected. You can close this tab and return "
            "to the terminal.",
            "ok",
        )
    if isinstance(result, AuthorizationDeniedError):
        return (
            200,
            "OK",
            "Not connected",
            "Access was not granted in PagerDuty. You can close this tab.",
            "notice",
        )
    return (
        200,
        "OK",
        "Connecting failed",
        "PagerDuty could not be connected. The terminal says why; you can close this tab.",
        "error",
    )


async def _read_head(stream: SocketStream) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        if len(data) > MAX_REQUEST_HEAD:
            return None
        try:
            data += await stream.receive(4096)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return None
    return data


def _request_line(head: bytes) -> tuple[str, str] | None:
    line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        return None
    return parts[0], parts[1]


async def _respond(
    stream: SocketStream, status: int, reason: str, title: str, text: str, tone: Tone = "error"
) -> None:
    with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await stream.send(loopback_response(status, reason, title, text, tone))
