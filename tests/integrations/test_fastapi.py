"""pdauth.integrations.starlette / .fastapi against the in-process emulator: the one call mounts
the service and runs its lifespan inside the host's (the host's own lifespan and state kept),
the keeper's absence is an ERROR when the service is mounted without it, the owner resolver
works with and without the host's SessionMiddleware, and the dependencies are owner-checked."""

from __future__ import annotations

import ast
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount

import pdauth.integrations
from pdauth.config import Settings
from pdauth.integrations.fastapi import ConnectorDep, Owner, PagerDuty, mount_pdauth, session_owner
from pdauth.service import create_app
from pdauth.service.app import KEEPER_NOT_RUNNING
from tests.integrations.conftest import (
    MOUNTED_CALLBACK,
    MOUNTED_CLIENT_ID,
    MOUNTED_CLIENT_SECRET,
    MOUNTED_HOST,
)
from tests.service.conftest import EMULATOR_BASE, csrf_of, make_settings

HOST = MOUNTED_HOST

pytestmark = pytest.mark.anyio


def host_settings(database_url: str, **extra: Any) -> Settings:
    return make_settings(
        database_url,
        redirect_uri=MOUNTED_CALLBACK,
        client_id=MOUNTED_CLIENT_ID,
        client_secret=MOUNTED_CLIENT_SECRET,
        **extra,
    )


def header_user(request: Request) -> str | None:
    return request.headers.get("x-user")


def build_host(settings: Settings, emulator: Starlette, **options: Any) -> FastAPI:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        events.append("host up")
        yield {"greeting": "hello"}
        events.append("host down")

    host = FastAPI(lifespan=lifespan)
    host.state.events = events
    options.setdefault("owner_resolver", header_user)
    mount_pdauth(host, settings, transport=httpx.ASGITransport(app=emulator), **options)

    @host.get("/me")
    async def me(owner: Owner, connector: ConnectorDep) -> dict[str, Any]:
        return {"owner": owner, "connections": len(await connector.connections(owner))}

    @host.get("/users/{connection_id}")
    async def users(pd: PagerDuty) -> dict[str, Any]:
        return {"users": len((await pd.get("/users", params={"limit": 5}))["users"])}

    @host.get("/greeting")
    async def greeting(request: Request) -> dict[str, Any]:
        return {"greeting": request.state.greeting}

    return host


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan (as a server runs it) and a browser with a cookie jar."""
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(app=_with_state(app, state or {}))
        async with httpx.AsyncClient(transport=transport, base_url=HOST) as client:
            yield client


def _with_state(app: Any, state: dict[str, Any]) -> Any:
    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "state": dict(state)}
        await app(scope, receive, send)

    return asgi


async def connect(client: httpx.AsyncClient, emulator: Starlette, user: str) -> None:
    """The whole flow for ``user`` (the host names them in ``X-User``)."""
    headers = {"x-user": user}
    home = await client.get("/pagerduty/", headers=headers)
    start = await client.post(
        "/pagerduty/connect", data={"csrf_token": csrf_of(home.text)}, headers=headers
    )
    assert start.status_code == 303, start.text
    params = dict(httpx.URL(start.headers["location"]).params)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=emulator), base_url=EMULATOR_BASE
    ) as pd:
        answer = await pd.post(
            "/_emulator/authorize",
            json={**params, "decision": "approve", "user": "admin@acme.example"},
        )
    assert answer.status_code == 200, answer.text
    callback: str = answer.json()["redirect"]
    assert callback.startswith(MOUNTED_CALLBACK + "?")
    done = await client.get(callback[len(HOST) :], headers=headers)
    assert done.status_code == 303, done.text


async def test_mount_runs_the_service_lifespan_inside_the_hosts(
    database_url: str, mounted_emulator: Starlette
) -> None:
    host = build_host(host_settings(database_url), mounted_emulator)
    async with running(host) as client:
        assert host.state.events == ["host up"]
        assert (await client.get("/greeting")).json() == {"greeting": "hello"}
        assert (await client.get("/pagerduty/healthz")).json() == {"status": "ok"}
    assert host.state.events == ["host up", "host down"]


async def test_dependencies_are_owner_checked(
    database_url: str, mounted_emulator: Starlette
) -> None:
    host = build_host(host_settings(database_url), mounted_emulator)
    async with running(host) as client:
        assert (await client.get("/me")).status_code == 401
        await connect(client, mounted_emulator, "alice")
        connector = host.state.pdauth
        alice = (await (await connector.connector()).connections("alice"))[0]
        mine = await client.get(f"/users/{alice.id}", headers={"x-user": "alice"})
        assert mine.status_code == 200, mine.text
        assert mine.json()["users"] > 0
        theirs = await client.get(f"/users/{alice.id}", headers={"x-user": "bob"})
        assert theirs.status_code == 404
        nobody = await client.get(f"/users/{alice.id}")
        assert nobody.status_code == 401


async def test_a_mounted_service_whose_keeper_cannot_run_says_so_once(
    database_url: str, mounted_emulator: Starlette, caplog: pytest.LogCaptureFixture
) -> None:
    service = create_app(
        host_settings(database_url),
        header_user,
        transport=httpx.ASGITransport(app=mounted_emulator),
        keeper=True,
    )
    host = Starlette(routes=[Mount("/pagerduty", app=service)])
    caplog.set_level(logging.ERROR, logger="pdauth.service")
    try:
        async with running(host) as client:
            for _ in range(3):
                assert (await client.get("/pagerduty/healthz")).status_code == 200
    finally:
        await service.state.pdauth.aclose()
    errors = [r for r in caplog.records if r.getMessage() == KEEPER_NOT_RUNNING]
    assert len(errors) == 1
    assert "mount_pdauth" in KEEPER_NOT_RUNNING


async def test_the_integration_runs_the_keeper_without_that_error(
    database_url: str, mounted_emulator: Starlette, caplog: pytest.LogCaptureFixture
) -> None:
    host = build_host(host_settings(database_url), mounted_emulator, keeper=True)
    caplog.set_level(logging.ERROR, logger="pdauth.service")
    async with running(host) as client:
        assert (await client.get("/pagerduty/healthz")).status_code == 200
    assert not [r for r in caplog.records if r.getMessage() == KEEPER_NOT_RUNNING]


@pytest.mark.parametrize("with_sessions", [True, False])
async def test_session_owner_works_with_and_without_session_middleware(
    database_url: str, mounted_emulator: Starlette, with_sessions: bool
) -> None:
    host = build_host(
        host_settings(database_url), mounted_emulator, owner_resolver=session_owner("user")
    )

    @host.get("/sign-in")
    async def sign_in(request: Request) -> JSONResponse:
        request.session["user"] = "carol"
        return JSONResponse({})

    if with_sessions:
        host.add_middleware(SessionMiddleware, secret_key="host-secret-" + "x" * 32)
    async with running(host) as client:
        if with_sessions:
            assert (await client.get("/sign-in")).status_code == 200
        home = await client.get("/pagerduty/")
        assert home.status_code == 200
        assert ("Signed in as <strong>carol</strong>" in home.text) is with_sessions
        assert ("You are not signed in" in home.text) is not with_sessions


def test_the_integrations_package_imports_no_framework() -> None:
    source = pdauth.integrations.__file__
    assert source is not None
    with open(source, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert [n for n in imports if getattr(n, "module", None) != "__future__"] == []
