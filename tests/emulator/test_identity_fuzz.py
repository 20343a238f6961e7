"""Hostile input: whatever reaches the identity and control endpoints, the answer is a clean 4xx
(JSON on the token endpoint), never a 5xx or a crash."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import anyio
import httpx
from hypothesis import HealthCheck, given, settings, strategies as st
from starlette.applications import Starlette

from pdauth.emulator.app import build_state, create_app
from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.state import EmulatorClock

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=False,
)

KNOWN_KEYS = [
    "grant_type", "client_id", "client_secret", "code", "redirect_uri", "code_verifier",
    "refresh_token", "scope", "token", "state", "response_type", "code_challenge",
    "code_challenge_method", "user", "decision", "consent",
]  # fmt: skip
KNOWN_VALUES = [
    "authorization_code", "refresh_token", "client_credentials", "pdauth-demo",
    "pdauth-demo-secret", "http://127.0.0.1:8000/callback", "as_account-us.acme",
    "as_account-eu.eurocorp users.read", "read write", "S256", "plain", "code", "approve", "",
    "pdus+_1XAAAAA_00000000-0000-0000-0000-000000000000",
]  # fmt: skip
CONTENT_TYPES = [
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=latin-1",
    "APPLICATION/X-WWW-FORM-URLENCODED",
    "application/json",
    "multipart/form-data; boundary=xyz",
    "text/plain",
    "",
]

keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=30))
values = st.one_of(
    st.sampled_from(KNOWN_VALUES),
    st.text(max_size=200),
    st.text(alphabet="a+%=&", min_size=2000, max_size=20_000),
)
forms = st.lists(st.tuples(keys, values), max_size=12)


def _app() -> Starlette:
    config = EmulatorConfig(revocation_endpoint=True)
    return create_app(state=build_state(config, clock=EmulatorClock(start=1_800_000_000.0)))


def _run(app: Starlette, call: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]):
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
            response = await call(client)
            await response.aread()
            return response

    return anyio.run(go)


def _assert_json_4xx(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:200])
    body = response.json()
    assert isinstance(body["error"], str)
    assert isinstance(body["error_description"], str)


def test_token_endpoint_answers_random_forms_with_json_4xx() -> None:
    app = _app()

    @FUZZ
    @given(form=forms, ctype=st.sampled_from(CONTENT_TYPES[:3]))
    def check(form: list[tuple[str, str]], ctype: str) -> None:
        response = _run(
            app,
            lambda c: c.post(
                "/oauth/token",
                content=str(httpx.QueryParams(tuple(form))).encode(),
                headers={"Content-Type": ctype},
            ),
        )
        _assert_json_4xx(response)

    check()


def test_token_endpoint_answers_random_bytes_and_content_types_with_json_4xx() -> None:
    app = _app()

    @FUZZ
    @given(
        body=st.one_of(st.binary(max_size=2000), st.binary(min_size=16_000, max_size=40_000)),
        ctype=st.one_of(st.sampled_from(CONTENT_TYPES), st.text(max_size=60)),
        basic=st.one_of(st.none(), st.text(max_size=80)),
    )
    def check(body: bytes, ctype: str, basic: str | None) -> None:
        headers = {"Content-Type": ctype.encode("ascii", "ignore").decode().strip()}
        if basic is not None:
            headers["Authorization"] = "Basic " + basic.encode("ascii", "ignore").decode().strip()
        response = _run(app, lambda c: c.post("/oauth/token", content=body, headers=headers))
        _assert_json_4xx(response)

    check()


def test_revocation_endpoint_answers_random_forms_without_5xx() -> None:
    app = _app()

    @FUZZ
    @given(form=forms)
    def check(form: list[tuple[str, str]]) -> None:
        response = _run(app, lambda c: c.post("/oauth/revoke", data=dict(form)))
        assert response.status_code < 500

    check()


def test_authorize_and_decision_never_fail_with_5xx() -> None:
    app = _app()

    @FUZZ
    @given(query=forms, form=forms)
    def check(query: list[tuple[str, str]], form: list[tuple[str, str]]) -> None:
        try:
            page = _run(app, lambda c: c.get("/oauth/authorize", params=tuple(query)))
        except httpx.InvalidURL:
            return  # longer than any URL httpx will send: nothing reaches the emulator
        assert page.status_code in (200, 302, 400)
        if page.status_code == 302:
            assert page.headers["location"].startswith("http://127.0.0.1:8000/callback")
        decided = _run(app, lambda c: c.post("/oauth/authorize/decision", data=dict(form)))
        assert decided.status_code in (303, 400, 413)

    check()


CONTROL_FIELDS = [
    "client_id", "redirect_uri", "response_type", "scope", "user", "decision", "target", "kind",
    "count", "delay", "advance", "keep_old", "redirect_uris", "scopes", "name", "client_secret",
    "client_type", "account",
]  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def test_control_api_answers_random_json_without_5xx() -> None:
    app = _app()
    paths = ["/_emulator/authorize", "/_emulator/apps", "/_emulator/faults", "/_emulator/revoke",
             "/_emulator/clock", "/_emulator/keys/rotate"]  # fmt: skip
    fields = st.sampled_from(CONTROL_FIELDS)

    @FUZZ
    @given(
        path=st.sampled_from(paths),
        body=st.one_of(st.dictionaries(fields, json_values, max_size=6), json_values),
    )
    def check(path: str, body: object) -> None:
        raw = json.dumps(body).encode()
        response = _run(
            app, lambda c: c.post(path, content=raw, headers={"Content-Type": "application/json"})
        )
        assert response.status_code < 500, (path, body, response.text[:200])
        state = app.state.emulator
        state.faults.clear()  # injected faults would (rightly) produce 5xx elsewhere

    check()
