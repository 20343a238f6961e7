"""The canary test: no secret pdauth handled reaches a log line, the database or a page.

The whole browser flow — successes and every failure path (denied, replayed callback, wrong
browser, expired flow, tampered state, token-endpoint 500/503/timeout faults on the code
exchange and on refresh, a 401 from the REST API, invalid_grant after ``/_emulator/revoke``,
the JSON API's token vending, disconnect) — runs at DEBUG with pdauth's logging configured,
once over real sockets (uvicorn serves the service with its access log on, and the emulator;
text logs) and once in-process (``httpx.ASGITransport``; JSON logs). Every secret that
existed is then searched for, raw, percent-encoded, hex and base64, in: everything the
logging handler wrote, everything written to the process's stdout/stderr, the SQLite
database with its -wal/-shm files, and every response body the service served (the one
access-token vending body, which must hold a token, excepted — but never a log line).

The secrets come from where they really live: tokens and codes from the emulator's state,
id_tokens and PKCE verifiers from an ASGI middleware on the emulator recording every
``/oauth/token`` request and response body, states from the authorize redirects, cookie values
from the browsers' jars, and the configured client secret, session secret, key material, API
key and admin password. A hit names the secret, where it was found, and some masked context.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pdauth.clock import FrozenClock
from pdauth.config import Settings
from pdauth.crypto import format_key, generate_key
from pdauth.emulator import EmulatorConfig, create_app as create_emulator
from pdauth.emulator.server import EmulatorServer
from pdauth.emulator.state import EmulatorState
from pdauth.logs import configure_logging
from pdauth.service import create_app
from pdauth.service.server import bind_socket, uvicorn_config
from pdauth.store import upgrade
from tests.emulator_kit import make_emulator_state
from tests.service.conftest import ADMIN_PASSWORD, API_KEY, CLIENT_SECRET, SESSION_SECRET
from tests.test_connections_canary import encodings

pytestmark = pytest.mark.anyio

START = 1_800_000_000.0
USER = "admin@acme.example"
TOKEN_PATH = "/oauth/token"


class Secrets:
    """Every secret value seen during a run, by a name that says what it is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, str] = {}

    def add(self, name: str, value: object) -> None:
        if isinstance(value, str) and len(value) >= 8:
            with self._lock:
                self.values.setdefault(value, name)


class TokenEndpointRecorder:
    """ASGI middleware on the emulator: records /oauth/token request and response bodies."""

    def __init__(self, app: ASGIApp, secrets: Secrets) -> None:
        self.app = app
        self.secrets = secrets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith(TOKEN_PATH):
            await self.app(scope, receive, send)
            return
        request = bytearray()
        response = bytearray()

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                request.extend(message.get("body", b""))
            return message

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                response.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, recording_receive, recording_send)
        finally:
            for name, value in parse_qsl(request.decode("utf-8", "replace")):
                if name in ("code", "code_verifier", "refresh_token", "client_secret"):
                    self.secrets.add(f"{name} (token request)", value)
            try:
                body = json.loads(response)
            except ValueError:
                body = None
            if isinstance(body, dict):
                for name in ("access_token", "refresh_token", "id_token"):
                    self.secrets.add(f"{name} (token response)", body.get(name))


@dataclass
class Served:
    """Response bodies the service sent, by request line."""

    bodies: list[tuple[str, bytes]] = field(default_factory=list)
    excluded: set[str] = field(default_factory=set)  # request lines whose body may hold a token


class ServiceRecorder:
    """ASGI wrapper around the service: keeps every response body (pages, JSON, errors)."""

    def __init__(self, app: ASGIApp, served: Served) -> None:
        self.app = app
        self.served = served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        line = f"{scope['method']} {scope['path']}"
        body = bytearray()

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.served.bodies.append((line, bytes(body)))


def make_settings(database_url: str, emulator_url: str, service_url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "client_id": "pdauth-demo",
        "client_secret": CLIENT_SECRET,
        "redirect_uri": service_url + "/callback",
        "scopes": "read",
        "encryption_keys": format_key(generate_key("k1")),
        "session_secret": SESSION_SECRET,
        "identity_url": emulator_url,
        "api_url": emulator_url,
        "api_url_eu": emulator_url + "/eu",
        "database_url": database_url,
        "api_keys": API_KEY,
        "admin_password": ADMIN_PASSWORD,
        "http_timeout": 0.5,
    }
    values.update(extra)
    return Settings.from_env({}, **values)


def configured_secrets(settings: Settings, secrets: Secrets) -> None:
    secrets.add("client secret", CLIENT_SECRET)
    secrets.add("session secret", SESSION_SECRET)
    secrets.add("API key", API_KEY)
    secrets.add("admin password", ADMIN_PASSWORD)
    keys = settings.encryption_keys.get_secret_value()
    secrets.add("encryption keys setting", keys)
    for part in keys.replace(",", ":").split(":"):
        secrets.add("encryption key material", part)


@dataclass
class World:
    """What a scenario drives: the service (through browsers), the emulator, both clocks."""

    service_url: str
    service_transport: httpx.AsyncBaseTransport | None
    emulator_url: str
    emulator_transport: httpx.AsyncBaseTransport | None
    state: EmulatorState
    clock: FrozenClock
    secrets: Secrets
    served: Served
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def browser(self, user: str = "alice") -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=self.service_transport,
            base_url=self.service_url,
            headers={"x-test-user": user},
        )
        self.clients.append(client)
        return client

    def control(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=self.emulator_transport, base_url=self.emulator_url)
        self.clients.append(client)
        return client

    async def aclose(self) -> None:
        for client in self.clients:
            for cookie in client.cookies.jar:
                self.secrets.add(f"cookie {cookie.name}", cookie.value)
            await client.aclose()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.state.clock.advance(seconds)


async def start(world: World, browser: httpx.AsyncClient) -> dict[str, str]:
    home = await browser.get("/")
    assert home.status_code == 200, home.text
    csrf = home.text.split('name="csrf_token" value="')[1].split('"')[0]
    response = await browser.post("/connect", data={"csrf_token": csrf})
    assert response.status_code == 303, response.text
    params = dict(parse_qsl(urlsplit(response.headers["location"]).query))
    world.secrets.add("state (authorize redirect)", params["state"])
    return params


async def approve(
    world: World, control: httpx.AsyncClient, params: dict[str, str], decision: str = "approve"
) -> str:
    answer = await control.post(
        "/_emulator/authorize", json={**params, "decision": decision, "user": USER}
    )
    assert answer.status_code == 200, answer.text
    redirect = urlsplit(answer.json()["redirect"])
    for name, value in parse_qsl(redirect.query):
        if name in ("code", "state"):
            world.secrets.add(f"{name} (callback)", value)
    return f"{redirect.path}?{redirect.query}"


async def fault(control: httpx.AsyncClient, kind: str, count: int, delay: float = 0.0) -> None:
    response = await control.post(
        "/_emulator/faults", json={"target": "token", "kind": kind, "count": count, "delay": delay}
    )
    assert response.status_code == 200, response.text


async def connection_ids(browser: httpx.AsyncClient, owner: str) -> list[str]:
    listed = await browser.get(
        "/api/v1/connections",
        params={"owner": owner},
        headers={"authorization": f"Bearer {API_KEY}"},
    )
    assert listed.status_code == 200, listed.text
    return [c["id"] for c in listed.json()["connections"]]


async def scenario(world: World, *, timeouts: bool) -> None:
    alice, control = world.browser("alice"), world.control()
    api = {"authorization": f"Bearer {API_KEY}"}

    # Success, then the same callback replayed.
    callback = await approve(world, control, await start(world, alice))
    assert (await alice.get(callback)).status_code == 303
    assert (await alice.get(callback)).status_code == 400
    [cid] = await connection_ids(alice, "alice")
    assert (await alice.get("/")).status_code == 200
    assert (await alice.get(f"/connections/{cid}", params={"try": "1"})).status_code == 200

    # Denied at PagerDuty; wrong browser; tampered state; expired flow.
    denied = await approve(world, control, await start(world, alice), decision="deny")
    assert (await alice.get(denied)).status_code >= 400
    stolen = await approve(world, control, await start(world, alice))
    assert (await world.browser("alice").get(stolen)).status_code >= 400
    good = await approve(world, control, await start(world, alice))
    query = dict(parse_qsl(urlsplit(good).query))
    query["state"] = query["state"][:-2] + ("AA" if query["state"][-2:] != "AA" else "BB")
    tampered = f"{urlsplit(good).path}?{urlencode(query)}"
    assert (await alice.get(tampered)).status_code >= 400
    expired = await approve(world, control, await start(world, alice))
    world.advance(700)
    assert (await alice.get(expired)).status_code >= 400

    # Token-endpoint faults during the code exchange.
    for kind in ("500", "503"):
        failing = await approve(world, control, await start(world, alice))
        await fault(control, kind, 1)
        assert (await alice.get(failing)).status_code >= 400
    assert (await control.get("/_emulator/faults")).json()["pending"]["token"] == 0

    # A 401 from the REST API (the access token revoked alone): refresh, then success.
    vended = await alice.post(f"/api/v1/connections/{cid}/access-token", headers=api)
    assert vended.status_code == 200, vended.text
    world.served.excluded.add(f"POST /api/v1/connections/{cid}/access-token")
    world.secrets.add("vended access token", vended.json()["access_token"])
    assert world.state.revoke_token(vended.json()["access_token"])
    tried = await alice.get(f"/connections/{cid}", params={"try": "1"})
    assert tried.status_code == 200
    assert 'id="try-users"' in tried.text

    # Token-endpoint faults during refresh: the access token has expired meanwhile.
    kinds = ["500", "503", *(["timeout"] if timeouts else [])]
    for kind in kinds:
        world.advance(2 * 86400)
        await fault(control, kind, 3, delay=1.0 if kind == "timeout" else 0.0)
        failed = await alice.post(f"/api/v1/connections/{cid}/access-token", headers=api)
        assert failed.status_code == 502, (kind, failed.text)
        assert (await control.get("/_emulator/faults")).json()["pending"]["token"] == 0
    assert (await alice.post(f"/api/v1/connections/{cid}/access-token", headers=api)).is_success

    # A second connection, disconnected through the page.
    bob = world.browser("bob")
    assert (await bob.get(await approve(world, control, await start(world, bob)))).is_redirect
    [bob_cid] = await connection_ids(bob, "bob")
    confirm = await bob.get(f"/connections/{bob_cid}/disconnect")
    csrf = confirm.text.split('name="csrf_token" value="')[1].split('"')[0]
    gone = await bob.post(f"/connections/{bob_cid}/disconnect", data={"csrf_token": csrf})
    assert gone.status_code == 303

    # PagerDuty's "Revoke All Tokens": the next refresh gets invalid_grant -> needs_reauth.
    revoked = await control.post("/_emulator/revoke", json={"client_id": "pdauth-demo"})
    assert revoked.status_code == 200, revoked.text
    world.advance(2 * 86400)
    dead = await alice.post(f"/api/v1/connections/{cid}/access-token", headers=api)
    assert dead.status_code == 409, dead.text
    assert (await alice.get(f"/connections/{cid}", params={"try": "1"})).status_code == 200
    assert (await alice.get("/")).status_code == 200


def harvest_emulator(state: EmulatorState, secrets: Secrets) -> None:
    with state.lock:
        for code in state.codes:
            secrets.add("code (emulator)", code)
        for token in state.access_tokens:
            secrets.add("access_token (emulator)", token)
        for token in state.refresh_tokens:
            secrets.add("refresh_token (emulator)", token)


def find_leaks(secrets: Secrets, haystacks: dict[str, bytes]) -> list[str]:
    hits: list[str] = []
    for value, name in secrets.values.items():
        forms = {*encodings(value), quote(value, safe="").encode()}
        for where, data in haystacks.items():
            for form in forms:
                at = data.find(form)
                if at >= 0:
                    before = data[max(0, at - 40) : at].decode("utf-8", "replace")
                    after = data[at + len(form) : at + len(form) + 40].decode("utf-8", "replace")
                    hits.append(f"{name} in {where}: …{before}<{name}>{after}…")
                    break
    return hits


@contextmanager
def captured_logging(fmt: Literal["text", "json"]) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("DEBUG", fmt, stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@contextmanager
def serve_with_access_log(app: ASGIApp, sock: Any) -> Iterator[None]:
    """uvicorn as ``pdauth serve`` configures it (access log on), on a background thread."""
    config = uvicorn_config(app, access_log=True, log_level="debug")
    config.load()
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    try:
        while not server.started:
            assert thread.is_alive(), "the service did not start"
            assert time.monotonic() < deadline, "the service did not start in time"
            time.sleep(0.005)
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def emulator_app(secrets: Secrets) -> Starlette:
    # Both clocks start at START: the id_token's iat/exp are checked against pdauth's clock.
    state = make_emulator_state(EmulatorConfig(access_token_ttl=3600), start=START)
    app = create_emulator(state=state)
    app.add_middleware(TokenEndpointRecorder, secrets=secrets)
    return app


@asynccontextmanager
async def socket_world(tmp_path: Path, secrets: Secrets, served: Served) -> AsyncIterator[World]:
    database_url = f"sqlite:///{tmp_path}/pdauth.db"
    upgrade(database_url)
    with EmulatorServer(app=emulator_app(secrets)) as emulator:
        sock = bind_socket("127.0.0.1", 0)
        try:
            service_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            demo = emulator.state.app("pdauth-demo")
            assert demo is not None
            uris = (*demo.redirect_uris, service_url + "/callback")
            emulator.state.register_app(dataclasses.replace(demo, redirect_uris=uris))
            settings = make_settings(database_url, emulator.url, service_url)
            configured_secrets(settings, secrets)
            clock = FrozenClock(current=START)
            app = create_app(settings, _header_owner, clock=clock)
            with serve_with_access_log(ServiceRecorder(app, served), sock):
                world = World(
                    service_url, None, emulator.url, None, emulator.state, clock, secrets, served
                )
                try:
                    yield world
                finally:
                    await world.aclose()
                    harvest_emulator(emulator.state, secrets)
        finally:
            sock.close()


@asynccontextmanager
async def inprocess_world(tmp_path: Path, secrets: Secrets, served: Served) -> AsyncIterator[World]:
    database_url = f"sqlite:///{tmp_path}/pdauth.db"
    upgrade(database_url)
    emulator = emulator_app(secrets)
    emulator_url, service_url = "http://127.0.0.1:9", "http://127.0.0.1:8000"
    settings = make_settings(database_url, emulator_url, service_url)
    configured_secrets(settings, secrets)
    clock = FrozenClock(current=START)
    app = create_app(
        settings, _header_owner, transport=httpx.ASGITransport(app=emulator), clock=clock
    )
    state: EmulatorState = emulator.state.emulator
    world = World(
        service_url,
        httpx.ASGITransport(app=ServiceRecorder(app, served)),
        emulator_url,
        httpx.ASGITransport(app=emulator),
        state,
        clock,
        secrets,
        served,
    )
    try:
        yield world
    finally:
        await world.aclose()
        await app.state.pdauth.aclose()
        harvest_emulator(state, secrets)


def _header_owner(request: Any) -> str | None:
    value = request.headers.get("x-test-user")
    return value if isinstance(value, str) else None


@pytest.mark.parametrize(("mode", "fmt"), [("socket", "text"), ("inprocess", "json")])
async def test_no_secret_in_logs_database_or_pages(
    mode: str, fmt: Literal["text", "json"], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    secrets, served = Secrets(), Served()
    make = socket_world if mode == "socket" else inprocess_world
    with captured_logging(fmt) as logs:
        async with make(tmp_path, secrets, served) as world:
            await scenario(world, timeouts=mode == "socket")
    out, err = capfd.readouterr()

    # The scan is only meaningful if the flow really produced secrets and log lines.
    names = set(secrets.values.values())
    for needed in ("access_token", "refresh_token", "code", "id_token", "code_verifier", "state"):
        assert any(name.startswith(needed + " ") for name in names), f"no {needed} was seen"
    text = logs.getvalue()
    assert "refresh succeeded" in text
    assert "needs re-authorization" in text
    assert "request_id" in text
    if mode == "socket":
        assert "GET /callback?" in text, "uvicorn's access log did not run"
        assert "HTTP Request: POST" in text, "httpx's request log did not run"

    haystacks: dict[str, bytes] = {
        f"log output ({fmt})": text.encode(),
        "stdout": out.encode(),
        "stderr": err.encode(),
    }
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = tmp_path / f"pdauth.db{suffix}"
        if path.exists():
            haystacks[path.name] = path.read_bytes()
    for index, (line, body) in enumerate(served.bodies):
        if line not in served.excluded:
            haystacks[f"response #{index} to {line}"] = body

    leaks = find_leaks(secrets, haystacks)
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)
