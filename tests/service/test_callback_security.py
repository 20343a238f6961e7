"""Each negative case of docs/SECURITY.md sections A-E at the service's edge, one per test.

"No exchange" is asserted from the emulator's token-endpoint counter; "nothing connected" from
the owner's home page.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import quote, urlencode

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from pdauth.clock import FrozenClock
from tests.service.conftest import (
    SERVICE_BASE,
    AppFactory,
    BrowserFactory,
    approve,
    connect,
    csrf,
    start_flow,
    token_requests,
)
from tests.test_returnto import OPEN_REDIRECT_PAYLOADS

pytestmark = pytest.mark.anyio


async def connections_of(browser: httpx.AsyncClient) -> int:
    return (await browser.get("/")).text.count('href="/connections/')


async def test_callback_delivered_to_another_browser_is_refused_and_not_consumed(
    browser_factory: BrowserFactory, emulator_client: httpx.AsyncClient
) -> None:
    a = browser_factory("alice")
    b = browser_factory("alice")  # same user, another browser (no cookies of A's)
    callback = await approve(emulator_client, await start_flow(a))
    before = await token_requests(emulator_client)
    refused = await b.get(callback)
    assert refused.status_code == 400
    assert "Finish in the browser where you started" in refused.text
    assert await token_requests(emulator_client) == before
    assert await connections_of(b) == 0
    # Nothing was consumed: the browser that started the flow still finishes it.
    assert (await a.get(callback)).status_code == 303


async def test_callback_for_a_flow_started_by_another_user_is_refused(
    browser_factory: BrowserFactory, emulator_client: httpx.AsyncClient
) -> None:
    browser = browser_factory("alice")
    callback = await approve(emulator_client, await start_flow(browser))
    before = await token_requests(emulator_client)
    # Same browser (same cookies), but the host app now says bob is signed in.
    refused = await browser.get(callback, headers={"x-test-user": "bob"})
    assert refused.status_code == 400
    assert "another user" in refused.text or "another browser" in refused.text
    assert await token_requests(emulator_client) == before
    assert await connections_of(browser_factory("bob")) == 0


async def test_a_callback_after_the_host_signed_the_user_out_is_refused(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    callback = await approve(emulator_client, await start_flow(browser))
    before = await token_requests(emulator_client)
    refused = await browser.get(callback, headers={"x-test-user": ""})
    assert refused.status_code == 403
    assert "not signed in" in refused.text
    assert await token_requests(emulator_client) == before
    # Signed in again as the same user, the flow is still there to finish.
    assert (await browser.get(callback)).status_code == 303


async def test_a_replayed_callback_is_refused(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    callback = await approve(emulator_client, await start_flow(browser))
    assert (await browser.get(callback)).status_code == 303
    before = await token_requests(emulator_client)
    again = await browser.get(callback)
    assert again.status_code == 400
    assert "already used" in again.text
    assert await token_requests(emulator_client) == before


async def test_replay_with_cookies_captured_before_the_first_callback(
    browser_factory: BrowserFactory, emulator_client: httpx.AsyncClient
) -> None:
    browser = browser_factory("alice")
    callback = await approve(emulator_client, await start_flow(browser))
    captured = dict(browser.cookies.items())
    assert (await browser.get(callback)).status_code == 303
    replayer = browser_factory("alice")
    for name, value in captured.items():
        replayer.cookies.set(name, value, domain="127.0.0.1")
    before = await token_requests(emulator_client)
    assert (await replayer.get(callback)).status_code == 400
    assert await token_requests(emulator_client) == before


async def test_two_parallel_callbacks_make_one_exchange(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    callback = await approve(emulator_client, await start_flow(browser))
    before = await token_requests(emulator_client)
    statuses: list[int] = []

    async def hit() -> None:
        statuses.append((await browser.get(callback)).status_code)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(hit)
    assert sorted(statuses) == [303, 400, 400, 400]
    assert await token_requests(emulator_client) == before + 1


async def test_an_expired_flow_is_refused_without_exchange(
    app_factory: AppFactory, browser_factory: BrowserFactory, emulator_client: httpx.AsyncClient
) -> None:
    clock = FrozenClock(current=time.time())
    app = app_factory(clock=clock)
    browser = browser_factory("alice", target=app)
    callback = await approve(emulator_client, await start_flow(browser))
    clock.advance(601)
    before = await token_requests(emulator_client)
    response = await browser.get(callback)
    assert response.status_code == 400
    assert "expired" in response.text
    assert await token_requests(emulator_client) == before


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda q: q.replace("state=", "state=X"), id="tampered-state"),
        pytest.param(lambda q: q.split("&state=")[0], id="missing-state"),
        pytest.param(lambda q: q + "&state=", id="empty-second-state"),
        pytest.param(lambda q: q + "&state=other", id="duplicated-state"),
        pytest.param(lambda q: q + "&code=other", id="duplicated-code"),
        pytest.param(lambda q: q.replace("code=", "nocode="), id="missing-code"),
        pytest.param(lambda q: q.replace("state=", "state=%21"), id="state-outside-charset"),
        pytest.param(lambda q: q + "&error=access_denied", id="code-and-error"),
        pytest.param(lambda q: q.replace("code=", "code=" + "c" * 1100), id="code-too-long"),
        pytest.param(lambda q: q.replace("code=", "code=%00"), id="code-control-char"),
    ],
)
async def test_malformed_callbacks_are_refused_without_exchange(
    mutate, browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    callback = await approve(emulator_client, await start_flow(browser))
    path, query = callback.split("?", 1)
    before = await token_requests(emulator_client)
    response = await browser.get(path + "?" + mutate(query))
    assert response.status_code == 400
    assert await token_requests(emulator_client) == before
    assert "code=" not in response.text
    if "state" not in mutate.__name__:  # nothing was consumed: the real callback still works
        pass
    assert await connections_of(browser) == 0


async def test_a_malformed_callback_leaves_the_flow_usable(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    callback = await approve(emulator_client, await start_flow(browser))
    assert (await browser.get(callback + "&code=again")).status_code == 400
    assert (await browser.get(callback)).status_code == 303


async def test_unknown_parameters_are_ignored(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    callback = await approve(emulator_client, await start_flow(browser))
    assert (await browser.get(callback + "&foo=bar")).status_code == 303


async def test_a_tampered_code_is_rejected_by_pagerduty_and_nothing_is_stored(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    callback = await approve(emulator_client, await start_flow(browser))
    response = await browser.get(callback.replace("code=", "code=x"))
    assert response.status_code == 400
    assert "did not accept" in response.text
    assert await connections_of(browser) == 0


async def test_a_forged_binding_cookie_is_refused(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    callback = await approve(emulator_client, await start_flow(browser))
    value = browser.cookies["pdauth_binding"]
    browser.cookies.set("pdauth_binding", value[:-3] + "AAA", domain="127.0.0.1")
    before = await token_requests(emulator_client)
    assert (await browser.get(callback)).status_code == 400
    assert await token_requests(emulator_client) == before


@pytest.mark.parametrize("payload", OPEN_REDIRECT_PAYLOADS)
async def test_every_open_redirect_payload_lands_on_the_default_page(
    payload: str, browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    callback = await connect(browser, emulator_client, return_to=payload)
    assert callback.status_code == 303
    assert callback.headers["location"] == "/"


async def test_return_to_on_the_callback_url_is_ignored(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    callback = await approve(emulator_client, await start_flow(browser))
    response = await browser.get(callback + "&return_to=https://evil.com&next=//evil.com")
    assert response.headers["location"] == "/"


ERRORS = [
    ("access_denied", 400, "Access was not granted"),
    ("invalid_request", 400, "PagerDuty reported a problem"),
    ("unauthorized_client", 400, "PagerDuty reported a problem"),
    ("unsupported_response_type", 400, "PagerDuty reported a problem"),
    ("invalid_scope", 400, "Permissions not granted"),
    ("server_error", 502, "PagerDuty is unavailable"),
    ("temporarily_unavailable", 502, "PagerDuty is unavailable"),
    ("made_up_error", 400, "PagerDuty reported a problem"),
]
HOSTILE_DESCRIPTIONS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "Call +1 555 0100 to restore access",
    "caf\u00e9 \u2603 \u202e",
    "x" * 900,
]


# Every error code once, and every hostile description once, without the full cross product.
CASES = [
    (*ERRORS[i % len(ERRORS)], HOSTILE_DESCRIPTIONS[i % len(HOSTILE_DESCRIPTIONS)])
    for i in range(max(len(ERRORS), len(HOSTILE_DESCRIPTIONS)))
] + [(*ERRORS[0], d) for d in HOSTILE_DESCRIPTIONS[1:]]


@pytest.mark.parametrize(("error", "status", "heading", "description"), CASES)
async def test_error_responses_get_a_friendly_page_without_exchange(
    error: str,
    status: int,
    heading: str,
    description: str,
    browser: httpx.AsyncClient,
    emulator_client: httpx.AsyncClient,
) -> None:
    started = await start_flow(browser)
    query = urlencode(
        {
            "error": error,
            "error_description": description,
            "error_uri": "https://evil.example/phish",
            "state": started.params["state"],
        },
        quote_via=quote,
    )
    before = await token_requests(emulator_client)
    response = await browser.get("/callback?" + query)
    assert response.status_code == status
    assert heading in response.text
    assert "Try again" in response.text
    assert "<script>alert" not in response.text
    assert "onerror" not in response.text
    assert "555 0100" not in response.text
    assert "evil.example" not in response.text
    assert started.params["state"] not in response.text
    assert await token_requests(emulator_client) == before
    # The state was consumed: the same response again is "already used".
    assert "already used" in (await browser.get("/callback?" + query)).text


async def test_deny_on_the_consent_page(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    callback = await approve(emulator_client, await start_flow(browser), decision="deny")
    response = await browser.get(callback)
    assert response.status_code == 400
    assert "Access was not granted" in response.text
    assert await connections_of(browser) == 0


async def test_scopes_not_granted(
    app_factory: AppFactory,
    browser_factory: BrowserFactory,
    emulator_client: httpx.AsyncClient,
    settings,
) -> None:
    from tests.service.conftest import make_settings

    # PagerDuty grants only `openid` when asked for a scope it does not know.
    app = app_factory(
        settings_=make_settings(settings.database_url, scopes="read nosuchthing.read")
    )
    browser = browser_factory("alice", target=app)
    before = await token_requests(emulator_client)
    response = await connect(browser, emulator_client)
    assert response.status_code == 400
    assert "Permissions not granted" in response.text
    assert await token_requests(emulator_client) == before + 1
    assert await connections_of(browser) == 0


async def test_pagerduty_unavailable(
    browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    callback = await approve(emulator_client, await start_flow(browser))
    fault = {"target": "token", "kind": "503", "count": 1}
    assert (await emulator_client.post("/_emulator/faults", json=fault)).status_code == 200
    response = await browser.get(callback)
    assert response.status_code == 502
    assert "PagerDuty is unavailable" in response.text
    assert "Try again" in response.text
    assert await connections_of(browser) == 0


async def test_redirect_uri_ignores_host_and_forwarded_headers(browser: httpx.AsyncClient) -> None:
    token = await csrf(browser)
    for headers in (
        {"host": "evil.example"},
        {"x-forwarded-host": "evil.example", "x-forwarded-proto": "https"},
        {"forwarded": "host=evil.example;proto=https"},
    ):
        response = await browser.post("/connect", data={"csrf_token": token}, headers=headers)
        assert response.status_code == 303
        location = response.headers["location"]
        assert "evil.example" not in location
        assert quote(SERVICE_BASE + "/callback", safe="") in location


async def raw_get(app: Starlette, path: str, query: bytes) -> int:
    """Status of a GET sent straight to the ASGI app (httpx refuses URLs over 64 KB)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"127.0.0.1:8000")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


async def test_oversized_inputs_are_refused_early(
    app: Starlette, browser: httpx.AsyncClient, emulator_client: httpx.AsyncClient
) -> None:
    before = await token_requests(emulator_client)
    assert await raw_get(app, "/callback", b"state=" + b"a" * 1_000_000) == 414
    assert (await browser.get("/callback?state=" + "a" * 60_000)).status_code == 414
    assert (await browser.get("/" + "a" * 5000)).status_code == 414
    token = await csrf(browser)
    big = await browser.post("/connect", data={"csrf_token": token, "return_to": "x" * 100_000})
    assert big.status_code == 413
    many = {f"f{i}": "x" for i in range(50)}
    assert (await browser.post("/connect", data={"csrf_token": token, **many})).status_code == 400
    assert (
        await browser.post("/connect", data={"csrf_token": token, "return_to": "/" * 3000})
    ).status_code == 400  # a form field over 4 KB encoded
    long_return = await browser.post(
        "/connect", data={"csrf_token": token, "return_to": "/a" * 300}
    )
    assert long_return.status_code == 303  # accepted; return_to falls back to the default
    browser.cookies.set("pdauth_binding", "x" * 5000, domain="127.0.0.1")
    assert (await browser.get("/callback?code=a&state=b")).status_code == 400
    assert await token_requests(emulator_client) == before
