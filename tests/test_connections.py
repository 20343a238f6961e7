"""The Connector facade: the full connect flow against the emulator, and each way it must fail.

"No outbound call" is checked on the test transport's request counter; "nothing stored" on the
database. The emulator's counters show whether a code was ever exchanged.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from hypothesis import given, settings, strategies as st

from pdauth.connections import (
    Connection,
    Connector,
    LastError,
    revocation_binding,
    safe_return_to,
)
from pdauth.errors import (
    AuthorizationDeniedError,
    BindingMismatchError,
    CallbackError,
    ConfigurationError,
    ConnectionNotFoundError,
    FlowExpiredError,
    IdTokenError,
    InsufficientScopeError,
    NeedsReauthError,
    UnknownStateError,
)
from pdauth.store import ConnectionRow
from tests.workers.harness import (
    BASE,
    EU_ADMIN,
    US_ADMIN,
    Harness,
    harness,
    make_settings,
    revocation_harness,
    sqlite_url,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def h(tmp_path: os.PathLike[str]) -> AsyncIterator[Harness]:
    async with harness(sqlite_url(tmp_path)) as h:
        yield h


@pytest.fixture
async def hr(tmp_path: os.PathLike[str]) -> AsyncIterator[Harness]:
    """An emulator that serves RFC 7009 revocation (NOT a PagerDuty endpoint) and a
    Connector configured to use it."""
    async with revocation_harness(sqlite_url(tmp_path)) as h:
        yield h


def outbound(h: Harness) -> int:
    return sum(h.transport.paths.values())


async def connections_in_db(h: Harness) -> int:
    return len(await h.store.list_connections(limit=1000))


# -- the whole flow -----------------------------------------------------------------------------


async def test_begin_complete_use_disconnect(h: Harness) -> None:
    start = await h.connector.begin("user-1", return_to="/settings/integrations?tab=pd")
    assert start.state not in repr(start)
    assert start.binding not in repr(start)
    query = dict(parse_qsl(urlsplit(start.url).query))
    assert start.url.startswith(BASE + "/oauth/authorize?")
    assert query["code_challenge_method"] == "S256"
    assert query["state"] == start.state
    assert query["redirect_uri"] == h.settings.redirect_uri

    callback = await h.authorize(start)
    conn, return_to = await h.connector.complete_with_return_to(callback, start.binding)
    assert return_to == "/settings/integrations?tab=pd"
    assert conn.status == "active"
    assert conn.owner == "user-1"
    assert conn.region == "us"
    assert conn.subdomain == "acme"
    assert conn.user_email == US_ADMIN
    assert conn.user_name
    assert conn.scopes >= {"read", "write"}
    assert conn.api_base_url == BASE
    assert "token" not in repr(conn).lower().replace("access_expires_at", "")

    token = await h.connector.access_token(conn.id)
    me = await h.control.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200

    assert [c.id for c in await h.connector.connections("user-1")] == [conn.id]
    assert await h.connector.connections("someone-else") == []
    assert (await h.connector.get(conn.id)).id == conn.id
    with pytest.raises(ConnectionNotFoundError):
        await h.connector.get(conn.id, owner="someone-else")

    gone = await h.connector.disconnect(conn.id)
    assert gone.status == "revoked"
    row = await h.store.get_connection(conn.id)
    assert row is not None
    assert row.access_token_ct is None
    assert row.refresh_token_ct is None
    with pytest.raises(NeedsReauthError):
        await h.connector.access_token(conn.id)
    assert (await h.connector.disconnect(conn.id)).status == "revoked"  # idempotent
    types = [e.type for e in await h.store.list_events()]
    assert types == ["connection.created", "connection.revoked"]


def _row(**changes: object) -> ConnectionRow:
    fields: dict[str, object] = {
        "id": "c-1",
        "owner": "user-1",
        "kind": "user",
        "region": "eu",
        "account_id": "PACCT",
        "subdomain": "acme",
        "pd_user_id": "PUSER",
        "pd_user_name": "Ada",
        "pd_user_email": "ada@acme.example",
        "delegation_id": "PDELEG",
        "scopes": "write openid read",
        "status": "active",
        "access_token_ct": "v1.k1.SECRET-ACCESS",
        "refresh_token_ct": "v1.k1.SECRET-REFRESH",
        "key_id": "k1",
        "access_expires_at": 1_800_000_060.0,
        "refresh_expires_at": 1_807_776_000.0,
        "token_version": 3,
        "lease_owner": "SECRET-LEASE-OWNER",
        "lease_until": 1_800_000_030.0,
        "created_at": 1_800_000_000.0,
        "updated_at": 1_800_000_001.0,
        "last_refreshed_at": 1_800_000_002.0,
        "last_used_at": 1_800_000_003.0,
        "last_error_code": "invalid_grant",
        "last_error_message": "refresh token expired",
        "last_error_at": 1_800_000_004.0,
    }
    fields.update(changes)
    return ConnectionRow(**fields)  # type: ignore[arg-type]


URLS = {"us": "https://api.pagerduty.com", "eu": "https://api.eu.pagerduty.com"}


def test_to_json_is_the_api_shape_and_holds_no_secret() -> None:
    body = Connection.from_row(_row(), URLS).to_json()
    assert body == {
        "id": "c-1",
        "owner": "user-1",
        "kind": "user",
        "status": "active",
        "region": "eu",
        "account_id": "PACCT",
        "subdomain": "acme",
        "user": {"id": "PUSER", "name": "Ada", "email": "ada@acme.example"},
        "scopes": ["openid", "read", "write"],
        "missing_scopes": [],
        "api_base_url": "https://api.eu.pagerduty.com",
        "created_at": "2027-01-15T08:00:00Z",
        "updated_at": "2027-01-15T08:00:01Z",
        "last_refreshed_at": "2027-01-15T08:00:02Z",
        "access_expires_at": "2027-01-15T08:01:00Z",
        "last_error": {
            "code": "invalid_grant",
            "message": "refresh token expired",
            "at": "2027-01-15T08:00:04Z",
        },
    }
    assert "SECRET" not in json.dumps(body)


def test_to_json_of_an_app_connection_has_no_user_and_no_error() -> None:
    app = _row(
        kind="app",
        pd_user_id=None,
        pd_user_name=None,
        pd_user_email=None,
        last_error_code=None,
        last_error_message=None,
        last_error_at=None,
        last_refreshed_at=None,
        refresh_token_ct=None,
    )
    body = Connection.from_row(app, URLS).to_json()
    assert body["user"] is None
    assert body["last_error"] is None
    assert body["last_refreshed_at"] is None


def test_from_row_keeps_the_operator_fields_but_never_a_secret() -> None:
    conn = Connection.from_row(_row(), URLS)
    assert (conn.delegation_id, conn.key_id, conn.token_version) == ("PDELEG", "k1", 3)
    assert conn.refresh_lease_until == 1_800_000_030.0
    assert conn.refresh_expires_at == 1_807_776_000.0
    assert "SECRET" not in repr(conn)
    assert "token_version" not in repr(conn)


def test_from_row_sets_every_field_of_the_connection_from_the_row() -> None:
    # Every value of _row() is distinct, so a field left out of from_row (a name dropped
    # from its tuple of same-name columns) shows here as a default or a wrong value.
    row = _row(missing_scopes="write admin")
    conn = Connection.from_row(row, URLS, required_scopes=("read", "schedules.read"))
    expected = {
        "id": "c-1",
        "owner": "user-1",
        "kind": "user",
        "region": "eu",
        "account_id": "PACCT",
        "subdomain": "acme",
        "user_id": "PUSER",
        "user_name": "Ada",
        "user_email": "ada@acme.example",
        "scopes": frozenset({"openid", "read", "write"}),
        "status": "active",
        "api_base_url": "https://api.eu.pagerduty.com",
        "created_at": 1_800_000_000.0,
        "updated_at": 1_800_000_001.0,
        "last_refreshed_at": 1_800_000_002.0,
        "access_expires_at": 1_800_000_060.0,
        "last_error": LastError("invalid_grant", "refresh token expired", 1_800_000_004.0),
        "delegation_id": "PDELEG",
        "last_used_at": 1_800_000_003.0,
        "refresh_expires_at": 1_807_776_000.0,
        "token_version": 3,
        "key_id": "k1",
        "refresh_lease_until": 1_800_000_030.0,
        "missing_scopes": frozenset({"admin", "schedules.read"}),
    }
    assert {f.name for f in dataclasses.fields(Connection)} == set(expected)
    assert {name: getattr(conn, name) for name in expected} == expected


async def test_an_eu_account_gets_the_eu_api(h: Harness) -> None:
    conn = await h.connect("user-eu", user=EU_ADMIN)
    assert conn.region == "eu"
    assert conn.api_base_url == BASE + "/eu"
    token = await h.connector.access_token(conn.id)
    assert (
        await h.control.get("/eu/users/me", headers={"Authorization": f"Bearer {token}"})
    ).is_success


async def test_reconnecting_the_same_user_updates_the_same_connection(h: Harness) -> None:
    first = await h.connect()
    old = await h.connector.access_token(first.id)
    second = await h.connect()
    assert second.id == first.id
    assert await h.connector.access_token(second.id) != old
    types = [e.type for e in await h.store.list_events()]
    assert types == ["connection.created", "connection.reconnected"]


async def test_from_env_builds_a_connector(tmp_path: os.PathLike[str]) -> None:
    env = {
        "PDAUTH_CLIENT_ID": "pdauth-demo",
        "PDAUTH_REDIRECT_URI": "http://127.0.0.1:8000/callback",
        "PDAUTH_ENCRYPTION_KEYS": "k1:" + "A" * 43,
        "PDAUTH_DATABASE_URL": sqlite_url(tmp_path),
    }
    # A new database: migrate=True brings it up to date on open (it is refused without).
    async with Connector.from_env(env, migrate=True) as connector:
        assert connector.settings.client_id == "pdauth-demo"


# -- the callback is checked before anything else ---------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "",
        "code=abc",
        "state=",
        "state=a&state=b&code=x",
        "state=%00bad&code=x",
        "state=ok&code=x&error=access_denied",
        "state=" + "a" * 300 + "&code=x",
    ],
)
async def test_a_malformed_callback_consumes_nothing_and_calls_nobody(
    h: Harness, query: str
) -> None:
    start = await h.connector.begin("user-1")
    before = outbound(h)
    with pytest.raises(CallbackError):
        await h.connector.complete(query, start.binding)
    assert outbound(h) == before
    # The flow is still pending: the genuine callback completes it.
    assert (await h.connector.complete(await h.authorize(start), start.binding)).status == "active"


async def test_an_unknown_state_calls_nobody(h: Harness) -> None:
    start = await h.connector.begin("user-1")
    callback = dict(parse_qsl(await h.authorize(start)))
    before = outbound(h)
    forged = urlencode({"code": callback["code"], "state": "A" * 43})
    with pytest.raises(UnknownStateError):
        await h.connector.complete(forged, start.binding)
    assert outbound(h) == before


async def test_a_replayed_callback_is_refused_and_the_code_exchanged_once(h: Harness) -> None:
    start = await h.connector.begin("user-1")
    callback = await h.authorize(start)
    await h.connector.complete(callback, start.binding)
    with pytest.raises(UnknownStateError):
        await h.connector.complete(callback, start.binding)
    assert h.token_count("authorization_code") == 1
    assert sum(h.stats()["token_requests"]["authorization_code"].values()) == 1


async def test_the_wrong_browser_binding_is_refused_without_an_exchange(h: Harness) -> None:
    start = await h.connector.begin("user-1")
    other = await h.connector.begin("user-1")
    callback = await h.authorize(start)
    before = outbound(h)
    for binding in (other.binding, "", None):
        with pytest.raises((BindingMismatchError, UnknownStateError)):
            await h.connector.complete(callback, binding)
    assert outbound(h) == before
    assert await connections_in_db(h) == 0


async def test_another_owner_is_refused(h: Harness) -> None:
    start = await h.connector.begin("user-1")
    callback = await h.authorize(start)
    with pytest.raises(BindingMismatchError):
        await h.connector.complete(callback, start.binding, owner="user-2")
    assert await connections_in_db(h) == 0


async def test_an_expired_pending_authorization_is_refused(h: Harness) -> None:
    start = await h.connector.begin("user-1")
    callback = await h.authorize(start)
    h.advance(601)
    before = outbound(h)
    with pytest.raises(FlowExpiredError):
        await h.connector.complete(callback, start.binding)
    assert outbound(h) == before
    assert await connections_in_db(h) == 0


async def test_access_denied_consumes_the_state_and_stores_nothing(h: Harness) -> None:
    start = await h.connector.begin("user-1")
    callback = await h.authorize(start, decision="deny")
    before = outbound(h)
    with pytest.raises(AuthorizationDeniedError) as denied:
        await h.connector.complete(callback, start.binding)
    assert denied.value.error == "access_denied"
    assert outbound(h) == before
    with pytest.raises(UnknownStateError):
        await h.connector.complete(callback, start.binding)
    assert await connections_in_db(h) == 0
    events = await h.store.list_events()
    assert [(e.type, e.data["reason"]) for e in events] == [("connect.failed", "denied")]


async def test_a_scope_downgraded_to_openid_is_refused_and_revoked(hr: Harness) -> None:
    start = await hr.connector.begin("user-1")
    # Tamper with the scope on the way (PagerDuty grants only openid for unknown scopes).
    callback = await hr.authorize(start, scope="nonsense")
    with pytest.raises(InsufficientScopeError) as caught:
        await hr.connector.complete(callback, start.binding)
    assert set(caught.value.missing_scopes) == {"read", "write"}
    assert await connections_in_db(hr) == 0
    assert hr.stats()["tokens_revoked"]["grant"] == 1  # the unusable tokens were revoked


async def test_a_bad_id_token_signature_is_refused_and_nothing_stored(hr: Harness) -> None:
    async def corrupt_id_token(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path != "/oauth/token" or response.status_code != 200:
            return response
        body = json.loads(response.content)
        if "id_token" in body:
            head, payload, signature = body["id_token"].split(".")
            flipped = ("A" if signature[10] != "A" else "B").join((signature[:10], signature[11:]))
            body["id_token"] = f"{head}.{payload}.{flipped}"
        return httpx.Response(200, json=body, headers={"content-type": "application/json"})

    hr.transport.rewrite = corrupt_id_token
    start = await hr.connector.begin("user-1")
    with pytest.raises(IdTokenError):
        await hr.connector.complete(await hr.authorize(start), start.binding)
    assert await connections_in_db(hr) == 0
    assert hr.stats()["tokens_revoked"]["grant"] == 1


# -- disconnect and revocation ----------------------------------------------------------------


async def test_disconnect_revokes_at_the_endpoint_when_there_is_one(hr: Harness) -> None:
    conn = await hr.connect()
    await hr.connector.disconnect(conn.id)
    assert hr.stats()["tokens_revoked"]["grant"] == 1
    events = await hr.store.list_events()
    assert events[-1].type == "connection.revoked"
    assert events[-1].data["revoked_at_pagerduty"] is True


async def test_a_failed_revocation_is_queued_in_the_same_transaction(hr: Harness) -> None:
    conn = await hr.connect()
    row = await hr.store.get_connection(conn.id)
    assert row is not None

    async def unavailable(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/oauth/revoke":
            return httpx.Response(503)
        return None

    hr.transport.intercept = unavailable
    gone = await hr.connector.disconnect(conn.id)
    assert gone.status == "revoked"  # unusable at once, whatever PagerDuty answered
    events = {e.type: e for e in await hr.store.list_events()}
    queued = events["revocation.pending"]
    assert queued.connection_id == conn.id
    assert queued.data["token_type_hint"] == "refresh_token"
    assert events["connection.revoked"].data["revocation_queued"] is True
    # The keeper can open it (and only with this binding).
    token = hr.settings.key_ring().decrypt_text(
        queued.data["token_ct"], revocation_binding(conn.id, "refresh_token")
    )
    assert token.startswith("pdus+_1")
    assert hr.stats()["tokens_revoked"]["grant"] == 0


async def test_disconnect_of_someone_elses_connection_is_not_found(h: Harness) -> None:
    conn = await h.connect()
    with pytest.raises(ConnectionNotFoundError):
        await h.connector.disconnect(conn.id, owner="intruder")
    assert (await h.connector.get(conn.id)).status == "active"


async def test_bad_owner_values_are_refused(h: Harness) -> None:
    for owner in ("", "x" * 256):
        with pytest.raises(ValueError, match="owner"):
            await h.connector.begin(owner)


# -- return_to ---------------------------------------------------------------------------------

HOSTILE_RETURN_TO = [
    "https://evil.com",
    "//evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "/%2F%2Fevil.com",
    "%2F%2Fevil.com",
    "/%5Cevil.com",
    "/%252F%252Fevil.com",
    "https:evil.com",
    "javascript:alert(1)",
    "/x%0d%0aLocation:%20https://evil.com",
    "/x\r\nLocation: https://evil.com",
    "https://app.example.com.evil.com",
    "/@evil.com",
    "\uff0f\uff0fevil.com",
    "/\uff0f\uff0fevil.com",
    "/ok#frag",
    " /leading-space",
    "",
    "x" * 600,
]


@pytest.mark.parametrize("value", HOSTILE_RETURN_TO)
def test_hostile_return_to_falls_back_to_the_default(value: str) -> None:
    assert safe_return_to(value) is None


@pytest.mark.parametrize("value", ["/", "/settings", "/a/b?x=1&y=%20z", "/integrations/pd-1"])
def test_plain_paths_are_kept(value: str) -> None:
    assert safe_return_to(value) == value


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80) | st.from_regex(r"/[/\\%@:a-z0-9.?#=&]{0,30}", fullmatch=True))
def test_return_to_is_always_a_same_origin_path(value: str) -> None:
    kept = safe_return_to(value)
    if kept is not None:
        assert kept == value
        parts = urlsplit(kept)
        assert not parts.scheme
        assert not parts.netloc
        assert kept.startswith("/")
        assert not kept.startswith("//")
        assert "\\" not in kept
        assert "@" not in kept
        assert all(0x21 <= ord(c) <= 0x7E for c in kept)


async def test_a_hostile_return_to_is_stored_as_the_default(h: Harness) -> None:
    start = await h.connector.begin("user-1", return_to="//evil.com")
    _, return_to = await h.connector.complete_with_return_to(
        await h.authorize(start), start.binding
    )
    assert return_to is None


@pytest.mark.parametrize(("user", "region"), [(US_ADMIN, "us"), (EU_ADMIN, "eu")])
async def test_without_an_id_token_the_account_is_learned_from_users_me(
    h: Harness, user: str, region: str
) -> None:
    async def drop_id_token(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path != "/oauth/token" or response.status_code != 200:
            return response
        body = json.loads(response.content)
        body.pop("id_token", None)
        return httpx.Response(200, json=body, headers={"content-type": "application/json"})

    h.transport.rewrite = drop_id_token
    conn = await h.connect(user=user)
    assert conn.region == region
    assert conn.subdomain == ("acme" if region == "us" else "eurocorp")
    assert conn.account_id == f"subdomain:{conn.subdomain}"
    assert conn.user_email == user
    assert conn.api_base_url == (BASE if region == "us" else BASE + "/eu")


# -- a new database: a clear error, or migrate=True ----------------------------------------------


async def test_an_unmigrated_database_names_the_upgrade_command(db_url: str) -> None:
    connector = Connector(make_settings(database_url=db_url))
    try:
        with pytest.raises(ConfigurationError) as caught:
            await connector.begin("user-1")
        message = str(caught.value)
        assert "pdauth db upgrade" in message
        assert "no such table" not in message.lower()
        assert "does not exist" not in message.lower()
        # Still refused on the next call (the gate passes only once the schema is current).
        with pytest.raises(ConfigurationError):
            await connector.connections()
        assert await connector.store.current_revision() is None  # and nothing was created
    finally:
        await connector.aclose()


async def test_opening_the_connector_checks_the_schema(db_url: str) -> None:
    with pytest.raises(ConfigurationError, match="pdauth db upgrade"):
        async with Connector(make_settings(database_url=db_url)):
            pytest.fail("the body must not run on an unmigrated database")


async def test_migrate_true_migrates_on_open(db_url: str) -> None:
    async with Connector(make_settings(database_url=db_url), migrate=True) as connector:
        assert await connector.store.is_up_to_date()
        start = await connector.begin("user-1")
        assert start.url


async def test_concurrent_connectors_with_migrate_true_all_open(db_url: str) -> None:
    import anyio

    connectors = [Connector(make_settings(database_url=db_url), migrate=True) for _ in range(4)]
    try:
        async with anyio.create_task_group() as tg:
            for connector in connectors:
                tg.start_soon(connector.open)
        for connector in connectors:
            assert await connector.connections() == []
    finally:
        for connector in connectors:
            await connector.aclose()


async def test_the_schema_is_checked_once_not_on_every_call(db_url: str) -> None:
    import sqlalchemy as sa

    async with Connector(make_settings(database_url=db_url), migrate=True) as connector:
        await connector.connections()
        # Were the check repeated, the missing version table would now refuse the next call.
        with connector.store.store.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE alembic_version"))
        assert await connector.connections() == []
    # Negative control: a new Connector checks again and sees the damage.
    with pytest.raises(ConfigurationError, match="pdauth db upgrade"):
        async with Connector(make_settings(database_url=db_url)):
            pytest.fail("a fresh Connector must check the schema again")


# -- shared pacing through Redis (PDAUTH_REDIS_URL) ----------------------------------------------

REDIS_URL = os.environ.get("PDAUTH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_keys(prefix: str) -> list[str]:
    import redis

    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5) as r:
            keys = [k.decode() for k in r.scan_iter(match=prefix + "*")]
            if keys:
                r.delete(*keys)  # leave the server as we found it
            return keys
    except redis.RedisError:
        pytest.skip(f"no Redis at {REDIS_URL}")


async def test_with_a_redis_url_every_connector_client_paces_through_redis(
    tmp_path: os.PathLike[str],
) -> None:
    prefix = f"pdauth-test-{os.urandom(4).hex()}:"
    _redis_keys(prefix)
    async with harness(sqlite_url(tmp_path), redis_url=REDIS_URL, redis_prefix=prefix) as h:
        conn = await h.connect()
        # A second Connector: its own token cache, pacer and client, as another process has.
        other = h.another_connector()
        for connector in (h.connector, other):
            async with await connector.client(conn.id) as client:
                assert (await client.get("/users/me"))["user"]["email"] == US_ADMIN
        keys = _redis_keys(prefix)
    assert f"{prefix}pace:{{{conn.id}}}" in keys
    assert all(k.startswith(prefix + "pace:") for k in keys)


async def test_an_explicit_pacer_wins_and_no_redis_url_means_local_pacing(
    tmp_path: os.PathLike[str],
) -> None:
    from pdauth.client import LocalPacer

    prefix = f"pdauth-test-{os.urandom(4).hex()}:"
    _redis_keys(prefix)
    async with harness(sqlite_url(tmp_path), redis_url=REDIS_URL, redis_prefix=prefix) as h:
        conn = await h.connect()
        local = h.another_connector(pacer=LocalPacer())
        async with await local.client(conn.id) as client:
            await client.get("/users/me")
        # The Connector's own pacer is Redis, but a pacer given to client() wins too.
        async with await h.connector.client(conn.id, pacer=LocalPacer()) as client:
            await client.get("/users/me")
        no_redis = h.another_connector(settings=h.settings.model_copy(update={"redis_url": None}))
        async with await no_redis.client(conn.id) as client:
            await client.get("/users/me")
        assert _redis_keys(prefix) == []
        # Negative control: the same call through the Redis-configured Connector writes keys.
        async with await h.connector.client(conn.id) as client:
            await client.get("/users/me")
        assert _redis_keys(prefix) != []


_WITHOUT_REDIS = """
import sys
sys.modules["redis"] = None  # an install without the pdauth[redis] extra
from pdauth.connections import Connector
from pdauth.errors import ConfigurationError
from tests.workers.harness import make_settings
try:
    Connector(make_settings(database_url="sqlite:///" + sys.argv[1], redis_url="redis://h:6379/0"))
except ConfigurationError as exc:
    print(exc)
"""


def test_a_redis_url_without_the_redis_package_names_the_extra(
    tmp_path: os.PathLike[str],
) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_REDIS, os.path.join(os.fspath(tmp_path), "t.db")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert "pip install 'pdauth[redis]'" in result.stdout
