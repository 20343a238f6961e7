"""python-pagerduty's conveniences (``rget``, ``find``, ``list_all``) on both clients, against
the emulator, and the pure entity unwrapping behind ``rget``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pdauth.client import LocalPacer, PagerDutyClient, SyncPagerDutyClient
from pdauth.client.pagination import singular_name, unwrap_entity
from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.server import EmulatorServer
from pdauth.errors import PagerDutyAPIError, RequestRefusedError

from .emulator_helpers import BASE, Emulator


@pytest.mark.parametrize(
    ("body", "path", "entity"),
    [
        ({"user": {"id": "P1"}}, "/users/P1", {"id": "P1"}),
        ({"user": {"id": "P1"}}, "/users/me", {"id": "P1"}),
        ({"users": [1, 2], "more": True, "limit": 2, "offset": 0}, "/users", [1, 2]),
        ({"escalation_policy": {"id": "E"}}, "/escalation_policies/E", {"id": "E"}),
        ({"user_sessions": [1]}, "/users/PX/sessions", [1]),
        ({"integration": {"id": "I"}}, "services/S/integrations/I", {"id": "I"}),
        ({"only": 1, "total": 9}, "/odd/place", 1),  # one content key: unwrapped
        ({"a": 1, "b": 2}, "/analytics/x", {"a": 1, "b": 2}),  # not wrapped: as it came
        (None, "/abilities/x", None),  # 204
    ],
)
def test_unwrap_entity(body: Any, path: str, entity: Any) -> None:
    assert unwrap_entity(body, path) == entity


def test_singular_name() -> None:
    assert [singular_name(n) for n in ("users", "escalation_policies", "me")] == [
        "user",
        "escalation_policy",
        "me",
    ]


@pytest.fixture
def emulator() -> Emulator:
    return Emulator.create(seed=5)


def client_for(emulator: Emulator) -> PagerDutyClient:
    return PagerDutyClient.from_token(
        emulator.api_key(), kind="api_key", base_url=BASE, transport=emulator.transport(),
        pacer=LocalPacer(),
    )  # fmt: skip


@pytest.mark.anyio
async def test_rget_unwraps_a_resource_a_list_and_follows_self(emulator: Emulator) -> None:
    async with client_for(emulator) as client:
        users = await client.rget("/users", params={"limit": 3})
        user = await client.rget(f"/users/{users[1]['id']}")
        again = await client.rget(user)  # an entity: its ``self`` URL
        services = await client.rget("services")
        with pytest.raises(RequestRefusedError, match="self"):
            await client.rget({"id": "PNOSELF"})
        with pytest.raises(PagerDutyAPIError) as missing:
            await client.rget("/users/PNOPE00")
    assert len(users) == 3
    assert user == users[1] == again
    assert isinstance(services, list)
    assert services
    assert missing.value.status == 404


@pytest.mark.anyio
async def test_find_matches_exactly_ignoring_case(emulator: Emulator) -> None:
    async with client_for(emulator) as client:
        users = await client.list_all("/users")
        target = users[17]
        by_name = await client.find("users", target["name"].upper())
        by_email = await client.find("/users", target["email"], attribute="email")
        partial = await client.find("users", target["name"][:-1])  # a prefix is no match
        nobody = await client.find("users", "Nobody Atall")
        service = (await client.list_all("services"))[2]
        found_service = await client.find("services", service["name"].lower())
    assert by_name is not None
    assert by_name["name"].lower() == target["name"].lower()
    assert by_email == target
    assert partial is None
    assert nobody is None
    assert found_service == service
    # ``find`` asked the index with ``query=``: it did not read all 250 users each time.
    assert emulator.rest("GET /users") < 3 + 4 * 3


@pytest.mark.anyio
async def test_list_all_collects_every_page(emulator: Emulator) -> None:
    async with client_for(emulator) as client:
        users = await client.list_all("/users", page_size=40)
        last_name = users[0]["name"].split()[-1].lower()
        some = await client.list_all("/users", {"query": last_name}, page_size=100)
    assert len(users) == 250
    assert len({u["id"] for u in users}) == 250
    assert users[0] in some
    assert all(last_name in (u["name"] + u["email"]).lower() for u in some)
    assert len(some) < 250


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(seed=13)) as srv:
        yield srv


def test_the_sync_client_offers_the_same_conveniences(server: EmulatorServer) -> None:
    key = server.state.directory.api_keys["PACME01"].token
    with SyncPagerDutyClient.from_token(
        key, kind="api_key", base_url=server.url, pacer=LocalPacer()
    ) as client:
        users = client.list_all("/users")
        target = users[42]
        found = client.find("users", target["email"], attribute="email")
        entity = client.rget(f"/users/{target['id']}")
        me_missing = client.find("users", "no such person")
        client.close()
        with pytest.raises(RuntimeError, match="closed"):
            client.rget("/users")
    assert len(users) == 250
    assert found == target == entity
    assert me_missing is None
