"""``pdauth emulator``: serve the local PagerDuty with uvicorn.

The handler builds an :class:`~pdauth.emulator.EmulatorConfig` from the flags, binds the socket
itself (so ``--port 0`` can print the real port), prints the base URLs and the demo app's
client id, and serves until interrupted (SIGTERM: exit 0; Ctrl-C: 130). Access logs are off:
authorize URLs carry ``state`` and PKCE challenges.
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlencode

import uvicorn

from pdauth._net import format_url
from pdauth.commands._common import (
    Subcommands,
    listen,
    number_flag,
    port,
    positive_int,
    serve_until_stopped,
)
from pdauth.emulator.app import create_app
from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.control import DEMO_CLIENT_ID
from pdauth.emulator.server import uvicorn_config

__all__ = ["add_emulator_command", "config_from_args", "run_emulator"]


_fraction = number_flag(
    float, lambda value: 0.0 <= value <= 1.0, "expected a number between 0 and 1"
)
_positive_float = number_flag(
    float, lambda value: 0 < value < float("inf"), "expected a positive number"
)


def add_emulator_command(sub: Subcommands) -> None:
    """Register ``pdauth emulator``."""
    p = sub.add_parser(
        "emulator",
        help="run a local PagerDuty (identity + REST) for development and tests",
        description="Serve a local PagerDuty emulator: OAuth identity service (authorize, "
        "token, JWKS), REST API for a US and an EU account, and a /_emulator control API. "
        "Not the real PagerDuty.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=port, default=9000, help="port (9000; 0 picks a free one)")
    p.add_argument("--certfile", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--keyfile", help="private key for --certfile (PEM)")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated directory (1)")
    p.add_argument(
        "--rate-limit", type=positive_int, default=960, help="REST requests per window (960)"
    )
    p.add_argument(
        "--rate-window", type=_positive_float, default=60.0, help="rate window, seconds (60)"
    )
    p.add_argument(
        "--access-token-ttl",
        type=positive_int,
        help="access-token lifetime, seconds (default by app kind: Classic 30 d, Scoped 1 d)",
    )
    p.add_argument(
        "--refresh-token-ttl",
        type=positive_int,
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
    p.add_argument(
        "--webhook-retry-scale",
        type=_positive_float,
        default=1.0,
        metavar="FACTOR",
        help="multiply PagerDuty's webhook retry delays (0.01 makes a 30 s retry 0.3 s) (1)",
    )
    p.add_argument(
        "--webhook-bad-signatures",
        action="store_true",
        help="sign every webhook delivery with a wrong key (to test a receiver's refusal)",
    )
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
        webhook_retry_scale=args.webhook_retry_scale,
        webhook_bad_signatures=args.webhook_bad_signatures,
    )


def _banner(base: str, listening: str) -> list[str]:
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
    return [
        "pdauth emulator: a local PagerDuty (not the real service)",
        f"  listening on  {listening}",
        f"  identity      {base}",
        f"  US API        {base}",
        f"  EU API        {base}/eu",
        f"  control API   {base}/_emulator",
        f"  demo app      client_id={DEMO_CLIENT_ID}",
        f"Open {consent} in a browser to see the consent page.",
    ]


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
    sock = listen("emulator", args.host, args.port)
    if sock is None:
        return 1
    try:
        scheme = "https" if args.certfile else "http"
        listening = format_url(scheme, args.host, sock.getsockname()[1])
        uconfig = uvicorn_config(app, certfile=args.certfile, keyfile=args.keyfile, foreground=True)
        try:
            uconfig.load()
        except (OSError, ValueError) as exc:
            print(f"pdauth emulator: cannot load TLS certificate: {exc}", file=sys.stderr)
            return 2
        banner = _banner(config.public_url or listening, listening)
        # Ctrl-C propagates: `pdauth` exits 130, as a shell expects of an interrupted tool.
        serve_until_stopped(uvicorn.Server(uconfig), sock, banner)
    finally:
        sock.close()
    return 0
