"""PagerDuty's official Python client (``pagerduty`` v7) works unchanged against the emulator
served over TLS on a real socket: the PKCE code exchange and refresh with ``OAuthTokenClient``,
then ``RestApiV2Client`` paginating users, reading ``users/me``, listing services and walking the
audit-record cursor — in both regions. The client refuses non-https base URLs, so the emulator
gets a certificate from a throwaway ``trustme`` CA, and the client trusts that CA through the
``verify=`` argument its HTTP client (httpx2) accepts; no client code is changed. Every REST
response it receives is also checked against the official schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import httpx
import pagerduty
import pytest

from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.server import EmulatorServer

from .conftest import Tls
from .test_rest_support import (
    ADMIN_EU,
    ADMIN_US,
    DEMO_CLIENT_ID,
    DEMO_REDIRECT,
    DEMO_SECRET,
    SchemaChecker,
    make_state,
    schema_checker,
)


@pytest.fixture(scope="module")
def server(tls: Tls) -> Iterator[EmulatorServer]:
    state = make_state(EmulatorConfig())
    with EmulatorServer(state=state, certfile=tls.certfile, keyfile=tls.keyfile) as srv:
        yield srv


@pytest.fixture(scope="module")
def checker() -> SchemaChecker:
    return schema_checker()


def consent(server: EmulatorServer, tls: Tls, authorize_url: str, user: str) -> str:
    """What the user does in the browser: approve on the consent page (via the control API)."""
    params = dict(parse_qsl(urlsplit(authorize_url).query))
    with httpx.Client(base_url=server.url, verify=tls.context) as browser:
        answer = browser.post("/_emulator/authorize", json={**params, "user": user})
    assert answer.status_code == 200, answer.text
    redirect: str = answer.json()["redirect"]
    return parse_qs(urlsplit(redirect).query)["code"][0]


def pkce_login(
    server: EmulatorServer, tls: Tls, oauth: pagerduty.OAuthTokenClient, user: str
) -> dict[str, Any]:
    verifier, challenge = oauth.generate_s256_pkce_params()
    # pagerduty 7.2.0's get_pkce_authorize_url reads a missing `self.client_id` (AttributeError),
    # so the PKCE URL is its plain authorize_url plus the two PKCE parameters.
    url = (
        oauth.authorize_url("read", DEMO_REDIRECT)
        + "&"
        + urlencode({"code_challenge": challenge, "code_challenge_method": "S256"})
    )
    assert url.startswith(server.url + "/oauth/authorize?")
    code = consent(server, tls, url, user)
    token: dict[str, Any] = oauth.get_new_token_from_code_with_pkce(
        code, "read", DEMO_REDIRECT, verifier
    )
    return token


def rest_client(
    server_url: str, token: str, tls: Tls, checker: SchemaChecker, auth_type: str = "bearer"
) -> pagerduty.RestApiV2Client:
    return pagerduty.RestApiV2Client(
        token,
        auth_type=auth_type,
        base_url=server_url,
        verify=tls.context,
        event_hooks={"response": [checker.sync_hook()]},
    )


def test_refuses_plain_http() -> None:
    with pytest.raises(pagerduty.UrlError):
        pagerduty.RestApiV2Client("x", auth_type="bearer", base_url="http://127.0.0.1:1")


def test_pkce_exchange_rest_calls_and_refresh(
    server: EmulatorServer, tls: Tls, checker: SchemaChecker
) -> None:
    with pagerduty.OAuthTokenClient(
        DEMO_SECRET, DEMO_CLIENT_ID, base_url=server.url, verify=tls.context
    ) as oauth:
        token = pkce_login(server, tls, oauth, ADMIN_US)
        assert token["token_type"] == "bearer"
        assert token["scope"].split() == ["openid", "read"]
        assert token["expiration_date"]
        assert token["refresh_token"]

        with rest_client(server.url, token["access_token"], tls, checker) as api:
            users = list(api.iter_all("users"))
            assert len(users) == len({u["id"] for u in users}) == 250
            assert api.rget("users/me")["email"] == ADMIN_US
            services = api.list_all("services")
            assert len(services) == 15
            assert api.rget(f"services/{services[0]['id']}")["name"] == services[0]["name"]
            # iter_cursor directly: pagerduty 7.2.0's iter_all is a generator whose
            # `return self.iter_cursor(...)` delegation yields nothing for cursor paths.
            records = list(api.iter_cursor("audit/records"))
            assert len(records) == len({r["id"] for r in records}) == 400
            assert api.account_has_ability("teams")

        refreshed = oauth.get_refreshed_token(token["refresh_token"])
        assert refreshed["access_token"] != token["access_token"]
        assert refreshed["refresh_token"] != token["refresh_token"]
        with rest_client(server.url, refreshed["access_token"], tls, checker) as api:
            assert api.rget("users/me")["email"] == ADMIN_US
    assert checker.checked[("GET", "/users", 200)] >= 3


def test_eu_account_on_the_eu_base(
    server: EmulatorServer, tls: Tls, checker: SchemaChecker
) -> None:
    with pagerduty.OAuthTokenClient(
        DEMO_SECRET, DEMO_CLIENT_ID, base_url=server.url, verify=tls.context
    ) as oauth:
        token = pkce_login(server, tls, oauth, ADMIN_EU)
    with rest_client(server.eu_api_url, token["access_token"], tls, checker) as api:
        me = api.rget("users/me")
        assert me["email"] == ADMIN_EU
        assert me["self"].startswith(server.eu_api_url + "/users/")
        assert len(list(api.iter_all("users"))) == 20
    with (
        rest_client(server.url, token["access_token"], tls, checker) as wrong_region,
        pytest.raises(pagerduty.HttpError) as refused,
    ):
        wrong_region.rget("users/me")
    assert refused.value.response is not None
    assert refused.value.response.status_code == 401


def test_account_api_key(server: EmulatorServer, tls: Tls, checker: SchemaChecker) -> None:
    key = server.state.directory.api_keys["PACME01"].token
    with rest_client(server.url, key, tls, checker, auth_type="token") as api:
        assert len(api.list_all("services")) == 15
        incidents = list(api.iter_all("incidents", params={"date_range": "all"}))
        assert len(incidents) == 300
