"""``pdauth serve``: run the service with uvicorn from ``PDAUTH_*`` settings.

The handler reads :class:`~pdauth.config.Settings` from the environment (a configuration error
exits 2 naming the variables, never a value), installs pdauth's logging with its redaction
filter (so access-log lines never carry the callback's ``code``/``state`` or a connect-session
token), registers every configured secret for redaction, refuses to start on a database whose
schema is behind (``pdauth db upgrade``), binds the socket itself (``--port 0`` prints the real
port) and serves — with the keeper running in the service's lifespan — until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import suppress

import uvicorn

from pdauth._net import format_url
from pdauth.commands._common import Subcommands, listen, port, serve_until_stopped
from pdauth.config import Settings
from pdauth.errors import ConfigurationError, StoreError
from pdauth.logs import configure_logging, protect_host_loggers
from pdauth.service import create_app
from pdauth.service.server import uvicorn_config
from pdauth.store import Store

__all__ = ["add_serve_command", "run_serve"]


def add_serve_command(sub: Subcommands) -> None:
    """Register ``pdauth serve``."""
    serve = sub.add_parser(
        "serve",
        help="run the service (connect flow, pages, JSON API) from PDAUTH_* settings",
        description="Serve the pdauth service with uvicorn. Configuration comes from PDAUTH_* "
        "environment variables (see the README); run `pdauth db upgrade` first.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    serve.add_argument("--port", type=port, default=8000, help="port (default 8000; 0 = any)")
    serve.add_argument("--certfile", help="serve TLS with this certificate (PEM)")
    serve.add_argument("--keyfile", help="the certificate's private key (PEM)")
    serve.set_defaults(handler=run_serve)


def _refuse(message: str) -> int:
    print(f"pdauth serve: {message}", file=sys.stderr)
    return 2


def _schema_problem(settings: Settings) -> str | None:
    """Why the database cannot be served (unreachable, schema behind), or None."""
    store = Store(settings.database_url)
    try:
        current = store.is_up_to_date()
    except StoreError as exc:
        return str(exc)
    finally:
        store.dispose()
    if not current:
        return "the database schema is not current; run `pdauth db upgrade`"
    return None


def run_serve(args: argparse.Namespace) -> int:
    """Exit codes: 0 stopped, 1 cannot listen, 2 bad configuration or schema behind."""
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        return _refuse(str(exc))
    if bool(args.certfile) != bool(args.keyfile):
        return _refuse("--certfile and --keyfile go together")
    configure_logging(settings.log_level, settings.log_format)
    protect_host_loggers(settings)  # every configured secret is redacted from logs
    problem = _schema_problem(settings)
    if problem is not None:
        return _refuse(problem)
    try:
        app = create_app(settings, keeper=True)  # refuses e.g. a callback it could not route
    except ConfigurationError as exc:
        return _refuse(str(exc))
    sock = listen("serve", args.host, args.port)
    if sock is None:
        return 1
    try:
        config = uvicorn_config(
            app, log_level=settings.log_level, certfile=args.certfile, keyfile=args.keyfile
        )
        config.load()
        scheme = "https" if args.certfile else "http"
        options = app.state.pdauth.options
        banner = [
            f"pdauth service listening on {format_url(scheme, args.host, sock.getsockname()[1])}",
            f"  public URL    {options.public_url}",
            f"  redirect URI  {settings.redirect_uri}",
            f"  JSON API      {options.public_url}/api/v1 (OpenAPI: /api/v1/openapi.json)",
        ]
        with suppress(KeyboardInterrupt):  # Ctrl-C is a clean stop, like SIGTERM
            serve_until_stopped(uvicorn.Server(config), sock, banner)
    finally:
        sock.close()
    return 0
