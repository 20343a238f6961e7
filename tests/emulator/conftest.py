"""The ``flow`` fixture of the emulator's own tests: the OAuth dance against the app, through
the control API the way a browser would through the consent page.

Also ``tls``: a certificate for the real-socket tests (HTTPS emulator, HTTPS receivers).

The emulator itself (``emulator_config``, ``emulator_state``, ``emulator_app``,
``emulator_client``) comes from the root conftest: a fresh emulator per test, reached
in-process, on a frozen clock (moved only by ``advance``), so expiry tests never sleep.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import ssl
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trustme

from pdauth.emulator.state import EmulatorState
from tests.emulator_kit import EMULATOR_START

START = EMULATOR_START
DEMO_ID = "pdauth-demo"
DEMO_SECRET = "pdauth-demo-secret"
DEMO_REDIRECT = "http://127.0.0.1:8000/callback"
US_ADMIN = "admin@acme.example"
EU_ADMIN = "admin@eurocorp.example"
ACCEPT = "application/vnd.pagerduty+json;version=2"


def pkce_pair() -> tuple[str, str]:
    """A fresh (verifier, S256 challenge), computed independently of any pdauth code."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


@dataclass
class Flow:
    """The OAuth dance for one app against the in-process emulator."""

    client: httpx.AsyncClient
    state: EmulatorState
    client_id: str = DEMO_ID
    client_secret: str | None = DEMO_SECRET
    redirect_uri: str = DEMO_REDIRECT

    # Helpers and constants reached through the fixture (tests do not import conftest).
    pkce = staticmethod(pkce_pair)
    query = staticmethod(query_of)
    start = START
    us_admin = US_ADMIN
    eu_admin = EU_ADMIN
    accept = ACCEPT

    def for_app(self, client_id: str, client_secret: str | None, redirect_uri: str) -> Flow:
        """The same helpers for another registered app."""
        return Flow(self.client, self.state, client_id, client_secret, redirect_uri)

    async def authorize(self, **params: Any) -> httpx.Response:
        """POST /_emulator/authorize with the app's defaults, overridable (None drops one)."""
        body: dict[str, Any] = {
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "response_type": "code",
            "scope": "read write",
            "user": US_ADMIN,
            "decision": "approve",
        }
        body.update(params)
        return await self.client.post(
            "/_emulator/authorize", json={k: v for k, v in body.items() if v is not None}
        )

    async def code(self, challenge: str | None = None, **params: Any) -> str:
        if challenge is not None:
            params.update(code_challenge=challenge, code_challenge_method="S256")
        response = await self.authorize(**params)
        assert response.status_code == 200, response.text
        query = query_of(response.json()["redirect"])
        assert "code" in query, query
        return query["code"]

    def form(self, **fields: str | None) -> dict[str, str]:
        base: dict[str, str | None] = {"client_id": self.client_id}
        if self.client_secret is not None:
            base["client_secret"] = self.client_secret
        base.update(fields)
        return {k: v for k, v in base.items() if v is not None}

    async def token(self, **fields: str | None) -> httpx.Response:
        return await self.client.post("/oauth/token", data=self.form(**fields))

    async def exchange(
        self, code: str, verifier: str | None = None, **fields: str | None
    ) -> httpx.Response:
        form: dict[str, str | None] = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": verifier,
        }
        form.update(fields)
        return await self.token(**form)

    async def refresh(self, refresh_token: str, **fields: str | None) -> httpx.Response:
        return await self.token(grant_type="refresh_token", refresh_token=refresh_token, **fields)

    async def tokens(self, **params: Any) -> dict[str, Any]:
        """Authorize (with PKCE) and exchange; the token response body."""
        verifier, challenge = pkce_pair()
        code = await self.code(challenge, **params)
        response = await self.exchange(code, verifier)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def me(self, access_token: str, prefix: str = "") -> httpx.Response:
        return await self.client.get(
            f"{prefix}/users/me",
            headers={"Authorization": f"Bearer {access_token}", "Accept": ACCEPT},
        )


@pytest.fixture
def flow(emulator_client: httpx.AsyncClient, emulator_state: EmulatorState) -> Flow:
    return Flow(client=emulator_client, state=emulator_state)


@dataclass(frozen=True)
class Tls:
    """A server certificate for 127.0.0.1 and a client context that trusts its CA."""

    context: ssl.SSLContext
    certfile: Path
    keyfile: Path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    certfile, keyfile = folder / "server.crt", folder / "server.key"
    certfile.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(keyfile))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return Tls(context, certfile, keyfile)


class FormReader(HTMLParser):
    """Collects the consent form: action, hidden fields, select options, checkboxes (ticked or
    not) and submit buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.hidden: dict[str, str] = {}
        self.checkboxes: dict[str, bool] = {}
        self.options: list[str] = []
        self.selected: str | None = None
        self.buttons: dict[str, str] = {}
        self.labels: set[str] = set()
        self.select_id = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action = a.get("action", "")
        elif tag == "input" and a.get("type") == "hidden":
            self.hidden[a["name"]] = a.get("value", "")
        elif tag == "input" and a.get("type") == "checkbox":
            self.checkboxes[a["name"]] = "checked" in a
        elif tag == "select":
            self.select_id = a.get("id", "")
        elif tag == "option":
            self.options.append(a["value"])
            if "selected" in a:
                self.selected = a["value"]
        elif tag == "button":
            self.buttons[a.get("value", "")] = a.get("name", "")
        elif tag == "label":
            self.labels.add(a.get("for", ""))
