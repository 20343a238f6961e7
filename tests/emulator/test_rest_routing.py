"""The REST API's routing (Starlette routes over one pipeline): trailing slashes, over-long ids,
unknown paths and methods all take the same path through faults, authentication and the rate
limit, and are counted under the route they matched (or ``(unmatched)``)."""

from __future__ import annotations

import httpx
import pytest

from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.state import EmulatorState


def key_of(state: EmulatorState, account: str = "PACME01") -> dict[str, str]:
    return {"Authorization": f"Token token={state.directory.api_keys[account].token}"}


def counted(state: EmulatorState) -> dict[str, dict[str, int]]:
    rest: dict[str, dict[str, int]] = state.stats.snapshot()["rest_requests"]  # type: ignore[assignment]
    return rest


@pytest.mark.anyio
async def test_a_trailing_slash_reaches_the_same_operation(
    emulator_client: httpx.AsyncClient, emulator_state: EmulatorState
) -> None:
    key = key_of(emulator_state)
    plain = await emulator_client.get("/users", headers=key)
    slashed = await emulator_client.get("/users/", headers=key)
    assert plain.status_code == slashed.status_code == 200
    assert plain.json() == slashed.json()
    user = emulator_state.directory.users_of("PACME01")[0]
    one = await emulator_client.get(f"/eu/users/{user.id}/", headers=key)
    assert one.status_code == 401  # a US key on the EU API: the region check ran
    assert counted(emulator_state)["GET /users"] == {"200": 2}
    assert counted(emulator_state)["GET /users/{id}"] == {"401": 1}


@pytest.mark.anyio
async def test_an_id_longer_than_64_characters_matches_no_route(
    emulator_client: httpx.AsyncClient, emulator_state: EmulatorState
) -> None:
    key = key_of(emulator_state)
    at_limit = await emulator_client.get("/users/" + "x" * 64, headers=key)
    too_long = await emulator_client.get("/users/" + "x" * 65, headers=key)
    assert at_limit.status_code == too_long.status_code == 404
    assert too_long.json() == {"error": {"message": "Not Found", "code": 2100}}
    assert counted(emulator_state)["GET /users/{id}"] == {"404": 1}
    assert counted(emulator_state)["GET (unmatched)"] == {"404": 1}


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "FOO"])
async def test_other_methods_get_a_json_405_after_authentication(
    emulator_client: httpx.AsyncClient, emulator_state: EmulatorState, method: str
) -> None:
    anonymous = await emulator_client.request(method, "/incidents")
    assert anonymous.status_code == 401  # credentials first, as for every REST request
    refused = await emulator_client.request(method, "/incidents", headers=key_of(emulator_state))
    assert refused.status_code == 405
    assert refused.headers["content-type"].startswith("application/json")
    assert refused.json() == {"error": {"message": "Method Not Allowed"}}
    assert "ratelimit-remaining" in refused.headers  # the request was counted against the budget
    label = method if method != "FOO" else "OTHER"
    assert counted(emulator_state)[f"{label} /incidents"] == {"401": 1, "405": 1}


@pytest.mark.anyio
async def test_unknown_paths_need_credentials_and_spend_budget(
    emulator_client: httpx.AsyncClient, emulator_state: EmulatorState
) -> None:
    assert (await emulator_client.get("/no/such/thing")).status_code == 401
    found = await emulator_client.get("/no/such/thing", headers=key_of(emulator_state))
    assert found.status_code == 404
    assert found.headers["ratelimit-remaining"] == str(EmulatorConfig().rate_limit - 1)
    key = key_of(emulator_state)
    assert (await emulator_client.get("/", headers=key)).status_code == 404
    assert (await emulator_client.get("/eu", headers=key)).status_code == 404  # a US path
    # Under /eu/ the EU API refuses the US key before looking for a route.
    assert (await emulator_client.get("/eu/", headers=key)).status_code == 401
    eu_key = key_of(emulator_state, "PEURO01")
    assert (await emulator_client.get("/eu/", headers=eu_key)).status_code == 404


@pytest.mark.anyio
async def test_a_fault_is_served_on_an_unknown_path_too(
    emulator_client: httpx.AsyncClient, emulator_state: EmulatorState
) -> None:
    emulator_state.faults.add("rest", "503")
    faulted = await emulator_client.get("/no/such/thing", headers=key_of(emulator_state))
    assert faulted.status_code == 503
    assert faulted.json() == {"error": {"message": "Service Unavailable"}}
    assert emulator_state.faults.pending() == {"token": 0, "rest": 0}
