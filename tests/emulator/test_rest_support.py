"""Shared helpers for the emulator's REST tests: the response checker, app and client builders,
and token helpers that go through the real OAuth flow (control-API consent, then
``POST /oauth/token``). No tests live here.

``SchemaChecker`` checks every REST response a test receives. Always: JSON bodies carry a JSON
content type, errors carry PagerDuty's ``{"error": {"message": ...}}`` envelope, empty answers
claim no JSON. When PagerDuty's official OpenAPI document is available (tests/schema_lookup.py
says where it is looked for) it also validates each body against the response definition of
that operation (errors without a definition are checked against its generic error envelope);
without the document, the behaviour tests still run and only that validation is left out.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import secrets
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.applications import Starlette

from pdauth.emulator.app import create_app
from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.state import EmulatorState
from tests.emulator_kit import EMULATOR_BASE, EMULATOR_START, make_emulator_state
from tests.schema_lookup import ENV_VAR, find_schema, require_schema

__all__ = [
    "ADMIN_EU",
    "ADMIN_US",
    "DEMO_CLIENT_ID",
    "DEMO_REDIRECT",
    "DEMO_SECRET",
    "START",
    "SchemaChecker",
    "api_key",
    "app_token",
    "bearer",
    "conformance_checker",
    "emulator",
    "make_state",
    "schema_checker",
    "scoped_user_token",
    "user_token",
]

ADMIN_US = "admin@acme.example"
ADMIN_EU = "admin@eurocorp.example"
DEMO_CLIENT_ID = "pdauth-demo"
DEMO_SECRET = "pdauth-demo-secret"
DEMO_REDIRECT = "http://127.0.0.1:8000/callback"
START = EMULATOR_START  # a fixed emulator clock start (2027-01-15) keeps seeded data stable
BASE = EMULATOR_BASE

# The REST operations the emulator serves: (method, path template) as in the official schema.
OPERATIONS: tuple[tuple[str, str], ...] = (
    ("GET", "/users/me"),
    ("GET", "/users"),
    ("GET", "/users/{id}"),
    ("GET", "/services"),
    ("GET", "/services/{id}"),
    ("GET", "/incidents"),
    ("POST", "/incidents"),
    ("GET", "/abilities"),
    ("GET", "/abilities/{id}"),
    ("GET", "/audit/records"),
    ("DELETE", "/oauth_delegations"),
)
_NOT_REST = re.compile(r"/(oauth|_emulator|global)(/|$)")


def _adapt(node: Any) -> Any:
    """OpenAPI 3.0 schema dialect → JSON Schema 2020-12 (``nullable``, boolean exclusives)."""
    if isinstance(node, list):
        return [_adapt(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _adapt(value) for key, value in node.items()}
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        flag = out.get(exclusive)
        if isinstance(flag, bool):
            del out[exclusive]
            if flag and bound in out:
                out[exclusive] = out.pop(bound)
    if out.pop("nullable", False) is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        if any(k in out for k in ("$ref", "allOf", "anyOf", "oneOf")):
            out = {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def _registry(path: str) -> tuple[Registry, dict[str, Any]]:
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    adapted = _adapt(document)
    resource = Resource.from_contents(adapted, default_specification=DRAFT202012)
    return Registry().with_resource("urn:pagerduty-openapi", resource), adapted


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class SchemaChecker:
    """Checks REST responses (against the official schema when given one); counts what it saw.

    ``path=None`` is the checker without PagerDuty's document: the envelope checks only.
    """

    GENERIC_ERROR = "#/components/responses/Conflict/content/application~1json/schema"

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.registry: Registry | None = None
        self.document: dict[str, Any] = {}
        if path is not None:
            if not path.is_file():
                pytest.fail(
                    f"PagerDuty's OpenAPI schema is missing at {path}: run `make schema` or "
                    f"set {ENV_VAR} to the file.",
                    pytrace=False,
                )
            self.registry, self.document = _registry(str(path))
        self.checked: Counter[tuple[str, str, int]] = Counter()
        self._validators: dict[str, Draft202012Validator] = {}
        self._patterns = [
            (method, template, re.compile(re.escape(template).replace(r"\{id\}", "[^/]+") + "/?"))
            for method, template in OPERATIONS
        ]

    def _validator(self, ref: str) -> Draft202012Validator:
        if ref not in self._validators:
            schema = {"$ref": "urn:pagerduty-openapi" + ref}
            self._validators[ref] = Draft202012Validator(schema, registry=self.registry)
        return self._validators[ref]

    def template(self, method: str, path: str) -> str | None:
        for op_method, template, pattern in self._patterns:
            if op_method == method and pattern.fullmatch(path):
                return template
        return None

    def response_ref(self, method: str, template: str | None, status: int) -> str:
        """The JSON pointer of the body schema for this status (generic error as fallback)."""
        if template is None:
            return self.GENERIC_ERROR
        operation = self.document["paths"][template][method.lower()]
        response = operation["responses"].get(str(status))
        if response is None:
            return self.GENERIC_ERROR
        if "$ref" in response:
            return str(response["$ref"]) + "/content/application~1json/schema"
        base = _pointer("paths", template, method.lower(), "responses", str(status))
        return f"#/{base}/content/application~1json/schema"

    def check(self, method: str, path: str, status: int, body: bytes, content_type: str) -> None:
        """Assert that a REST response body conforms; empty bodies only where allowed."""
        template = self.template(method, path)
        if status in (204, 502) or (status == 429 and not body):
            # No content, the "drop" fault, PagerDuty's header-less 429: no body, no JSON claimed.
            assert body == b""
            assert "json" not in content_type
            self.checked[(method, template or "(unmatched)", status)] += 1
            return
        assert content_type.startswith("application/json"), (status, content_type)
        data = json.loads(body)
        if self.registry is not None:
            ref = self.response_ref(method, template, status)
            errors = sorted(self._validator(ref).iter_errors(data), key=lambda e: list(e.path))
            assert not errors, f"{method} {path} {status}: " + "; ".join(
                f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]
            )
        if status >= 400:
            assert isinstance(data.get("error"), dict), data
            assert "message" in data["error"], data
        self.checked[(method, template or "(unmatched)", status)] += 1

    def hook(self, prefix: str = "") -> Callable[[httpx.Response], Any]:
        """An httpx async response hook that checks every REST response."""

        async def on_response(response: httpx.Response) -> None:
            await response.aread()
            self._check_response(response, prefix)

        return on_response

    def sync_hook(self, prefix: str = "") -> Callable[[Any], None]:
        """The same check for a synchronous client (httpx or httpx2 responses)."""

        def on_response(response: Any) -> None:
            response.read()
            self._check_response(response, prefix)

        return on_response

    def _check_response(self, response: Any, prefix: str) -> None:
        path = response.request.url.path
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :]
        if path.startswith("/eu/") or path == "/eu":
            path = path[3:] or "/"
        if _NOT_REST.match(path):
            return
        self.check(
            response.request.method,
            path,
            response.status_code,
            response.content,
            response.headers.get("content-type", ""),
        )


def make_state(config: EmulatorConfig | None = None, *, start: float = START) -> EmulatorState:
    """A fresh emulator state with a frozen clock (only ``clock.advance`` moves it)."""
    return make_emulator_state(config, start=start)


def schema_checker() -> SchemaChecker:
    """A checker with the official schema when it is available, the envelope checks otherwise."""
    return SchemaChecker(find_schema())


def conformance_checker() -> SchemaChecker:
    """A checker with the official schema; skips the test (one reason) when it is absent."""
    return SchemaChecker(require_schema())


def emulator(
    checker: SchemaChecker, config: EmulatorConfig | None = None
) -> tuple[Starlette, httpx.AsyncClient]:
    """An in-process emulator and a client whose every REST response is schema-checked."""
    app = create_app(state=make_state(config))
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=BASE,
        event_hooks={"response": [checker.hook()]},
    )
    return app, client


def api_key(app: Starlette, account_id: str = "PACME01") -> str:
    state: EmulatorState = app.state.emulator
    return state.directory.api_keys[account_id].token


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


async def _code_flow(
    client: httpx.AsyncClient,
    *,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    scope: str,
    user: str,
) -> dict[str, Any]:
    verifier, challenge = _pkce()
    consent = await client.post(
        "/_emulator/authorize",
        json={
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": scope,
            "state": "s" * 32,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "user": user,
        },
    )
    assert consent.status_code == 200, consent.text
    query = parse_qs(urlsplit(consent.json()["redirect"]).query)
    assert "code" in query, query
    token = await client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": client_id,
            "client_secret": client_secret,
            "code": query["code"][0],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
    )
    assert token.status_code == 200, token.text
    body: dict[str, Any] = token.json()
    return body


async def user_token(
    client: httpx.AsyncClient, *, scope: str = "read", user: str = ADMIN_US
) -> str:
    """A Classic user token of the demo app (``read`` or ``write``), via the real flow."""
    body = await _code_flow(
        client,
        client_id=DEMO_CLIENT_ID,
        client_secret=DEMO_SECRET,
        redirect_uri=DEMO_REDIRECT,
        scope=scope,
        user=user,
    )
    return str(body["access_token"])


async def _scoped_app(
    client: httpx.AsyncClient, scopes: list[str], account: str
) -> tuple[str, str]:
    registered = await client.post(
        "/_emulator/apps",
        json={
            "kind": "scoped",
            "client_type": "confidential",
            "scopes": scopes,
            "redirect_uris": [DEMO_REDIRECT],
            "account": account,
        },
    )
    assert registered.status_code == 201, registered.text
    return str(registered.json()["client_id"]), str(registered.json()["client_secret"])


async def scoped_user_token(
    client: httpx.AsyncClient, scopes: list[str], *, user: str = ADMIN_US, account: str = "acme"
) -> str:
    """A Scoped OAuth user token holding ``scopes`` (a fresh private app on ``account``)."""
    client_id, secret = await _scoped_app(client, scopes, account)
    body = await _code_flow(
        client,
        client_id=client_id,
        client_secret=secret,
        redirect_uri=DEMO_REDIRECT,
        scope=" ".join(scopes),
        user=user,
    )
    return str(body["access_token"])


async def app_token(client: httpx.AsyncClient, scopes: list[str], *, account: str = "acme") -> str:
    """A Scoped app token (client_credentials, no user) for ``account``."""
    client_id, secret = await _scoped_app(client, scopes, account)
    region = "eu" if account == "eurocorp" else "us"
    token = await client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "scope": " ".join([f"as_account-{region}.{account}", *scopes]),
        },
    )
    assert token.status_code == 200, token.text
    return str(token.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.pagerduty+json;version=2",
    }
