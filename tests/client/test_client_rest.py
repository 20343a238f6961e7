"""PagerDutyClient against the emulator (in-process) and a few tiny ASGI apps.

Covers the wire conventions, the 401 → one refresh, 403, retries, 429 handling, deadlines
and pagination. Pacing under load is in ``test_client_pacing_emulator.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from hypothesis import given, settings, strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from pdauth.client import LocalPacer, PagerDutyClient, RetryPolicy, StaticToken
from pdauth.client.credentials import ApiKeyToken
from pdauth.clock import FrozenClock
from pdauth.errors import (
    AuthenticationError,
    ConfigurationError,
    DeadlineExceededError,
    NeedsReauthError,
    PagerDutyAPIError,
    PaginationLimitError,
    RateLimitedError,
    RequestRefusedError,
    ScopeError,
    TransportError,
)

from .emulator_helpers import BASE, Emulator, RefreshingTokens

FAST = RetryPolicy(retries=3, backoff_base=0.01, backoff_cap=0.05, throttle_base=0.2)


@dataclass
class FakeTime:
    """A clock that moves only when the code under test sleeps."""

    clock: FrozenClock = field(default_factory=FrozenClock)
    sleeps: list[float] = field(default_factory=list)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(max(seconds, 0.0))
        await anyio.lowlevel.checkpoint()


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts requests; can fail the first ``refuse`` connections as a closed port would."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, refuse: int = 0) -> None:
        self.inner = inner
        self.refuse = refuse
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.refuse:
            self.refuse -= 1
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def client_for(
    emulator: Emulator, tokens: Any = None, *, transport: Any = None, **kw: Any
) -> PagerDutyClient:
    kw.setdefault("pacer", LocalPacer())
    kw.setdefault("retries", FAST)
    return PagerDutyClient(
        BASE,
        tokens if tokens is not None else ApiKeyToken(emulator.api_key()),
        transport=transport or emulator.transport(),
        **kw,
    )


@pytest.fixture
def emulator() -> Emulator:
    return Emulator.create()


# -- wire conventions -----------------------------------------------------------------------


def echo_app() -> Starlette:
    async def echo(request: Request) -> Response:
        body = await request.body()
        return JSONResponse(
            {
                "method": request.method,
                "headers": dict(request.headers),
                "query": str(request.query_params),
                "body": json.loads(body) if body else None,
            }
        )

    async def empty(request: Request) -> Response:
        return Response(status_code=204)

    async def text(request: Request) -> Response:
        return PlainTextResponse("not json")

    async def elsewhere(request: Request) -> Response:
        return RedirectResponse("http://evil.example/steal", status_code=302)

    return Starlette(
        routes=[
            Route("/echo", echo, methods=["GET", "POST", "PUT", "DELETE"]),
            Route("/empty", empty, methods=["DELETE"]),
            Route("/text", text),
            Route("/redirect", elsewhere),
        ]
    )


@pytest.mark.anyio
async def test_requests_carry_pagerduty_headers_and_json() -> None:
    async with PagerDutyClient(
        BASE,
        StaticToken("tok_123"),
        from_email="admin@acme.example",
        transport=httpx.ASGITransport(app=echo_app()),
        pacer=LocalPacer(),
    ) as client:
        got = await client.post("/echo", json={"incident": {"title": "disk full"}})
    headers = got["headers"]
    assert headers["accept"] == "application/vnd.pagerduty+json;version=2"
    assert headers["authorization"] == "Bearer tok_123"
    assert headers["from"] == "admin@acme.example"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("pdauth")
    assert got["body"] == {"incident": {"title": "disk full"}}


@pytest.mark.anyio
async def test_api_keys_use_the_token_scheme_and_params_are_encoded() -> None:
    async with PagerDutyClient.from_token(
        "key_1",
        kind="api_key",
        base_url=BASE,
        transport=httpx.ASGITransport(app=echo_app()),
        pacer=LocalPacer(),
    ) as client:
        got = await client.get("/echo", params={"statuses[]": ["triggered", "acknowledged"]})
    assert got["headers"]["authorization"] == "Token token=key_1"
    assert "from" not in got["headers"]
    assert got["query"] == "statuses%5B%5D=triggered&statuses%5B%5D=acknowledged"


@pytest.mark.anyio
async def test_empty_answers_are_none_and_non_json_is_an_error() -> None:
    async with PagerDutyClient(
        BASE, StaticToken("t"), transport=httpx.ASGITransport(app=echo_app()), pacer=LocalPacer()
    ) as client:
        assert await client.delete("/empty") is None
        with pytest.raises(PagerDutyAPIError, match="not JSON"):
            await client.get("/text")


@pytest.mark.anyio
async def test_redirects_are_never_followed() -> None:
    transport = CountingTransport(httpx.ASGITransport(app=echo_app()))
    async with PagerDutyClient(
        BASE, StaticToken("secret-tok"), transport=transport, pacer=LocalPacer()
    ) as client:
        with pytest.raises(PagerDutyAPIError) as caught:
            await client.get("/redirect")
    assert caught.value.status == 302
    assert [r.url.host for r in transport.requests] == ["127.0.0.1"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path",
    [
        "https://evil.example/users",
        "http://127.0.0.1:8080/users",  # another port
        "https://127.0.0.1/users",  # another scheme
        "http://user@127.0.0.1/users",
        "//evil.example/users",
        "/users/../../etc",
        "/users\\..",
        "/users\nHost: x",
    ],
)
async def test_the_credential_never_leaves_the_base_url(path: str) -> None:
    transport = CountingTransport(httpx.ASGITransport(app=echo_app()))
    async with PagerDutyClient(
        BASE, StaticToken("secret-tok"), transport=transport, pacer=LocalPacer()
    ) as client:
        with pytest.raises(RequestRefusedError) as caught:
            await client.get(path)
    assert transport.requests == []
    assert "secret-tok" not in str(caught.value)


@pytest.mark.anyio
async def test_an_absolute_url_under_the_base_is_fine() -> None:
    async with PagerDutyClient(
        BASE + "/eu",
        StaticToken("t"),
        transport=httpx.ASGITransport(app=echo_app()),
        pacer=LocalPacer(),
    ) as client:
        with pytest.raises(RequestRefusedError):
            await client.get(BASE + "/users")  # the US API, outside an EU base
        with pytest.raises(PagerDutyAPIError) as caught:
            await client.get(BASE + "/eu/echo")
        assert caught.value.status == 404  # sent (the echo app has no /eu)


@pytest.mark.anyio
async def test_caller_headers_cannot_replace_the_credential() -> None:
    async with PagerDutyClient(
        BASE, StaticToken("t"), transport=httpx.ASGITransport(app=echo_app()), pacer=LocalPacer()
    ) as client:
        with pytest.raises(RequestRefusedError):
            await client.get("/echo", headers={"Authorization": "Bearer other"})
        got = await client.get("/echo", headers={"X-Request-Id": "r1"})
    assert got["headers"]["x-request-id"] == "r1"


@pytest.mark.parametrize(
    "url",
    [
        "http://api.pagerduty.com",
        "ftp://127.0.0.1",
        "https://api.pagerduty.com?x=1",
        "https://user:pw@api.pagerduty.com",
        "https://api.pagerduty.com/#x",
        "https://api.pagerduty.com:99999",
        "api.pagerduty.com",
        "https://api.pager duty.com",
    ],
)
def test_base_url_must_be_https_or_loopback(url: str) -> None:
    with pytest.raises(ConfigurationError):
        PagerDutyClient(url, StaticToken("t"))


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url", ["https://api.pagerduty.com", "http://localhost:9000", "http://[::1]:9000/eu"]
)
async def test_good_base_urls(url: str) -> None:
    client = PagerDutyClient(url, StaticToken("secret-tok"))
    assert client.base_url == url
    assert "secret-tok" not in repr(client)
    await client.aclose()


@pytest.mark.anyio
async def test_a_borrowed_http_client_is_not_closed() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=echo_app())) as http:
        async with PagerDutyClient(BASE, StaticToken("t"), http=http, pacer=LocalPacer()) as c:
            await c.get("/echo")
        assert not http.is_closed


# -- PagerDuty answers ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_get_returns_parsed_json(emulator: Emulator) -> None:
    async with client_for(emulator) as client:
        page = await client.get("/users", params={"limit": 5})
    assert len(page["users"]) == 5
    assert page["more"] is True


@pytest.mark.anyio
async def test_errors_carry_status_code_message_and_errors(emulator: Emulator) -> None:
    async with client_for(emulator) as client:
        with pytest.raises(PagerDutyAPIError) as missing:
            await client.get("/users/PNOPE00")
        with pytest.raises(PagerDutyAPIError) as invalid:
            await client.get("/users", params={"limit": "lots"})
    assert (missing.value.status, missing.value.code, missing.value.message) == (
        404,
        2100,
        "Not Found",
    )
    assert missing.value.path == "/users/PNOPE00"
    assert invalid.value.status == 400
    assert invalid.value.code == 2001
    assert invalid.value.errors


# -- 401 and 403 ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_401_refreshes_exactly_once_and_retries_once() -> None:
    emulator = Emulator.create(access_token_ttl=60)
    issued = await emulator.user_tokens()
    tokens = RefreshingTokens(emulator, issued["access_token"], issued["refresh_token"])
    emulator.state.clock.advance(120)  # the access token expired, the refresh token did not
    async with client_for(emulator, tokens) as client:
        me = await client.get("/users/me")
    assert me["user"]["email"] == "admin@acme.example"
    assert tokens.refreshes == 1
    assert emulator.rest("GET /users/me", 401) == 1
    assert emulator.rest("GET /users/me", 200) == 1


@pytest.mark.anyio
async def test_a_second_401_is_final(emulator: Emulator) -> None:
    class StubbornTokens:
        pacing_key = "stubborn"
        refreshes = 0

        async def authorization(self) -> str:
            return "Bearer not-a-token"

        async def refresh(self, rejected: str) -> str:
            self.refreshes += 1
            return "Bearer still-not-a-token"

    tokens = StubbornTokens()
    async with client_for(emulator, tokens) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.get("/users")
    assert tokens.refreshes == 1
    assert emulator.rest("GET /users", 401) == 2
    assert caught.value.code == 2006
    assert "not-a-token" not in str(caught.value)


@pytest.mark.anyio
async def test_a_static_token_401_is_not_retried(emulator: Emulator) -> None:
    async with client_for(emulator, StaticToken("pdus+_0bogus")) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.get("/users")
    assert emulator.rest("GET /users") == 1
    assert caught.value.status == 401
    assert "bogus" not in str(caught.value)


@pytest.mark.anyio
async def test_a_dead_grant_surfaces_as_needs_reauth() -> None:
    emulator = Emulator.create(access_token_ttl=60)
    issued = await emulator.user_tokens()
    tokens = RefreshingTokens(emulator, issued["access_token"], issued["refresh_token"])
    emulator.state.revoke(client_id="pdauth-demo")  # "Revoke All Tokens"
    async with client_for(emulator, tokens) as client:
        with pytest.raises(NeedsReauthError):
            await client.get("/users/me")
    assert tokens.refreshes == 1
    assert emulator.rest("GET /users/me") == 1


@pytest.mark.anyio
async def test_403_names_the_missing_scope_and_never_refreshes(emulator: Emulator) -> None:
    client_id, secret = await emulator.register_scoped_app(["users.read", "incidents.read"])
    issued = await emulator.user_tokens(
        scope="users.read", client_id=client_id, client_secret=secret
    )
    tokens = RefreshingTokens(emulator, issued["access_token"], issued["refresh_token"])
    async with client_for(emulator, tokens) as client:
        assert (await client.get("/users", params={"limit": 1}))["users"]
        with pytest.raises(ScopeError) as caught:
            await client.get("/incidents")
    assert caught.value.status == 403
    assert caught.value.required_scopes == ("incidents.read",)
    assert tokens.refreshes == 0
    assert emulator.rest("GET /incidents") == 1


# -- retries --------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["500", "503", "drop"])
async def test_get_is_retried_after_5xx(emulator: Emulator, kind: str) -> None:
    await emulator.fault(kind, count=2)
    async with client_for(emulator) as client:
        page = await client.get("/users", params={"limit": 1})
    assert page["users"]
    assert emulator.rest("GET /users") == 3


@pytest.mark.anyio
async def test_retries_are_bounded(emulator: Emulator) -> None:
    await emulator.fault("500", count=10)
    async with client_for(emulator, retries=RetryPolicy(retries=2, backoff_base=0.01)) as client:
        with pytest.raises(PagerDutyAPIError) as caught:
            await client.get("/users")
    assert caught.value.status == 500
    assert emulator.rest("GET /users") == 3


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["500", "503", "drop"])
async def test_post_is_not_retried_once_it_may_have_arrived(emulator: Emulator, kind: str) -> None:
    before = len(emulator.state.directory.incidents_of("PACME01"))
    await emulator.fault(kind)
    body = {"incident": {"type": "incident", "title": "disk full", "service": {}}}
    service = next(iter(emulator.state.directory.services.values()))
    body["incident"]["service"] = {"id": service.id, "type": "service_reference"}
    async with client_for(emulator, from_email="admin@acme.example") as client:
        with pytest.raises(PagerDutyAPIError):
            await client.post("/incidents", json=body)
    assert emulator.rest("POST /incidents") == 1
    created = len(emulator.state.directory.incidents_of("PACME01")) - before
    assert created == (1 if kind == "drop" else 0)  # "drop" processed it: a retry would dup


@pytest.mark.anyio
async def test_post_marked_idempotent_is_retried(emulator: Emulator) -> None:
    await emulator.fault("503")
    service = next(iter(emulator.state.directory.services.values()))
    body = {
        "incident": {
            "type": "incident",
            "title": "disk full",
            "service": {"id": service.id, "type": "service_reference"},
            "incident_key": "disk-full-1",
        }
    }
    async with client_for(emulator, from_email="admin@acme.example") as client:
        created = await client.post("/incidents", json=body, idempotent=True)
    assert created["incident"]["title"] == "disk full"
    assert emulator.rest("POST /incidents") == 2


@pytest.mark.anyio
async def test_post_is_retried_when_it_surely_was_not_sent(emulator: Emulator) -> None:
    transport = CountingTransport(emulator.transport(), refuse=1)
    service = next(iter(emulator.state.directory.services.values()))
    body = {
        "incident": {
            "type": "incident",
            "title": "disk full",
            "service": {"id": service.id, "type": "service_reference"},
        }
    }
    async with client_for(emulator, transport=transport, from_email="admin@acme.example") as c:
        await c.post("/incidents", json=body)
    assert len(transport.requests) == 2
    assert emulator.rest("POST /incidents") == 1


@pytest.mark.anyio
async def test_connect_errors_exhaust_into_a_transport_error(emulator: Emulator) -> None:
    transport = CountingTransport(emulator.transport(), refuse=100)
    async with client_for(emulator, transport=transport) as client:
        with pytest.raises(TransportError) as caught:
            await client.get("/users")
    assert not isinstance(caught.value, DeadlineExceededError)
    assert len(transport.requests) == 4  # one try and three retries
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


@pytest.mark.anyio
async def test_a_hung_attempt_times_out_and_a_get_is_retried(emulator: Emulator) -> None:
    await emulator.fault("timeout", delay=30)
    async with client_for(emulator, timeout=0.2) as client:
        page = await client.get("/users", params={"limit": 1})
    assert page["users"]


@pytest.mark.anyio
async def test_the_deadline_bounds_the_whole_call(emulator: Emulator) -> None:
    await emulator.fault("timeout", count=20, delay=30)
    async with client_for(emulator, timeout=0.2, deadline=0.5) as client:
        with pytest.raises(DeadlineExceededError):
            await client.get("/users")
    with anyio.fail_after(5):  # per call, too
        async with client_for(emulator, timeout=10, deadline=60) as client:
            with pytest.raises(DeadlineExceededError):
                await client.get("/users", deadline=0.3)


# -- 429 ------------------------------------------------------------------------------------


async def exhaust(emulator: Emulator, n: int) -> None:
    async with emulator.http() as http:
        for _ in range(n):
            await http.get("/users", headers={"Authorization": f"Token token={emulator.api_key()}"})


@pytest.mark.anyio
async def test_429_without_headers_backs_off_and_succeeds() -> None:
    emulator = Emulator.create(rate_limit=3, rate_window=1.5, drop_ratelimit_headers=1.0)
    await exhaust(emulator, 3)
    async with client_for(emulator) as client:
        page = await client.get("/users", params={"limit": 1})
    assert page["users"]
    limited = emulator.rate_limited()
    assert limited["without_headers"] >= 1
    assert limited["with_headers"] == 0


@pytest.mark.anyio
async def test_429_without_headers_and_no_time_left_raises_rate_limited() -> None:
    emulator = Emulator.create(rate_limit=1, rate_window=60, drop_ratelimit_headers=1.0)
    await exhaust(emulator, 1)
    fake = FakeTime()
    async with client_for(
        emulator,
        deadline=0.3,
        clock=fake.clock,
        sleep=fake.sleep,
        pacer=LocalPacer(clock=fake.clock, sleep=fake.sleep),
    ) as client:
        with pytest.raises(RateLimitedError) as caught:
            await client.get("/users")
    assert caught.value.status == 429
    assert caught.value.retry_after is not None
    assert sum(fake.sleeps) <= 0.3


@pytest.mark.anyio
async def test_429_with_headers_waits_for_the_reset() -> None:
    emulator = Emulator.create(rate_limit=2, rate_window=1.0)
    await exhaust(emulator, 2)
    async with client_for(emulator) as client:
        page = await client.get("/users", params={"limit": 1})
    assert page["users"]
    assert emulator.rate_limited() == {"total": 1, "with_headers": 1, "without_headers": 0}


@pytest.mark.anyio
async def test_a_long_reset_past_the_deadline_raises_at_once() -> None:
    emulator = Emulator.create(rate_limit=1, rate_window=60)
    await exhaust(emulator, 1)
    fake = FakeTime()
    pacer = LocalPacer(clock=fake.clock, sleep=fake.sleep)
    async with client_for(
        emulator, deadline=5, clock=fake.clock, sleep=fake.sleep, pacer=pacer
    ) as client:
        with pytest.raises(RateLimitedError) as caught:
            await client.get("/users")
        assert caught.value.code == 2020
        assert caught.value.retry_after == 60
        # The pacer learned the budget is gone: the next call fails fast, without a request.
        with pytest.raises(DeadlineExceededError):
            await client.get("/users")
    assert fake.sleeps == []
    assert emulator.rest("GET /users", 429) == 1


def retry_after_app(value: str) -> tuple[Starlette, list[int]]:
    served: list[int] = []

    async def endpoint(request: Request) -> Response:
        served.append(1)
        if len(served) == 1:
            return JSONResponse(
                {"error": {"message": "Rate Limit Exceeded", "code": 2020}},
                status_code=429,
                headers={"Retry-After": value},
            )
        return JSONResponse({"users": []})

    return Starlette(routes=[Route("/users", endpoint)]), served


@pytest.mark.anyio
async def test_retry_after_seconds_is_honoured() -> None:
    app, served = retry_after_app("3")
    fake = FakeTime()
    async with PagerDutyClient(
        BASE,
        StaticToken("t"),
        transport=httpx.ASGITransport(app=app),
        clock=fake.clock,
        sleep=fake.sleep,
        pacer=LocalPacer(clock=fake.clock, sleep=fake.sleep),
    ) as client:
        assert await client.get("/users") == {"users": []}
    assert len(served) == 2
    assert sum(fake.sleeps) == pytest.approx(3.0)


@pytest.mark.anyio
async def test_retry_after_http_date_is_honoured() -> None:
    fake = FakeTime()
    when = datetime.fromtimestamp(fake.clock.now() + 7, tz=UTC)
    app, served = retry_after_app(format_datetime(when, usegmt=True))
    async with PagerDutyClient(
        BASE,
        StaticToken("t"),
        transport=httpx.ASGITransport(app=app),
        clock=fake.clock,
        sleep=fake.sleep,
        pacer=LocalPacer(clock=fake.clock, sleep=fake.sleep),
    ) as client:
        await client.get("/users")
    assert len(served) == 2
    assert sum(fake.sleeps) == pytest.approx(7.0, abs=1.0)


# -- pagination -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_iter_all_reads_every_user_in_pages_of_100(emulator: Emulator) -> None:
    async with client_for(emulator) as client:
        users = [u async for u in client.iter_all("/users")]
    assert len(users) == 250
    assert len({u["id"] for u in users}) == 250
    assert emulator.rest("GET /users") == 3


@pytest.mark.anyio
async def test_iter_all_keeps_the_callers_filters_and_page_size(emulator: Emulator) -> None:
    async with client_for(emulator) as client:
        users = [u async for u in client.iter_all("/users", {"limit": 40, "query": "a"})]
    expected = await _all_users_matching(emulator, "a")
    assert {u["id"] for u in users} == expected
    assert emulator.rest("GET /users") >= len(expected) // 40


async def _all_users_matching(emulator: Emulator, query: str) -> set[str]:
    found: set[str] = set()
    async with emulator.http() as http:
        offset = 0
        while True:
            page = (
                await http.get(
                    "/users",
                    params={"query": query, "limit": 100, "offset": offset},
                    headers={"Authorization": f"Token token={emulator.api_key()}"},
                )
            ).json()
            found |= {u["id"] for u in page["users"]}
            if not page["more"]:
                return found
            offset += len(page["users"])


@pytest.mark.anyio
async def test_iter_all_picks_cursor_pagination_by_path(emulator: Emulator) -> None:
    async with client_for(emulator) as client:
        everything = [r async for r in client.iter_all("/audit/records")]
        small_pages = [r async for r in client.iter_cursor("/audit/records", page_size=30)]
    assert len(everything) > 100  # several pages of 100
    assert [r["id"] for r in small_pages] == [r["id"] for r in everything]
    assert len({r["id"] for r in everything}) == len(everything)


@pytest.mark.anyio
async def test_cursor_pagination_spans_several_pages(emulator: Emulator) -> None:
    async with client_for(emulator) as client:
        records = [r async for r in client.iter_cursor("/audit/records", page_size=60)]
    pages = emulator.rest("GET /audit/records", 200)
    assert len(records) > 60
    assert pages in (-(-len(records) // 60), len(records) // 60 + 1)  # a last empty page or not


@pytest.mark.anyio
async def test_classic_pagination_stops_loudly_at_10000() -> None:
    emulator = Emulator.create(users_per_account=10_050, rate_limit=1_000_000)
    seen = 0

    async def read_all(client: PagerDutyClient) -> None:
        nonlocal seen
        async for _ in client.iter_all("/users"):
            seen += 1

    async with client_for(emulator) as client:
        with pytest.raises(PaginationLimitError) as caught:
            await read_all(client)
    assert seen == 10_000
    assert caught.value.path == "/users"
    assert emulator.rest("GET /users", 400) == 0  # never asked PagerDuty past the cap


# -- bad input ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eu_client() -> Iterator[PagerDutyClient]:
    client = PagerDutyClient(BASE + "/eu", StaticToken("t"), pacer=LocalPacer())
    yield client
    anyio.run(client.aclose)


@settings(max_examples=150, deadline=None)
@given(path=st.text(max_size=60))
def test_any_path_is_either_refused_or_stays_under_the_base(
    eu_client: PagerDutyClient, path: str
) -> None:
    try:
        url = httpx.URL(eu_client._url(path))
    except RequestRefusedError:
        return
    assert (url.scheme, url.host, url.port) == ("http", "127.0.0.1", None)
    assert url.path == "/eu" or url.path.startswith("/eu/")


def odd_app() -> Starlette:
    async def endpoint(request: Request) -> Response:
        kind = request.path_params["kind"]
        bodies: dict[str, tuple[int, bytes, str]] = {
            "html401": (401, b"<html>Unauthorized</html>", "text/html"),
            "list500": (500, b"[1, 2]", "application/json"),
            "string403": (403, b'{"error": "nope", "required_scopes": ["a.read", 7]}', "x/y"),
            "deep400": (400, b"[" * 5000 + b"]" * 5000, "application/json"),
            "badcode404": (404, b'{"error": {"code": true, "message": 5}}', "application/json"),
            "empty418": (418, b"", "text/plain"),
        }
        status, body, mime = bodies[kind]
        return Response(body, status_code=status, media_type=mime)

    return Starlette(routes=[Route("/odd/{kind}", endpoint, methods=["POST"])])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "error", "status"),
    [
        ("html401", AuthenticationError, 401),
        ("list500", PagerDutyAPIError, 500),
        ("string403", ScopeError, 403),
        ("deep400", PagerDutyAPIError, 400),
        ("badcode404", PagerDutyAPIError, 404),
        ("empty418", PagerDutyAPIError, 418),
    ],
)
async def test_odd_error_bodies_still_give_typed_errors(
    kind: str, error: type[PagerDutyAPIError], status: int
) -> None:
    async with PagerDutyClient(
        BASE,
        StaticToken("t"),
        transport=httpx.ASGITransport(app=odd_app()),
        pacer=LocalPacer(),
        retries=RetryPolicy(retries=0),
    ) as client:
        with pytest.raises(error) as caught:
            await client.post(f"/odd/{kind}", json={})
    assert type(caught.value) is error
    assert caught.value.status == status
    assert caught.value.code is None
    if kind == "string403":
        assert isinstance(caught.value, ScopeError)
        assert caught.value.message == "nope"
        assert caught.value.required_scopes == ("a.read",)
