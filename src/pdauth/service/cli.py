"""The ``pdauth serve`` subcommand: run the service with uvicorn from ``PDAUTH_*`` settings.

``add_serve_command(subparsers)`` registers it. The handler reads :class:`~pdauth.config.Settings`
from the environment (a configuration error exits 2 naming the variables, never a value),
installs pdauth's logging with its redaction filter (so access-log lines never carry the
callback's ``code``/``state`` or a connect-session token), registers every configured secret
for redaction, refuses to start on a database whose schema is behind (``pdauth db upgrade``),
binds the socket itself (``--port 0`` prints the real port) and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from typing import Any

import uvicorn

from pdauth.config import Settings
from pdauth.errors import ConfigurationError, StoreError

__all__ = ["add_serve_command", "register_secrets", "run_serve", "serve_forever"]


class _Terminated(Exception):
    """SIGTERM before or after uvicorn's own signal handling."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a port is a number 0-65535") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is a number 0-65535")
    return value


def add_serve_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``pdauth serve``."""
    serve = subparsers.add_parser(
        "serve",
        help="run the service (connect flow, pages, JSON API) from PDAUTH_* settings",
        description="Serve the pdauth service with uvicorn. Configuration comes from PDAUTH_* "
        "environment variables (see the README); run `pdauth db upgrade` first.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0 = any)")
    serve.add_argument("--certfile", help="serve TLS with this certificate (PEM)")
    serve.add_argument("--keyfile", help="the certificate's private key (PEM)")
    serve.set_defaults(handler=run_serve)


def register_secrets(settings: Settings) -> None:
    """Tell the log redaction filter every secret value the settings hold."""
    from pdauth.logs import register_secret

    for secret in (
        settings.client_secret,
        settings.session_secret,
        settings.admin_password,
        settings.webhook_secret,
    ):
        if secret is not None:
            register_secret(secret.get_secret_value())
    for key in settings.api_key_list():
        register_secret(key.get_secret_value())
    for entry in settings.encryption_keys.get_secret_value().split(","):
        register_secret(entry.partition(":")[2].strip())


def serve_forever(server: uvicorn.Server, sock: socket.socket, banner: list[str]) -> None:
    """Print ``banner`` and serve until SIGINT/SIGTERM; a signal is a clean stop."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main else None
    try:
        # Listening before the banner: a client that reads "Open …" and connects at once is
        # queued by the kernel until uvicorn accepts, instead of being refused.
        sock.listen(2048)
        print("\n".join(banner), flush=True)
        server.run(sockets=[sock])
    except (_Terminated, KeyboardInterrupt):
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def run_serve(args: argparse.Namespace) -> int:
    """Exit codes: 0 stopped, 1 cannot listen, 2 bad configuration or schema behind."""
    from pdauth.logs import configure_logging
    from pdauth.service import create_app
    from pdauth.service.server import bind_socket, uvicorn_config
    from pdauth.store import Store

    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        print(f"pdauth serve: {exc}", file=sys.stderr)
        return 2
    if bool(args.certfile) != bool(args.keyfile):
        print("pdauth serve: --certfile and --keyfile go together", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    register_secrets(settings)
    store = Store(settings.database_url)
    try:
        current = store.is_up_to_date()
    except StoreError as exc:
        print(f"pdauth serve: {exc}", file=sys.stderr)
        return 2
    finally:
        store.dispose()
    if not current:
        print(
            "pdauth serve: the database schema is not current; run `pdauth db upgrade`",
            file=sys.stderr,
        )
        return 2
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        print(f"pdauth serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        app = create_app(settings, keeper=True)
        config = uvicorn_config(
            app,
            log_level=settings.log_level,
            certfile=args.certfile,
            keyfile=args.keyfile,
        )
        config.load()
        port = sock.getsockname()[1]
        scheme = "https" if args.certfile else "http"
        host = f"[{args.host}]" if ":" in args.host else args.host
        options = app.state.pdauth.options
        serve_forever(
            uvicorn.Server(config),
            sock,
            [
                f"pdauth service listening on {scheme}://{host}:{port}",
                f"  public URL    {options.public_url}",
                f"  redirect URI  {settings.redirect_uri}",
                f"  JSON API      {options.public_url}/api/v1 (OpenAPI: /api/v1/openapi.json)",
            ],
        )
    finally:
        sock.close()
    return 0
