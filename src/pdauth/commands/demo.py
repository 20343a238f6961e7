"""``pdauth demo``: the service and the PagerDuty emulator together on loopback, nothing to set up.

The emulator (:class:`~pdauth.emulator.EmulatorServer`, port 9000 or any free one) serves
identity, both regional APIs and its consent page; the service runs on ``--port`` or the first
free port of 127.0.0.1:8000-8010, and its redirect URI is registered for the emulator's demo
app (``pdauth-demo``) through the emulator's control API, so Connect works on any port.
Logging follows ``PDAUTH_LOG_LEVEL`` and ``PDAUTH_LOG_FORMAT`` (INFO, text by default); no
other variable is read. State lives in a local data directory (``./.pdauth``, mode 0700): a
SQLite database (``demo.db``, migrated on start) and ``demo.env`` (mode 0600), where an
encryption key, a session secret, an API key and an admin password are generated on first run
and reused after, so connections survive restarts. Every visitor is signed in as
``demo-user``. Ctrl-C (or SIGTERM) stops both servers.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import stat
import sys
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request

from pdauth._net import bind_socket
from pdauth.commands._common import Subcommands, port, serve_until_stopped
from pdauth.config import Settings
from pdauth.crypto import format_key, generate_key
from pdauth.emulator import EmulatorConfig, EmulatorServer
from pdauth.errors import ConfigurationError
from pdauth.logs import configure_logging, protect_host_loggers
from pdauth.service import create_app
from pdauth.service.server import uvicorn_config
from pdauth.store import upgrade

__all__ = [
    "DEMO_OWNER",
    "add_demo_command",
    "demo_app",
    "demo_settings",
    "load_or_create_secrets",
    "run_demo",
]

DEMO_OWNER = "demo-user"
DEMO_CLIENT_ID = "pdauth-demo"
DEMO_CLIENT_SECRET = "pdauth-demo-secret"  # noqa: S105 - the emulator's public demo app
SERVICE_PORTS = range(8000, 8011)  # the emulator's demo app registers these redirect URIs
EMULATOR_PORT = 9000
_LOGGING_VARIABLES = ("PDAUTH_LOG_LEVEL", "PDAUTH_LOG_FORMAT")
_SECRET_NAMES = (
    "PDAUTH_ENCRYPTION_KEYS",
    "PDAUTH_SESSION_SECRET",
    "PDAUTH_API_KEYS",
    "PDAUTH_ADMIN_PASSWORD",
)


def _generate_secrets() -> dict[str, str]:
    return {
        "PDAUTH_ENCRYPTION_KEYS": format_key(generate_key()),
        "PDAUTH_SESSION_SECRET": secrets.token_urlsafe(32),
        "PDAUTH_API_KEYS": "demo_" + secrets.token_urlsafe(24),
        "PDAUTH_ADMIN_PASSWORD": secrets.token_urlsafe(12),
    }


def load_or_create_secrets(data_dir: Path) -> dict[str, str]:
    """The demo's secrets from ``data_dir/demo.env``, generated (mode 0600) on first use."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    env_file = data_dir / "demo.env"
    if not env_file.exists():
        values = _generate_secrets()
        body = "".join(f"{name}={values[name]}\n" for name in _SECRET_NAMES)
        # O_EXCL + 0600 from the start: the file is never readable by others, not even briefly.
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("# pdauth demo secrets (generated; keep private)\n" + body)
        return values
    if env_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        env_file.chmod(0o600)
    values = {}
    for line in env_file.read_text(encoding="utf-8").splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() in _SECRET_NAMES:
            values[name.strip()] = value.strip()
    missing = [name for name in _SECRET_NAMES if not values.get(name)]
    if missing:
        generated = _generate_secrets()
        with env_file.open("a", encoding="utf-8") as handle:
            for name in missing:
                values[name] = generated[name]
                handle.write(f"{name}={generated[name]}\n")
    return values


#: The v3 event types every demo connection subscribes to.
DEMO_EVENTS = "incident.triggered,incident.acknowledged,incident.resolved"


def demo_settings(
    *,
    data_dir: Path,
    port: int,
    emulator_url: str,
    secrets_: Mapping[str, str],
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Settings wiring the service to the emulator's demo app. Of ``env`` only the logging
    variables count (PDAUTH_LOG_LEVEL, PDAUTH_LOG_FORMAT); a bad value is a
    ConfigurationError."""
    source = dict(secrets_)
    for name in _LOGGING_VARIABLES:
        value = (env or {}).get(name, "").strip()
        if value:
            source[name] = value
    return Settings.from_env(
        source,
        client_id=DEMO_CLIENT_ID,
        client_secret=DEMO_CLIENT_SECRET,
        redirect_uri=f"http://127.0.0.1:{port}/callback",
        scopes="read write",
        identity_url=emulator_url,
        api_url=emulator_url,
        api_url_eu=emulator_url + "/eu",
        database_url=f"sqlite:///{data_dir.resolve() / 'demo.db'}",
        # PagerDuty's own events for every connection, shown live on the connection page:
        # the keeper subscribes each new connection within a couple of seconds.
        pagerduty_events=DEMO_EVENTS,
        keeper_interval=2,
    )


def _demo_owner(request: Request) -> str:
    return DEMO_OWNER


def demo_app(settings: Settings) -> Starlette:
    """The service with every visitor signed in as the demo owner."""
    return create_app(settings, _demo_owner, keeper=True)


def add_demo_command(sub: Subcommands) -> None:
    """Register ``pdauth demo``."""
    demo = sub.add_parser(
        "demo",
        help="run the service and the PagerDuty emulator together on loopback",
        description="Start a local PagerDuty emulator and the pdauth service wired to it; "
        "open the printed URL and press Connect PagerDuty. Ctrl-C stops both.",
    )
    demo.add_argument(
        "--data-dir", default=".pdauth", help="where the demo keeps its database and secrets"
    )
    demo.add_argument(
        "--port",
        type=port,
        default=None,
        help="service port (default: first free of 8000-8010, the demo app's redirect URIs)",
    )
    demo.add_argument(
        "--emulator-port", type=port, default=None, help="emulator port (default 9000, or any)"
    )
    demo.set_defaults(handler=run_demo)


def _bind_service(wanted: int | None) -> socket.socket | None:
    """The service's socket: ``wanted``, or the first free of the default ports."""
    for candidate in [wanted] if wanted is not None else SERVICE_PORTS:
        try:
            return bind_socket("127.0.0.1", candidate)
        except OSError:
            continue
    return None


def _start_emulator(wanted: int | None) -> EmulatorServer | None:
    """The emulator on ``wanted``, or on 9000, or on any free port; None if it cannot start."""
    for candidate in [wanted] if wanted is not None else [EMULATOR_PORT, 0]:
        try:
            return EmulatorServer(EmulatorConfig(), port=candidate).start()
        except OSError:
            continue
    return None


def register_redirect_uri(emulator_url: str, redirect_uri: str) -> None:
    """Register ``redirect_uri`` for the demo app at the emulator (its control API), keeping
    the default loopback URIs: PagerDuty, and the emulator, accept only registered URIs."""
    with httpx.Client(base_url=emulator_url, timeout=10.0) as client:
        apps = client.get("/_emulator/apps").raise_for_status().json()["apps"]
        uris = next(
            (list(a["redirect_uris"]) for a in apps if a.get("client_id") == DEMO_CLIENT_ID), []
        )
        if redirect_uri in uris:
            return
        client.post(
            "/_emulator/apps",
            json={
                "client_id": DEMO_CLIENT_ID,
                "name": "pdauth demo",
                "kind": "classic",
                "client_secret": DEMO_CLIENT_SECRET,
                "redirect_uris": [*uris, redirect_uri],
                "scopes": "read write",
            },
        ).raise_for_status()


def _banner(url: str, emulator_url: str, data_dir: Path) -> list[str]:
    return [
        "pdauth demo: the service and a local PagerDuty emulator (not the real one)",
        f"  emulator      {emulator_url}  (consent page, REST API, /_emulator)",
        f"  JSON API      {url}api/v1  (API key and admin password: {data_dir / 'demo.env'})",
        f"  database      {data_dir / 'demo.db'}",
        "Signed in as demo-user. The emulator starts empty each time, so connections "
        "from an earlier run will ask to be reconnected.",
        "PagerDuty events: open a connection's page, then make an incident at the emulator:",
        f"  curl -X POST {emulator_url}/_emulator/incidents -H 'Content-Type: application/json' "
        """-d '{"account": "acme", "title": "Disk full"}'""",
        "Press Ctrl-C to stop.",
        "",
        f"Open {url}",
    ]


def _serve(
    sock: socket.socket, emulator: EmulatorServer, data_dir: Path, values: Mapping[str, str]
) -> None:
    port = sock.getsockname()[1]
    settings = demo_settings(
        data_dir=data_dir, port=port, emulator_url=emulator.url, secrets_=values, env=os.environ
    )
    configure_logging(settings.log_level, settings.log_format)
    protect_host_loggers(settings)  # every configured secret is redacted from logs
    register_redirect_uri(emulator.url, settings.redirect_uri)
    upgrade(settings.database_url)
    config = uvicorn_config(demo_app(settings), log_level=settings.log_level)
    config.load()
    banner = _banner(f"http://127.0.0.1:{port}/", emulator.url, data_dir)
    with suppress(KeyboardInterrupt):  # Ctrl-C is the way to stop the demo: exit 0
        serve_until_stopped(uvicorn.Server(config), sock, banner)


def run_demo(args: argparse.Namespace) -> int:
    """Exit codes: 0 stopped, 1 no free port or no emulator, 2 a bad logging variable."""
    data_dir = Path(args.data_dir)
    values = load_or_create_secrets(data_dir)
    sock = _bind_service(args.port)
    if sock is None:
        ports = [args.port] if args.port is not None else list(SERVICE_PORTS)
        wanted = ports[0] if len(ports) == 1 else f"{ports[0]}-{ports[-1]}"
        print(f"pdauth demo: no free port ({wanted}) on 127.0.0.1", file=sys.stderr)
        return 1
    try:
        emulator = _start_emulator(args.emulator_port)
        if emulator is None:
            print("pdauth demo: cannot start the emulator (port taken)", file=sys.stderr)
            return 1
        try:
            _serve(sock, emulator, data_dir, values)
        except ConfigurationError as exc:
            print(f"pdauth demo: {exc}", file=sys.stderr)
            return 2
        except httpx.HTTPError as exc:  # our own emulator refused the redirect URI
            print(f"pdauth demo: cannot register the redirect URI ({exc})", file=sys.stderr)
            return 1
        finally:
            emulator.stop()
    finally:
        sock.close()
    return 0
