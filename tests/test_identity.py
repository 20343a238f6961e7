"""IdentityClient against the in-process emulator: exchange, discovery, JWKS, id_token checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pdauth.clock import FrozenClock
from pdauth.emulator import EmulatorConfig
from pdauth.errors import (
    ConfigurationError,
    IdTokenError,
    InvalidClientError,
    InvalidGrantError,
    OAuthError,
    TokenResponseError,
    TransportError,
)
from pdauth.identity import IdentityClient
from pdauth.oauth import (
    TokenSet,
    build_authorization_url,
    generate_code_verifier,
    generate_state,
    s256_challenge,
)
from tests.workers.harness import (
    BASE,
    DEMO_ID,
    DEMO_REDIRECT,
    DEMO_SECRET,
    EU_ADMIN,
    US_ADMIN,
    Harness,
    Intercept,
    harness,
    make_settings,
    signing_key,
)

pytestmark = pytest.mark.anyio

JWKS_PATH = "/global/oauth/anonymous/jwks"
DISCOVERY_PATH = "/global/oauth/anonymous/.well-known/openid-configuration"


@pytest.fixture
async def h(tmp_path: os.PathLike[str]) -> AsyncIterator[Harness]:
    async with harness("sqlite:///" + os.path.join(os.fspath(tmp_path), "t.db")) as h:
        yield h


async def code_and_verifier(h: Harness, user: str = US_ADMIN) -> tuple[str, str]:
    verifier = generate_code_verifier()
    url = build_authorization_url(
        h.settings.authorize_endpoint,
        client_id=h.settings.client_id,
        redirect_uri=DEMO_REDIRECT,
        scopes=h.settings.scopes,
        state=generate_state(),
        code_challenge=s256_challenge(verifier),
    )
    body = {**dict(parse_qsl(urlsplit(url).query)), "user": user, "decision": "approve"}
    response = await h.control.post("/_emulator/authorize", json=body)
    query = dict(parse_qsl(urlsplit(response.json()["redirect"]).query))
    return query["code"], verifier


async def exchange(h: Harness, user: str = US_ADMIN) -> TokenSet:
    code, verifier = await code_and_verifier(h, user)
    return await h.connector.identity.exchange_code(code, verifier)


def claims_of(id_token: str) -> dict[str, Any]:
    payload = id_token.split(".")[1]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return data


def sign(claims: dict[str, Any], *, key: rsa.RSAPrivateKey | None = None, kid: str | None) -> str:
    jwk = RSAKey.import_key(key or signing_key())
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    return jwt.encode(header, claims, jwk)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# -- exchange and identity ---------------------------------------------------------------------


async def test_exchange_verifies_id_token_and_learns_the_us_account(h: Harness) -> None:
    tokens = await exchange(h)
    assert tokens.id_token is not None
    assert tokens.scopes >= {"read", "write"}
    identity = await h.connector.identity.verify_id_token(
        tokens.id_token, access_token=tokens.access_token
    )
    account = h.state.directory.account_by_subdomain("acme")
    assert account is not None
    assert identity.account_id == account.id
    assert identity.region == "us"
    assert identity.api_base_url == BASE
    # The issuer was learned from discovery (settings.issuer is None), once.
    assert h.connector.identity.known_issuer == h.state.config.issuer
    assert h.transport.paths[DISCOVERY_PATH] == 1


async def test_an_eu_user_is_routed_to_the_eu_api(h: Harness) -> None:
    tokens = await exchange(h, EU_ADMIN)
    assert tokens.id_token is not None
    identity = await h.connector.identity.verify_id_token(tokens.id_token)
    assert identity.region == "eu"
    assert identity.api_base_url == BASE + "/eu"
    user = await h.connector.identity.fetch_user(identity.api_base_url, tokens.access_token)
    assert user is not None
    assert user.email == EU_ADMIN
    # The EU token is refused by the US API: fetch_user reports nothing rather than guessing.
    assert await h.connector.identity.fetch_user(BASE, tokens.access_token) is None


async def test_fetch_user_never_sends_the_token_to_an_unconfigured_host(h: Harness) -> None:
    with pytest.raises(ValueError, match="not one of the configured"):
        await h.connector.identity.fetch_user("https://evil.example", "pdus+_0token")
    assert not any("evil" in path for path in h.transport.paths)


async def test_a_code_is_sent_once_and_never_retried_after_a_4xx(h: Harness) -> None:
    code, verifier = await code_and_verifier(h)
    await h.connector.identity.exchange_code(code, verifier)
    with pytest.raises(InvalidGrantError):
        await h.connector.identity.exchange_code(code, verifier)  # replayed code
    assert h.transport.paths["/oauth/token"] == 2
    assert h.token_count("authorization_code", "invalid_grant") == 1


async def test_wrong_client_secret_is_invalid_client(h: Harness) -> None:
    settings = make_settings(client_secret="not-the-secret")
    async with IdentityClient(
        settings, transport=httpx.ASGITransport(app=h.app), clock=h.clock
    ) as identity:
        code, verifier = await code_and_verifier(h)
        with pytest.raises(InvalidClientError):
            await identity.exchange_code(code, verifier)


class FlakyConnect(httpx.AsyncBaseTransport):
    """Refuses the first ``failures`` connections, then passes requests on."""

    def __init__(self, inner: httpx.AsyncBaseTransport, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.attempts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


async def test_a_connect_error_is_retried_once(h: Harness) -> None:
    flaky = FlakyConnect(httpx.ASGITransport(app=h.app), failures=1)
    async with IdentityClient(h.settings, transport=flaky, clock=h.clock) as identity:
        code, verifier = await code_and_verifier(h)
        tokens = await identity.exchange_code(code, verifier)
    assert tokens.access_token
    assert flaky.attempts == 2


async def test_connect_errors_twice_are_a_transport_error(h: Harness) -> None:
    flaky = FlakyConnect(httpx.ASGITransport(app=h.app), failures=5)
    async with IdentityClient(h.settings, transport=flaky, clock=h.clock) as identity:
        with pytest.raises(TransportError):
            await identity.exchange_code("somecode", generate_code_verifier())
    assert flaky.attempts == 2


async def test_a_timeout_is_a_transport_error_and_not_retried(h: Harness) -> None:
    settings = make_settings(http_timeout=0.2, lease_seconds=1.0)
    counting = FlakyConnect(httpx.ASGITransport(app=h.app), failures=0)
    async with IdentityClient(settings, transport=counting, clock=h.clock) as identity:
        await h.fault("timeout", delay=3.0)
        code, verifier = await code_and_verifier(h)
        with pytest.raises(TransportError, match="did not answer in time"):
            await identity.exchange_code(code, verifier)
    assert counting.attempts == 1


def tiny_app(status: int, body: bytes, headers: dict[str, str] | None = None) -> Starlette:
    async def endpoint(request: Request) -> Response:
        return Response(body, status_code=status, headers=headers or {})

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])


async def test_oversized_token_response_fails_closed(h: Harness) -> None:
    app = tiny_app(200, b'{"x": "' + b"a" * 200_000 + b'"}', {"content-type": "application/json"})
    async with IdentityClient(
        h.settings, transport=httpx.ASGITransport(app=app), clock=h.clock
    ) as identity:
        with pytest.raises(TokenResponseError):
            await identity.refresh("pdus+_1token")


async def test_redirects_are_never_followed(h: Harness) -> None:
    counting = FlakyConnect(
        httpx.ASGITransport(app=tiny_app(307, b"", {"location": "https://evil.example/t"})),
        failures=0,
    )
    async with IdentityClient(h.settings, transport=counting, clock=h.clock) as identity:
        with pytest.raises(OAuthError):
            await identity.refresh("pdus+_1token")
    assert counting.attempts == 1


async def test_a_non_json_discovery_document_is_an_error(h: Harness) -> None:
    app = tiny_app(200, b"<html>", {"content-type": "text/html"})
    async with IdentityClient(
        h.settings, transport=httpx.ASGITransport(app=app), clock=h.clock
    ) as identity:
        with pytest.raises(OAuthError):
            await identity.issuer()


# -- id_token verification -------------------------------------------------------------------


async def test_unknown_kid_refetches_the_jwks_once_and_is_rate_limited(h: Harness) -> None:
    first = await exchange(h)
    assert first.id_token is not None
    await h.connector.identity.verify_id_token(first.id_token)
    assert h.transport.paths[JWKS_PATH] == 1

    # PagerDuty rotates its key: the new kid is unknown, so the JWKS is fetched again.
    rotated = await h.control.post("/_emulator/keys/rotate", json={"keep_old": False})
    assert rotated.status_code == 200
    second = await exchange(h)
    assert second.id_token is not None
    await h.connector.identity.verify_id_token(second.id_token)
    assert h.transport.paths[JWKS_PATH] == 2

    # A forged kid right after does not trigger another fetch (no JWKS fetch per request) ...
    forged = sign(claims_of(second.id_token), key=rsa.generate_private_key(65537, 2048), kid="zz")
    with pytest.raises(IdTokenError, match="not in the JWKS"):
        await h.connector.identity.verify_id_token(forged)
    assert h.transport.paths[JWKS_PATH] == 2
    # ... but once the interval has passed, an unknown kid may refetch again.
    h.advance(31)
    with pytest.raises(IdTokenError):
        await h.connector.identity.verify_id_token(forged)
    assert h.transport.paths[JWKS_PATH] == 3


async def test_kid_absent_is_accepted_against_the_jwks(h: Harness) -> None:
    tokens = await exchange(h)
    assert tokens.id_token is not None
    unkeyed = sign(claims_of(tokens.id_token), kid=None)
    identity = await h.connector.identity.verify_id_token(unkeyed)
    assert identity.region == "us"


@pytest.mark.parametrize(
    "change",
    [
        {"iss": "https://identity.pagerduty.com/global/oauth/anonymous/"},
        {"aud": ["https://api.pagerduty.com", "pdauth-demo"]},
        {"aud": [BASE, "another-client"]},
        {"azp": "another-client"},
        {"exp": 1_700_000_000},
        {"iat": 1_900_000_000},
        {"sub": ""},
        {"account_id": None},
    ],
    ids=["iss", "aud-region", "aud-client", "azp", "expired", "iat-future", "sub", "account"],
)
async def test_bad_claims_are_refused(h: Harness, change: dict[str, Any]) -> None:
    tokens = await exchange(h)
    assert tokens.id_token is not None
    claims = claims_of(tokens.id_token)
    claims.update(change)
    claims = {k: v for k, v in claims.items() if v is not None}
    kid = json.loads(base64.urlsafe_b64decode(tokens.id_token.split(".")[0] + "=="))["kid"]
    with pytest.raises(IdTokenError):
        await h.connector.identity.verify_id_token(sign(claims, kid=kid))


async def test_forged_signatures_and_algorithms_are_refused(h: Harness) -> None:
    tokens = await exchange(h)
    assert tokens.id_token is not None
    claims = claims_of(tokens.id_token)
    header = json.loads(base64.urlsafe_b64decode(tokens.id_token.split(".")[0] + "=="))
    kid = header["kid"]
    identity = h.connector.identity

    # Another key under the right kid (invalid-sig-rs256).
    with pytest.raises(IdTokenError, match="does not verify"):
        await identity.verify_id_token(
            sign(claims, key=rsa.generate_private_key(65537, 2048), kid=kid)
        )
    # alg none, with and without a signature part (idtoken-sig-none).
    unsigned = b64({"alg": "none", "kid": kid}) + "." + b64(claims)
    for value in (unsigned + ".", unsigned + ".c2ln"):
        with pytest.raises(IdTokenError):
            await identity.verify_id_token(value)
    # HS256 keyed with the public key (invalid-sig-hs256, the classic confusion attack).
    # (joserfc refuses to build one, so it is made by hand here.)
    public_pem = RSAKey.import_key(signing_key()).as_pem(private=False)
    signing_input = b64({"alg": "HS256", "kid": kid}) + "." + b64(claims)
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    hs = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    with pytest.raises(IdTokenError, match="RS256"):
        await identity.verify_id_token(hs)
    # A tampered payload under the genuine signature.
    head, _, signature = tokens.id_token.split(".")
    tampered = head + "." + b64({**claims, "account_id": "PEVIL01"}) + "." + signature
    with pytest.raises(IdTokenError):
        await identity.verify_id_token(tampered)
    # Garbage.
    for value in ("", "a.b", "a.b.c.d", "!!.!!.!!", "x" * 20_000):
        with pytest.raises(IdTokenError):
            await identity.verify_id_token(value)


async def test_at_hash_must_match_the_access_token(h: Harness) -> None:
    tokens = await exchange(h)
    assert tokens.id_token is not None
    other = await exchange(h)
    with pytest.raises(IdTokenError, match="at_hash"):
        await h.connector.identity.verify_id_token(tokens.id_token, access_token=other.access_token)


async def test_a_configured_issuer_skips_discovery(tmp_path: os.PathLike[str]) -> None:
    db = "sqlite:///" + os.path.join(os.fspath(tmp_path), "t.db")
    async with harness(db, issuer="https://app.pagerduty.com/global/oauth/anonymous") as h:
        tokens = await exchange(h)
        assert tokens.id_token is not None
        await h.connector.identity.verify_id_token(tokens.id_token)
        assert h.transport.paths[DISCOVERY_PATH] == 0
    async with harness(db, issuer="https://identity.pagerduty.com/global/oauth/anonymous") as h:
        tokens = await exchange(h)
        assert tokens.id_token is not None
        with pytest.raises(IdTokenError):
            await h.connector.identity.verify_id_token(tokens.id_token)


async def test_the_client_it_made_is_closed_and_a_given_one_is_not() -> None:
    given = httpx.AsyncClient()
    async with IdentityClient(make_settings(), http=given, clock=FrozenClock()):
        pass
    assert not given.is_closed
    await given.aclose()


async def test_kid_absent_with_several_keys_tries_each(h: Harness) -> None:
    # Rotate before the first fetch, keeping the old key: the JWKS then holds two keys.
    rotated = await h.control.post("/_emulator/keys/rotate", json={"keep_old": True})
    assert len(rotated.json()["kids"]) == 2
    tokens = await exchange(h)
    assert tokens.id_token is not None
    signed_by_old_key = sign(claims_of(tokens.id_token), kid=None)
    identity = await h.connector.identity.verify_id_token(signed_by_old_key)
    assert identity.region == "us"


async def test_revoke_needs_an_endpoint_and_app_tokens_need_a_secret(h: Harness) -> None:
    with pytest.raises(OAuthError, match="no revocation endpoint"):
        await h.connector.identity.revoke("pdus+_1token", "refresh_token")
    public = make_settings(client_secret=None)
    async with IdentityClient(public, transport=httpx.ASGITransport(app=h.app)) as identity:
        with pytest.raises(ConfigurationError, match="PDAUTH_CLIENT_SECRET"):
            await identity.client_credentials(frozenset({"as_account-us.acme", "users.read"}))


# -- client authentication: HTTP Basic (RFC 6749 §2.3.1) ---------------------------------------


class Recorder:
    """Keeps the token endpoint's requests as the emulator received them (headers and body)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response | None:
        if request.url.path in ("/oauth/token", "/oauth/revoke"):
            self.requests.append(request)
        return None  # let the emulator answer


async def test_basic_authentication_connects_refreshes_and_revokes(
    tmp_path: os.PathLike[str],
) -> None:
    db = "sqlite:///" + os.path.join(os.fspath(tmp_path), "t.db")
    async with harness(
        db,
        config=EmulatorConfig(revocation_endpoint=True),
        token_auth_method="client_secret_basic",
        revoke_url=BASE + "/oauth/revoke",
    ) as h:
        recorder = Recorder()
        h.transport.intercept = recorder
        tokens = await exchange(h)
        assert tokens.refresh_token is not None
        refreshed = await h.connector.identity.refresh(tokens.refresh_token)
        assert refreshed.refresh_token is not None
        await h.connector.identity.revoke(refreshed.refresh_token, "refresh_token")
        assert h.token_count("authorization_code") == 1
        assert h.token_count("refresh_token") == 1
    expected = "Basic " + base64.b64encode(f"{DEMO_ID}:{DEMO_SECRET}".encode()).decode()
    assert [r.url.path for r in recorder.requests] == ["/oauth/token"] * 2 + ["/oauth/revoke"]
    for request in recorder.requests:
        assert request.headers["authorization"] == expected
        form = dict(parse_qsl(request.content.decode()))
        assert "client_secret" not in form
        assert "client_id" not in form


async def test_post_authentication_sends_no_authorization_header(h: Harness) -> None:
    recorder = Recorder()
    h.transport.intercept = recorder
    await exchange(h)
    (request,) = recorder.requests
    assert "authorization" not in request.headers
    assert dict(parse_qsl(request.content.decode()))["client_secret"] == DEMO_SECRET


async def test_a_wrong_secret_over_basic_is_invalid_client(h: Harness) -> None:
    settings = make_settings(
        client_secret="not-the-secret", token_auth_method="client_secret_basic"
    )
    async with IdentityClient(
        settings, transport=httpx.ASGITransport(app=h.app), clock=h.clock
    ) as identity:
        code, verifier = await code_and_verifier(h)
        with pytest.raises(InvalidClientError):
            await identity.exchange_code(code, verifier)


# -- discovery URL and ensure_ready ------------------------------------------------------------


async def test_ensure_ready_learns_the_issuer_and_keys_once(h: Harness) -> None:
    identity = h.connector.identity
    await identity.ensure_ready()
    await identity.ensure_ready()
    assert identity.known_issuer == h.state.config.issuer
    assert h.transport.paths[DISCOVERY_PATH] == 1
    assert h.transport.paths[JWKS_PATH] == 1
    # What it cached is what verification uses: no further fetch for a genuine id_token.
    tokens = await exchange(h)
    assert tokens.id_token is not None
    await identity.verify_id_token(tokens.id_token)
    assert h.transport.paths[DISCOVERY_PATH] == 1
    assert h.transport.paths[JWKS_PATH] == 1


async def test_a_configured_discovery_url_is_the_one_fetched(h: Harness) -> None:
    settings = make_settings(discovery_url=BASE + DISCOVERY_PATH, identity_url=BASE + "/x")
    async with IdentityClient(settings, transport=h.transport, clock=h.clock) as identity:
        await identity.issuer()
    assert h.transport.paths[DISCOVERY_PATH] == 1
    assert h.transport.paths["/x" + DISCOVERY_PATH] == 0


def not_found_at(*paths: str) -> Intercept:
    """A network hook: nothing at ``paths`` (404, as a server without that document answers);
    every other request goes on to the emulator."""

    async def intercept(request: httpx.Request) -> httpx.Response | None:
        if request.url.path in paths:
            return httpx.Response(404, json={"error": "not_found"})
        return None

    return intercept


async def test_a_missing_discovery_document_is_a_configuration_error(h: Harness) -> None:
    url = BASE + "/realms/pd/.well-known/openid-configuration"
    h.transport.intercept = not_found_at("/realms/pd/.well-known/openid-configuration")
    settings = make_settings(discovery_url=url)
    async with IdentityClient(settings, transport=h.transport, clock=h.clock) as identity:
        for call in (identity.ensure_ready, identity.issuer):
            with pytest.raises(ConfigurationError) as caught:
                await call()
            assert url in str(caught.value)
            assert "PDAUTH_DISCOVERY_URL" in str(caught.value)
            assert "404" in str(caught.value)
    # Once the operator points PDAUTH_DISCOVERY_URL at the document, the client gets ready.
    h.transport.intercept = None
    fixed = make_settings(discovery_url=BASE + DISCOVERY_PATH)
    async with IdentityClient(fixed, transport=h.transport, clock=h.clock) as identity:
        await identity.ensure_ready()
        assert identity.known_issuer == h.state.config.issuer
    assert h.transport.paths["/realms/pd/.well-known/openid-configuration"] == 2


async def test_pagerdutys_default_discovery_path_missing_is_named_too(h: Harness) -> None:
    h.transport.intercept = not_found_at(DISCOVERY_PATH)
    with pytest.raises(ConfigurationError, match="PDAUTH_DISCOVERY_URL") as caught:
        await h.connector.identity.ensure_ready()
    assert BASE + DISCOVERY_PATH in str(caught.value)


async def test_a_missing_jwks_is_a_configuration_error(h: Harness) -> None:
    h.transport.intercept = not_found_at(JWKS_PATH)
    with pytest.raises(ConfigurationError, match="PDAUTH_JWKS_URL") as caught:
        await h.connector.identity.ensure_ready()
    assert BASE + JWKS_PATH in str(caught.value)


async def test_a_configured_issuer_needs_no_discovery_to_be_ready(h: Harness) -> None:
    settings = make_settings(
        issuer=h.state.config.issuer, discovery_url=BASE + "/realms/pd/.well-known/x"
    )
    async with IdentityClient(settings, transport=h.transport, clock=h.clock) as identity:
        await identity.ensure_ready()
    assert h.transport.paths["/realms/pd/.well-known/x"] == 0


@pytest.mark.parametrize("status", [500, 503, 403])
async def test_other_discovery_failures_stay_server_errors(h: Harness, status: int) -> None:
    # Only "nothing there" is the operator's to fix; a failing server is not a configuration
    # problem (and must not be reported as one).
    app = tiny_app(status, b"{}", {"content-type": "application/json"})
    async with IdentityClient(
        h.settings, transport=httpx.ASGITransport(app=app), clock=h.clock
    ) as identity:
        with pytest.raises(OAuthError, match="server_error"):
            await identity.ensure_ready()


async def test_users_me_404_is_still_just_no_user(h: Harness) -> None:
    app = tiny_app(404, b"{}", {"content-type": "application/json"})
    async with IdentityClient(
        h.settings, transport=httpx.ASGITransport(app=app), clock=h.clock
    ) as identity:
        assert await identity.fetch_user(BASE, "pdus+_0token") is None
