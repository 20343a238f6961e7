"""Browser-facing hardening: headers on every response, CSRF, rate limits, errors, mounting."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from pdauth.clock import FrozenClock
from pdauth.service import create_app
from tests.service.conftest import (
    EMULATOR_BASE,
    SERVICE_BASE,
    AppFactory,
    BrowserFactory,
    approve,
    csrf,
    make_settings,
    start_flow,
    token_requests,
)

pytestmark = pytest.mark.anyio

SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


def assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.request.url)
    csp = response.headers["content-security-policy"]
    for directive in (
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'none'",
        "script-src 'self'",
        "default-src 'none'",
    ):
        assert directive in csp
    # The 303 to PagerDuty follows a form POST; Chromium checks form-action on it.
    assert f"form-action 'self' {EMULATOR_BASE}" in csp


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 200),
        ("GET", "/healthz", 200),
        ("GET", "/admin", 200),
        ("GET", "/no/such/page", 404),
        ("GET", "/connect", 405),
        ("POST", "/connect", 415),
        ("GET", "/callback?code=a&state=b", 400),
        ("GET", "/callback", 400),
        ("GET", "/connections/pdc_nope", 404),
        ("GET", "/connect-session?token=nope", 400),
        ("GET", "/api/v1/connections", 401),
        ("GET", "/api/v1/openapi.json", 200),
        ("GET", "/api/v1/nope", 404),
    ],
)
async def test_every_response_carries_the_security_headers(
    method: str, path: str, status: int, browser: httpx.AsyncClient
) -> None:
    response = await browser.request(method, path)
    assert response.status_code == status
    assert_security_headers(response)
    assert response.headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in response.headers  # plain http here


async def test_static_css_is_cacheable_and_pages_use_no_external_assets(
    browser: httpx.AsyncClient,
) -> None:
    css = await browser.get("/static/pdauth.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert "max-age" in css.headers["cache-control"]
    assert_security_headers(css)
    home = await browser.get("/")
    assert "<script" not in home.text
    assert "http://" not in home.text.replace(SERVICE_BASE, "")
    assert "https://" not in home.text
    assert 'style="' not in home.text


async def test_https_deployments_get_hsts_and_host_prefixed_secure_cookies(
    app_factory: AppFactory, browser_factory: BrowserFactory, settings
) -> None:
    app = app_factory(
        settings_=make_settings(settings.database_url, public_url="https://pd.example")
    )
    browser = browser_factory("alice", target=app)
    response = await browser.get("/")
    hsts = response.headers["strict-transport-security"]
    assert "includeSubDomains" in hsts
    assert int(hsts.split("max-age=")[1].split(";")[0]) >= 31_536_000
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-pdauth_session=")
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "samesite=lax" in cookie.lower()
    assert "Path=/" in cookie


async def test_cookies_on_plain_http_are_httponly_lax(browser: httpx.AsyncClient) -> None:
    await csrf(browser)
    token = await csrf(browser)
    response = await browser.post("/connect", data={"csrf_token": token})
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("pdauth_binding=")
    lowered = cookie.lower()
    assert "httponly" in lowered
    assert "samesite=lax" in lowered
    assert "max-age=1200" in lowered


@pytest.mark.parametrize(
    "data",
    [{"other": "x"}, {"csrf_token": ""}, {"csrf_token": "forged"}],
    ids=["missing", "empty", "forged"],
)
async def test_connect_needs_the_sessions_csrf_token(
    data: dict[str, str], browser: httpx.AsyncClient
) -> None:
    await browser.get("/")
    response = await browser.post("/connect", data=data)
    assert response.status_code == 403
    assert "location" not in response.headers
    assert "pdauth_binding" not in response.headers.get("set-cookie", "")


async def test_a_cross_site_post_without_the_session_cookie_is_refused(
    browser_factory: BrowserFactory,
) -> None:
    victim = browser_factory("alice")
    token = await csrf(victim)
    attacker = browser_factory("alice")  # a forged form: the token leaked, the cookie did not
    assert (await attacker.post("/connect", data={"csrf_token": token})).status_code == 403


async def test_get_never_starts_a_flow(browser: httpx.AsyncClient) -> None:
    for path in ("/connect", "/connect?csrf_token=x", "/connections/x/disconnect"):
        response = await browser.get(path)
        assert response.status_code in (404, 405)
        assert "location" not in response.headers


async def test_a_visitor_without_an_owner_cannot_connect(browser_factory: BrowserFactory) -> None:
    anonymous = browser_factory(None)
    home = await anonymous.get("/")
    assert "You are not signed in" in home.text
    token = await csrf(anonymous, "/admin")  # any page with a form gives the session's token
    response = await anonymous.post("/connect", data={"csrf_token": token})
    assert response.status_code == 403
    assert "location" not in response.headers


async def test_connect_and_callback_are_rate_limited_per_client(
    app_factory: AppFactory,
    browser_factory: BrowserFactory,
    settings,
    emulator_client: httpx.AsyncClient,
) -> None:
    app = app_factory(settings_=make_settings(settings.database_url, connect_rate_limit=5))
    browser = browser_factory("alice", target=app, peer="198.51.100.7")
    statuses = [
        (await browser.get("/callback?code=a&state=" + "s" * 43)).status_code for _ in range(8)
    ]
    assert statuses[:5] == [400] * 5
    assert statuses[5:] == [429] * 3
    limited = await browser.get("/callback?code=a&state=b")
    assert int(limited.headers["retry-after"]) >= 1
    # A spoofed X-Forwarded-For from an untrusted peer does not buy a fresh bucket.
    spoofed = await browser.get("/callback?code=a&state=b", headers={"x-forwarded-for": "1.2.3.4"})
    assert spoofed.status_code == 429
    # Another client is unaffected; /connect has its own bucket.
    other = browser_factory("alice", target=app, peer="198.51.100.8")
    assert (await other.get("/callback?code=a&state=b")).status_code == 400
    assert (await start_flow(browser)).params["state"]
    assert await token_requests(emulator_client) == 0


async def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    app_factory: AppFactory, browser_factory: BrowserFactory, settings
) -> None:
    app = app_factory(
        settings_=make_settings(
            settings.database_url, connect_rate_limit=2, trusted_proxies="10.0.0.0/8"
        )
    )
    proxy = browser_factory("alice", target=app, peer="10.0.0.2")

    async def hit(client_ip: str) -> int:
        headers = {"x-forwarded-for": f"6.6.6.6, {client_ip}"}
        response = await proxy.get("/callback?code=a&state=b", headers=headers)
        return int(response.status_code)

    assert [await hit("198.51.100.1") for _ in range(3)] == [400, 400, 429]
    assert await hit("198.51.100.2") == 400  # a different real client behind the proxy


async def test_an_unexpected_error_gets_a_generic_500_page(
    app_factory: AppFactory, browser_factory: BrowserFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(request: Request) -> str:
        raise RuntimeError("internal detail: secret-ish sql SELECT 1")

    app = app_factory(owner_resolver=broken)
    browser = browser_factory("alice", target=app)
    with caplog.at_level(logging.ERROR, logger="pdauth.service"):
        response = await browser.get("/")
    assert response.status_code == 500
    assert "Something went wrong" in response.text
    assert "internal detail" not in response.text
    assert "Traceback" not in response.text
    assert_security_headers(response)
    api = await browser.get("/api/v1/nope")
    assert api.status_code == 404


async def test_the_app_works_mounted_under_a_prefix(
    emulator, emulator_client: httpx.AsyncClient, settings
) -> None:
    registered = await emulator_client.post(
        "/_emulator/apps",
        json={
            "client_id": "mounted-app",
            "client_secret": "mounted-app-secret",
            "redirect_uris": [SERVICE_BASE + "/integrations/pd/callback"],
            "scopes": "read",
        },
    )
    assert registered.status_code in (200, 201), registered.text
    pd_settings = make_settings(
        settings.database_url,
        client_id="mounted-app",
        client_secret="mounted-app-secret",
        redirect_uri=SERVICE_BASE + "/integrations/pd/callback",
    )
    service = create_app(
        pd_settings,
        lambda request: "carol",
        transport=httpx.ASGITransport(app=emulator),
        clock=None,
    )
    host = Starlette(routes=[Mount("/integrations/pd", app=service)])
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=host), base_url=SERVICE_BASE
        ) as browser:
            home = await browser.get("/integrations/pd/")
            assert home.status_code == 200
            assert 'href="/integrations/pd/static/pdauth.css"' in home.text
            assert 'action="/integrations/pd/connect"' in home.text
            token = await csrf(browser, "/integrations/pd/")
            response = await browser.post("/integrations/pd/connect", data={"csrf_token": token})
            assert response.status_code == 303
            assert "Path=/integrations/pd" in response.headers["set-cookie"]
            from urllib.parse import parse_qsl, urlsplit

            from tests.service.conftest import Started

            location = response.headers["location"]
            started = Started(location, dict(parse_qsl(urlsplit(location).query)))
            answer = await emulator_client.post(
                "/_emulator/authorize", json={**started.params, "user": "admin@acme.example"}
            )
            callback = answer.json()["redirect"][len(SERVICE_BASE) :]
            done = await browser.get(callback)
            assert done.status_code == 303
            assert done.headers["location"] == "/integrations/pd/"
            home = await browser.get("/integrations/pd/")
            assert 'href="/integrations/pd/connections/' in home.text
            spec = (await browser.get("/integrations/pd/api/v1/openapi.json")).json()
            assert spec["servers"][0]["url"] == "/integrations/pd/api/v1"
    finally:
        await service.state.pdauth.aclose()


async def test_an_async_owner_resolver_is_supported(
    app_factory: AppFactory, browser_factory: BrowserFactory
) -> None:
    async def resolver(request: Request) -> str | None:
        return "dora"

    app = app_factory(owner_resolver=resolver)
    home = await browser_factory(None, target=app).get("/")
    assert "Signed in as <strong>dora</strong>" in home.text


async def test_an_invalid_owner_from_the_resolver_counts_as_signed_out(
    app_factory: AppFactory, browser_factory
) -> None:
    app = app_factory(owner_resolver=lambda request: "x" * 300)
    home = await browser_factory(None, target=app).get("/")
    assert "You are not signed in" in home.text


async def test_a_session_expires(
    app_factory: AppFactory, browser_factory: BrowserFactory, settings
) -> None:
    import time

    clock = FrozenClock(current=time.time())
    app = app_factory(clock=clock)
    browser = browser_factory("alice", target=app)
    token = await csrf(browser)
    clock.advance(13 * 3600)
    assert (await browser.post("/connect", data={"csrf_token": token})).status_code == 403


async def test_callback_error_pages_never_echo_the_code_or_state(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    started = await start_flow(browser)
    callback = await approve(emulator_client, started)
    code = dict(p.split("=", 1) for p in callback.split("?", 1)[1].split("&"))["code"]
    # Deliver it twice: the second answer is an error page.
    await browser.get(callback)
    page = await browser.get(callback)
    assert page.status_code == 400
    assert code not in page.text
    assert started.params["state"] not in page.text
    assert "location" not in page.headers


async def test_metrics_count_connections_by_status_and_callback_outcomes(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    from tests.service.conftest import connect

    response = await connect(browser, emulator_client)
    assert response.status_code == 303
    scraped = await browser.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert 'pdauth_connections{status="active"} 1.0' in scraped.text
    assert 'pdauth_connections{status="revoked"} 0.0' in scraped.text
    assert "pdauth-demo-secret" not in scraped.text
