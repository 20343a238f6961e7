"""create_app wiring and the state's building blocks (config, clock, faults, stats, tokens)."""

from __future__ import annotations

import json

import httpx
import pytest

import pdauth.emulator
from pdauth.emulator import EmulatorConfig, EmulatorState, create_app, state as state_module
from pdauth.emulator.app import build_state
from pdauth.emulator.state import EmulatorClock, Fault, FaultQueue, KeyRing, OAuthApp, Stats


def test_public_names():
    assert set(pdauth.emulator.__all__) == {
        "EmulatorConfig",
        "EmulatorServer",
        "EmulatorState",
        "create_app",
    }


def test_create_app_exposes_its_state_and_registers_the_demo_app():
    app = create_app(EmulatorConfig(seed=3, users_per_account=30))
    state = app.state.emulator
    assert isinstance(state, EmulatorState)
    assert state.config.seed == 3
    assert state.app("pdauth-demo") is not None
    acme = state.directory.account_by_subdomain("acme")
    assert acme is not None
    assert len(state.directory.users_of(acme.id)) == 30


def test_demo_app_can_be_left_out():
    state = build_state(EmulatorConfig(demo_app=False))
    assert state.apps == {}


def test_create_app_uses_a_given_state_and_refuses_a_conflicting_config():
    state = build_state(EmulatorConfig(seed=9))
    assert create_app(state=state).state.emulator is state
    assert create_app(EmulatorConfig(seed=9), state=state).state.emulator is state
    with pytest.raises(ValueError, match="either"):
        create_app(EmulatorConfig(seed=10), state=state)


def test_same_seed_same_directory():
    a = build_state(EmulatorConfig(seed=5), clock=EmulatorClock(start=1.0e9))
    b = build_state(EmulatorConfig(seed=5), clock=EmulatorClock(start=1.0e9))
    assert sorted(a.directory.users) == sorted(b.directory.users)


@pytest.mark.anyio
async def test_routes_identity_control_and_both_rest_regions(emulator_client):
    jwks = await emulator_client.get("/global/oauth/anonymous/jwks")
    assert jwks.status_code == 200
    stats = await emulator_client.get("/_emulator/stats")
    assert stats.status_code == 200
    for prefix in ("", "/eu"):
        unauthenticated = await emulator_client.get(f"{prefix}/users/me")
        assert unauthenticated.status_code == 401
        assert "error" in unauthenticated.json()
    counted = (await emulator_client.get("/_emulator/stats")).json()["rest_requests"]
    assert counted["GET /users/me"] == {"401": 2}


# -- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate_limit": 0},
        {"rate_window": 0},
        {"rate_window": float("nan")},
        {"access_token_ttl": 0},
        {"refresh_token_ttl": -5},
        {"code_ttl": 0},
        {"code_ttl": float("inf")},
        {"refresh_reuse": "sometimes"},
        {"drop_ratelimit_headers": 1.5},
        {"drop_ratelimit_headers": -0.1},
        {"public_url": "ftp://x"},
        {"users_per_account": 0},
    ],
)
def test_config_refuses_nonsense(kwargs):
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        EmulatorConfig(**kwargs)


def test_config_lifetimes_by_app_kind_with_overrides():
    default = EmulatorConfig()
    assert default.access_ttl("classic") == 30 * 86400
    assert default.access_ttl("scoped") == 86400
    assert default.refresh_ttl("classic") == 210 * 86400
    assert default.refresh_ttl("scoped") == 30 * 86400
    custom = EmulatorConfig(access_token_ttl=5, refresh_token_ttl=50)
    assert custom.access_ttl("scoped") == 5
    assert custom.refresh_ttl("classic") == 50


# -- clock, faults, stats, keys -------------------------------------------------------------------


def test_clock_advances_and_refuses_to_go_back():
    clock = EmulatorClock(start=100.0)
    clock.advance(5)
    assert clock.now() == 105.0
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="backwards"):
            clock.advance(bad)
    real = EmulatorClock()
    real.advance(3600)
    assert real.offset == 3600


def test_fault_queue_is_fifo_per_target():
    queue = FaultQueue()
    queue.add("token", "503", count=2)
    queue.add("token", "timeout", delay=1.5)
    queue.add("rest", "drop")
    assert queue.pending() == {"token": 3, "rest": 1}
    kinds = [queue.take("token") for _ in range(4)]
    assert kinds == [Fault("503"), Fault("503"), Fault("timeout", 1.5), None]
    assert queue.take("rest") == Fault("drop")


def test_stats_snapshot_is_json_and_labels_are_tamed():
    stats = Stats()
    stats.record_token("x" * 500 + "\n\x00", "invalid_request")
    stats.record_token("", "invalid_request")
    stats.record_rest("GET", "/users/{id}", 404)
    stats.record_429(with_headers=False)
    snap = json.loads(json.dumps(stats.snapshot()))
    assert list(snap["token_requests"]) == ["(missing)", "x" * 40]
    assert snap["rest_requests"] == {"GET /users/{id}": {"404": 1}}
    assert snap["rate_limited"] == {"total": 1, "with_headers": 0, "without_headers": 1}


def test_key_ring_rotation():
    ring = KeyRing()
    first = ring.current_kid
    second = ring.rotate()
    assert ring.kids() == [second, first]
    third = ring.rotate(keep_old=False)
    assert ring.kids() == [third]
    assert all("d" not in key for key in ring.jwks()["keys"])


# -- tokens in the state --------------------------------------------------------------------------


def _grant(state: EmulatorState):
    user = state.directory.find_user("admin@acme.example")
    app = state.app("pdauth-demo")
    assert user is not None
    assert app is not None
    return state.new_grant(
        app=app, account_id=user.account_id, user_id=user.id, scopes=app.scopes, region="us"
    )


def test_authenticate_unknown_expired_and_revoked_tokens():
    state = build_state(EmulatorConfig(access_token_ttl=10), clock=EmulatorClock(start=1000.0))
    grant = _grant(state)
    token = state.issue_access_token(grant)
    assert state.authenticate(token.value) is token
    assert state.authenticate("pdus+_0nothing") is None
    state.clock.advance(10)
    assert state.authenticate(token.value) is None
    other = state.issue_access_token(grant)
    assert state.revoke_grant(grant.id) is True
    assert state.revoke_grant(grant.id) is False
    assert state.authenticate(other.value) is None
    assert grant.revoked_at == 1010.0


def test_refresh_tokens_never_outlive_the_rolling_window():
    state = build_state(EmulatorConfig(), clock=EmulatorClock(start=0.0))
    grant = _grant(state)
    state.clock.advance(3 * 365 * 86400 - 100)
    rt = state.issue_refresh_token(grant)
    assert rt.expires_at == grant.expires_at(state.config) == 3 * 365 * 86400


def test_revoke_needs_a_filter_and_tokens_hide_their_values():
    state = build_state(EmulatorConfig())
    with pytest.raises(ValueError, match="client_id or a user_id"):
        state.revoke()
    grant = _grant(state)
    access = state.issue_access_token(grant)
    refresh = state.issue_refresh_token(grant)
    assert access.value not in repr(access)
    assert refresh.value not in repr(refresh)
    secret_app = OAuthApp("c", "n", "classic", ("http://x/cb",), frozenset({"read"}), "s3cr3t!!")
    assert "s3cr3t!!" not in repr(secret_app)


def test_grants_of_lists_a_users_delegations():
    state = build_state(EmulatorConfig(), clock=EmulatorClock(start=0.0))
    first = _grant(state)
    state.clock.advance(1)
    second = _grant(state)
    state.revoke_grant(first.id)
    listed = state.grants_of(user_id=first.user_id)
    assert [g.id for g in listed] == [first.id, second.id]
    assert [g.revoked for g in listed] == [True, False]
    assert state.grants_of(client_id="someone-else") == []


@pytest.mark.anyio
async def test_the_app_serves_over_asgi_transport_without_warnings():
    app = create_app()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://e"
    ) as client:
        response = await client.get("/global/oauth/anonymous/.well-known/openid-configuration")
    assert response.json()["token_endpoint"] == "http://e/oauth/token"


def test_old_codes_are_forgotten_but_recent_ones_kept(monkeypatch):
    monkeypatch.setattr(state_module, "CODE_PRUNE_AT", 3)
    state = build_state(EmulatorConfig(), clock=EmulatorClock(start=0.0))
    user = state.directory.find_user("admin@acme.example")
    app = state.app("pdauth-demo")
    assert user is not None
    assert app is not None

    def issue():
        return state.issue_code(
            app=app,
            redirect_uri=app.redirect_uris[0],
            code_challenge=None,
            account_id=user.account_id,
            user_id=user.id,
            scopes=app.scopes,
        )

    old = [issue(), issue()]
    state.clock.advance(3600 + 31)
    recent = issue()
    newest = issue()  # the fourth code triggers pruning of codes long expired
    assert all(code.value not in state.codes for code in old)
    assert recent.value in state.codes
    assert newest.value in state.codes
