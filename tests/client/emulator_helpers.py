"""Helpers for testing the client against the emulator: credentials, counters, a refreshing
token source that really refreshes at the emulator's token endpoint."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from starlette.applications import Starlette

from pdauth.emulator.app import create_app
from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.state import EmulatorClock, EmulatorState
from pdauth.errors import NeedsReauthError
from tests.emulator_kit import make_emulator_state

BASE = "http://127.0.0.1"  # any loopback URL: ASGITransport never opens a socket
DEMO_ID = "pdauth-demo"
DEMO_SECRET = "pdauth-demo-secret"
DEMO_REDIRECT = "http://127.0.0.1:8000/callback"
US_ADMIN = "admin@acme.example"


@dataclass
class Emulator:
    """An in-process emulator and what tests need from it."""

    app: Starlette

    @classmethod
    def create(cls, **config: Any) -> Emulator:
        # The system clock, as these tests always had; the signing key is the run's shared one.
        return cls(
            create_app(state=make_emulator_state(EmulatorConfig(**config), clock=EmulatorClock()))
        )

    @property
    def state(self) -> EmulatorState:
        state: EmulatorState = self.app.state.emulator
        return state

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self.app)

    def http(self) -> httpx.AsyncClient:
        """A plain httpx client on the emulator (for setup, not for the client under test)."""
        return httpx.AsyncClient(transport=self.transport(), base_url=BASE)

    def api_key(self, account_id: str = "PACME01") -> str:
        return self.state.directory.api_keys[account_id].token

    def stats(self) -> dict[str, Any]:
        return self.state.stats.snapshot()

    def rest(self, route: str, status: int | None = None) -> int:
        """How many REST requests the emulator served for ``"GET /users"`` (with ``status``)."""
        counts: dict[str, int] = self.stats()["rest_requests"].get(route, {})
        if status is None:
            return sum(counts.values())
        return counts.get(str(status), 0)

    def rate_limited(self) -> dict[str, int]:
        limited: dict[str, int] = self.stats()["rate_limited"]
        return limited

    async def user_tokens(
        self,
        *,
        scope: str = "read write",
        client_id: str = DEMO_ID,
        client_secret: str = DEMO_SECRET,
        redirect_uri: str = DEMO_REDIRECT,
        user: str = US_ADMIN,
    ) -> dict[str, Any]:
        """Approve on the consent page (through the control API) and exchange the code."""
        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        async with self.http() as http:
            consent = await http.post(
                "/_emulator/authorize",
                json={
                    "client_id": client_id,
                    "redirect_uri": redirect_uri,
                    "response_type": "code",
                    "scope": scope,
                    "user": user,
                    "code_challenge": challenge,
                    "code_challenge_method": "S256",
                },
            )
            assert consent.status_code == 200, consent.text
            code = parse_qs(urlsplit(consent.json()["redirect"]).query)["code"][0]
            token = await http.post(
                "/oauth/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "client_id": client_id,
                    "client_secret": client_secret,
                    "code_verifier": verifier,
                },
            )
            assert token.status_code == 200, token.text
            body: dict[str, Any] = token.json()
            return body

    async def register_scoped_app(self, scopes: list[str]) -> tuple[str, str]:
        async with self.http() as http:
            response = await http.post(
                "/_emulator/apps",
                json={
                    "client_id": "scoped-test",
                    "kind": "scoped",
                    "scopes": scopes,
                    "client_secret": "scoped-test-secret",
                    "redirect_uris": [DEMO_REDIRECT],
                },
            )
            assert response.status_code == 201, response.text
        return "scoped-test", "scoped-test-secret"

    async def fault(self, kind: str, count: int = 1, delay: float = 0.0) -> None:
        self.state.faults.add("rest", kind, count, delay)


@dataclass
class RefreshingTokens:
    """A TokenSource that refreshes for real at the emulator's ``/oauth/token`` and counts."""

    emulator: Emulator
    access: str = field(repr=False)
    refresh_token: str = field(repr=False)
    pacing_key: str = "test-connection"
    refreshes: int = 0

    async def authorization(self) -> str:
        return f"Bearer {self.access}"

    async def refresh(self, rejected: str) -> str:
        if rejected != f"Bearer {self.access}":
            return f"Bearer {self.access}"  # someone refreshed in the meantime
        self.refreshes += 1
        async with self.emulator.http() as http:
            response = await http.post(
                "/oauth/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": self.refresh_token,
                    "client_id": DEMO_ID,
                    "client_secret": DEMO_SECRET,
                },
            )
        if response.status_code != 200:
            raise NeedsReauthError("test-connection", "the refresh was refused")
        body = response.json()
        self.access, self.refresh_token = body["access_token"], body["refresh_token"]
        return f"Bearer {self.access}"
