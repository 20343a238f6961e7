"""Connect links meant for someone, re-consent for more scopes, and PagerDuty's 403 for
missing scopes — through the Connector against the emulator.

An approval by another PagerDuty account or user than the flow expected stores nothing,
revokes the fresh tokens and writes one ``connect.rejected`` event; the right one connects
(negative controls). A re-consent asks for the union of scopes and updates the same
connection, only for the same account and user. Discovery problems surface at ``begin``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from pdauth.connect_flow import REJECTED_EVENT, UnexpectedGrantError
from pdauth.errors import ConfigurationError, ConnectionNotFoundError, ScopeError
from pdauth.scope_upgrades import NEEDS_SCOPES_EVENT
from tests.workers.harness import (
    BASE,
    EU_ADMIN,
    US_ADMIN,
    Harness,
    harness,
    revocation_harness,
    sqlite_url,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def hr(tmp_path: os.PathLike[str]) -> AsyncIterator[Harness]:
    """A Connector with RFC 7009 revocation at the emulator, so revocations can be counted."""
    async with revocation_harness(sqlite_url(tmp_path)) as h:
        yield h


async def _second_acme_user(h: Harness) -> str:
    acme = h.state.directory.account_by_subdomain("acme")
    assert acme is not None
    return h.state.directory.users_of(acme.id)[1].id


async def _revocations(h: Harness) -> int:
    return sum(n for path, n in h.transport.paths.items() if path.endswith("/oauth/revoke"))


async def _event_types(h: Harness) -> list[str]:
    return [e.type for e in await h.store.list_events(limit=1000)]


async def test_an_approval_from_another_account_stores_nothing_and_revokes(hr: Harness) -> None:
    start = await hr.connector.begin("user-1", expect_account="acme")
    query = await hr.authorize(start, user=EU_ADMIN)
    with pytest.raises(UnexpectedGrantError, match="PagerDuty account acme") as caught:
        await hr.connector.complete(query, start.binding)
    assert caught.value.reason == "unexpected_account"
    assert await hr.store.list_connections(limit=10) == []
    assert await _revocations(hr) == 1
    events = await hr.store.list_events(limit=100)
    assert [e.type for e in events] == [REJECTED_EVENT]
    assert events[0].owner == "user-1"
    assert events[0].data["reason"] == "unexpected_account"
    assert events[0].data["expected_account"] == "acme"


async def test_an_approval_from_another_user_is_refused(hr: Harness) -> None:
    other = await _second_acme_user(hr)
    start = await hr.connector.begin("user-1", expect_user=US_ADMIN.upper())
    query = await hr.authorize(start, user=other)
    with pytest.raises(UnexpectedGrantError) as caught:
        await hr.connector.complete(query, start.binding)
    assert caught.value.reason == "unexpected_user"
    assert await hr.store.list_connections(limit=10) == []
    assert await _event_types(hr) == [REJECTED_EVENT]


@pytest.mark.parametrize(
    ("account", "user"),
    [("acme", None), ("ACME", US_ADMIN.upper()), (None, US_ADMIN), ("acme", "by-id")],
)
async def test_the_expected_account_and_user_connect(
    hr: Harness, account: str | None, user: str | None
) -> None:
    if user == "by-id":
        acme = hr.state.directory.account_by_subdomain("acme")
        assert acme is not None
        user, account = hr.state.directory.users_of(acme.id)[0].id, acme.id
    start = await hr.connector.begin("user-1", expect_account=account, expect_user=user)
    conn = await hr.connector.complete(await hr.authorize(start), start.binding)
    assert conn.subdomain == "acme"
    assert await _revocations(hr) == 0
    assert await _event_types(hr) == ["connection.created"]


async def test_bad_expectations_are_refused_before_anything_is_stored(hr: Harness) -> None:
    for bad in ("", "a\u2028b", "x" * 256):
        with pytest.raises(ValueError, match="expect_account"):
            await hr.connector.begin("user-1", expect_account=bad)
        with pytest.raises(ValueError, match="expect_user"):
            await hr.connector.begin("user-1", expect_user=bad)


# -- begin checks discovery first ----------------------------------------------------------


DISCOVERY_PATH = "/global/oauth/anonymous/.well-known/openid-configuration"


async def test_a_missing_discovery_document_is_found_at_begin_then_fixed(
    tmp_path: os.PathLike[str],
) -> None:
    async def not_found(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == DISCOVERY_PATH:
            return httpx.Response(404, json={"error": "not_found"})
        return None

    async with harness(sqlite_url(tmp_path)) as h:
        h.transport.intercept = not_found
        with pytest.raises(ConfigurationError, match="PDAUTH_DISCOVERY_URL"):
            await h.connector.begin("user-1")
        assert h.transport.paths["/oauth/authorize"] == 0
        # Negative control: once the document is there, the same connector connects.
        h.transport.intercept = None
        conn = await h.connect()
        assert conn.status == "active"


async def test_a_refusing_transport_still_lets_begin_return_a_url(
    tmp_path: os.PathLike[str],
) -> None:
    async def refuse(request: httpx.Request) -> None:
        raise httpx.ConnectError("refused", request=request)

    async with harness(sqlite_url(tmp_path), before=refuse) as h:
        start = await h.connector.begin("user-1")
        assert start.url.startswith(BASE + "/oauth/authorize?")


# -- re-consent for more scopes --------------------------------------------------------------


async def _narrow_connect(h: Harness) -> str:
    """A connection granted only ``read`` although ``read write`` were asked for."""
    start = await h.connector.begin("user-1", scopes=["read"])
    conn = await h.connector.complete(await h.authorize(start), start.binding)
    assert "write" in conn.missing_scopes
    assert conn.needs_scopes
    assert conn.to_json()["missing_scopes"] == ["write"]
    return conn.id


async def test_reconsent_asks_for_the_union_and_updates_the_same_connection(
    hr: Harness,
) -> None:
    conn_id = await _narrow_connect(hr)
    start = await hr.connector.begin("user-1", connection_id=conn_id)
    asked = dict(parse_qsl(urlsplit(start.url).query))["scope"].split()
    assert {"read", "write"} <= set(asked)
    conn = await hr.connector.complete(await hr.authorize(start), start.binding)
    assert conn.id == conn_id
    assert conn.owner == "user-1"
    assert conn.missing_scopes == frozenset()
    assert not conn.needs_scopes
    events = await hr.store.list_events(limit=100)
    assert [e.type for e in events] == ["connection.created", "connection.reconnected"]
    assert events[-1].data["reconsent"] is True


async def test_reconsent_by_another_user_is_refused_and_keeps_the_connection(
    hr: Harness,
) -> None:
    conn_id = await _narrow_connect(hr)
    before = await hr.store.get_connection(conn_id)
    other = await _second_acme_user(hr)
    start = await hr.connector.begin("user-1", connection_id=conn_id)
    with pytest.raises(UnexpectedGrantError):
        await hr.connector.complete(await hr.authorize(start, user=other), start.binding)
    after = await hr.store.get_connection(conn_id)
    assert after == before
    assert len(await hr.store.list_connections(limit=10)) == 1
    assert await _revocations(hr) == 1


async def test_a_narrowed_reconsent_is_refused_and_stores_nothing(hr: Harness) -> None:
    conn_id = await _narrow_connect(hr)
    before = await hr.store.get_connection(conn_id)
    start = await hr.connector.begin("user-1", connection_id=conn_id)
    query = await hr.authorize(start, scopes="read")
    with pytest.raises(Exception, match="scope"):
        await hr.connector.complete(query, start.binding)
    assert await hr.store.get_connection(conn_id) == before


async def test_reconsent_of_someone_elses_connection_is_not_found(hr: Harness) -> None:
    conn = await hr.connect()
    with pytest.raises(ConnectionNotFoundError):
        await hr.connector.begin("intruder", connection_id=conn.id)
    with pytest.raises(ConnectionNotFoundError):
        await hr.connector.begin("user-1", connection_id="pdc_nope")


async def test_a_403_for_missing_scopes_marks_the_connection_once(hr: Harness) -> None:
    start = await hr.connector.begin("user-1", scopes=["read"])
    conn = await hr.connector.complete(await hr.authorize(start, scopes="read"), start.binding)
    async with await hr.connector.client(conn.id) as client:
        for _ in range(2):
            with pytest.raises(ScopeError) as caught:
                await client.post(
                    "/incidents",
                    json={"incident": {"type": "incident", "title": "t"}},
                )
            assert caught.value.required_scopes
    marked = await hr.connector.get(conn.id)
    assert marked.needs_scopes
    assert set(caught.value.required_scopes) <= marked.missing_scopes | marked.scopes
    assert (await _event_types(hr)).count(NEEDS_SCOPES_EVENT) == 1


async def test_a_reconsent_for_a_connection_disconnected_meanwhile_stores_nothing(
    hr: Harness,
) -> None:
    conn_id = await _narrow_connect(hr)
    start = await hr.connector.begin("user-1", connection_id=conn_id)
    await hr.connector.disconnect(conn_id)
    with pytest.raises(ConnectionNotFoundError):
        await hr.connector.complete(await hr.authorize(start), start.binding)
    row = await hr.store.get_connection(conn_id)
    assert row is not None
    assert row.status == "revoked"
    assert row.access_token_ct is None
