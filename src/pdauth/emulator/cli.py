"""The ``pdauth emulator`` subcommand: serve the local PagerDuty with uvicorn.

``add_emulator_command(subparsers)`` registers it on pdauth's parser; the handler builds an
:class:`EmulatorConfig` from the flags, binds the socket itself (so ``--port 0`` can print the
real port), prints the base URLs and the demo app's client id, and serves until interrupted.
Access logs are off: authorize URLs carry ``state`` and PKCE challenges.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from typing import Any
from urllib.parse import urlencode

import uvicorn

from pdauth.emulator.app import create_app
from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.control import DEMO_CLIENT_ID
from pdauth.emulator.server import bind_socket, format_url

__all__ = ["add_emulator_command", "config_from_args", "run_emulator"]


class _Terminated(Exception):
    """SIGTERM outside uvicorn's own handling (before it starts, or re-raised after it stops)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected a number between 0 and 1") from exc
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("expected a number between 0 and 1")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected a positive integer") from exc
    if value < 1:
        raise argparse.ArgumentTypeError("expected a positive integer")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected a positive number") from exc
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("expected a positive number")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected a port number 0-65535") from exc
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("expected a port number 0-65535")
    return value


def add_emulator_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Register ``emulator`` on pdauth's subcommand parser."""
    p = subparsers.add_parser(
        "emulator",
        help="run a local PagerDuty (identity + REST) for development and tests",
        description="Serve a local PagerDuty emulator: OAuth identity service (authorize, "
        "token, JWKS), REST API for a US and an EU account, and a /_emulator control API. "
        "Not the real PagerDuty.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=_port, default=9000, help="port (9000; 0 picks a free one)")
    p.add_argument("--certfile", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--keyfile", help="private key for --certfile (PEM)")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated directory (1)")
    p.add_argument(
        "--rate-limit", type=_positive_int, default=960, help="REST requests per window (960)"
    )
    p.add_argument(
        "--rate-window", type=_positive_float, default=60.0, help="rate window, seconds (60)"
    )
    p.add_argument(
        "--access-token-ttl",
        type=_positive_int,
        help="access-token lifetime, seconds (default by app kind: Classic 30 d, Scoped 1 d)",
    )
    p.add_argument(
        "--refresh-token-ttl",
        type=_positive_int,
        help="refresh-token lifetime, seconds (default: Classic 210 d, Scoped 30 d)",
    )
    p.add_argument(
        "--code-ttl", type=_positive_float, default=30.0, help="authorization code TTL (30 s)"
    )
    p.add_argument(
        "--refresh-reuse",
        choices=["strict", "lenient"],
        default="strict",
        help="replayed refresh token: revoke the grant (strict) or only refuse (lenient)",
    )
    p.add_argument(
        "--revocation-endpoint",
        action="store_true",
        help="serve POST /oauth/revoke (RFC 7009; NOT a PagerDuty endpoint)",
    )
    p.add_argument(
        "--drop-ratelimit-headers",
        type=_fraction,
        default=0.0,
        metavar="FRACTION",
        help="fraction of 429s served without headers or body (0)",
    )
    p.add_argument("--public-url", help="base URL clients use, if not the listening address")
    p.set_defaults(handler=run_emulator)


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    return EmulatorConfig(
        seed=args.seed,
        rate_limit=args.rate_limit,
        rate_window=args.rate_window,
        access_token_ttl=args.access_token_ttl,
        refresh_token_ttl=args.refresh_token_ttl,
        code_ttl=args.code_ttl,
        refresh_reuse=args.refresh_reuse,
        revocation_endpoint=args.revocation_endpoint,
        drop_ratelimit_headers=args.drop_ratelimit_headers,
        public_url=args.public_url.rstrip("/") if args.public_url else None,
    )


def _serve(server: uvicorn.Server, sock: socket.socket, banner: list[str]) -> None:
    """Print the banner and serve until SIGINT/SIGTERM.

    uvicorn shuts down gracefully on a signal, then re-raises it to the previous handler; ours
    turns SIGTERM into a clean return instead of death by signal (and covers a SIGTERM that
    arrives before uvicorn has installed its handlers).
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main else None
    try:
        print("\n".join(banner), flush=True)
        server.run(sockets=[sock])
    except _Terminated:
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def run_emulator(args: argparse.Namespace) -> int:
    """Serve until interrupted. Exit codes: 0 stopped, 1 cannot listen, 2 bad configuration."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"pdauth emulator: {exc}", file=sys.stderr)
        return 2
    if args.keyfile and not args.certfile:
        print("pdauth emulator: --keyfile needs --certfile", file=sys.stderr)
        return 2
    app = create_app(config)
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        print(f"pdauth emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        port = sock.getsockname()[1]
        scheme = "https" if args.certfile else "http"
        base = config.public_url or format_url(scheme, args.host, port)
        uconfig = uvicorn.Config(
            app,
            log_level="info",
            access_log=False,
            lifespan="off",
            ws="none",
            ssl_certfile=args.certfile,
            ssl_keyfile=args.keyfile,
            timeout_graceful_shutdown=2,
        )
        try:
            uconfig.load()
        except (OSError, ValueError) as exc:
            print(f"pdauth emulator: cannot load TLS certificate: {exc}", file=sys.stderr)
            return 2
        consent = (
            base
            + "/oauth/authorize?"
            + urlencode(
                {
                    "client_id": DEMO_CLIENT_ID,
                    "redirect_uri": "http://127.0.0.1:8000/callback",
                    "response_type": "code",
                    "scope": "read write",
                }
            )
        )
        banner = [
            "pdauth emulator: a local PagerDuty (not the real service)",
            f"  listening on  {format_url(scheme, args.host, port)}",
            f"  identity      {base}",
            f"  US API        {base}",
            f"  EU API        {base}/eu",
            f"  control API   {base}/_emulator",
            f"  demo app      client_id={DEMO_CLIENT_ID}",
            f"Open {consent} in a browser to see the consent page.",
        ]
        _serve(uvicorn.Server(uconfig), sock, banner)
    finally:
        sock.close()
    return 0
