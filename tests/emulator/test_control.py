"""The /_emulator control API: apps, faults, revocation, clock, stats, reset, input checks."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.anyio


# -- apps -----------------------------------------------------------------------------------------


async def test_demo_app_is_registered_at_start(flow):
    apps = (await flow.client.get("/_emulator/apps")).json()["apps"]
    demo = next(a for a in apps if a["client_id"] == "pdauth-demo")
    assert demo["name"] == "pdauth demo"
    assert demo["kind"] == "classic"
    assert demo["client_type"] == "confidential"
    assert demo["scopes"] == ["read", "write"]
    assert "http://127.0.0.1:8000/callback" in demo["redirect_uris"]
    assert "http://localhost:8010/callback" in demo["redirect_uris"]
    assert "http://localhost:8011/callback" not in demo["redirect_uris"]
    assert "client_secret" not in demo


async def test_registering_a_confidential_app_without_secret_generates_one(flow):
    response = await flow.client.post(
        "/_emulator/apps",
        json={
            "name": "Generated",
            "client_type": "confidential",
            "redirect_uris": [flow.redirect_uri],
        },
    )
    assert response.status_code == 201
    body = response.json()
    secret = body["client_secret"]
    assert len(secret) >= 32
    app_flow = flow.for_app(body["client_id"], secret, flow.redirect_uri)
    assert (await app_flow.exchange(await app_flow.code())).status_code == 200
    listed = (await flow.client.get("/_emulator/apps")).json()["apps"]
    assert all("client_secret" not in a for a in listed)


@pytest.mark.parametrize(
    "body",
    [
        {},  # no redirect URIs
        {"redirect_uris": []},
        {"redirect_uris": "http://127.0.0.1:8000/callback"},
        {"redirect_uris": ["/relative"]},
        {"redirect_uris": ["javascript:alert(1)"]},
        {"redirect_uris": ["http://127.0.0.1:8000/cb#frag"]},
        {"redirect_uris": ["http://x/cb"], "kind": "other"},
        {"redirect_uris": ["http://x/cb"], "kind": "scoped", "client_secret": "s3cret-value"},
        {"redirect_uris": ["http://x/cb"], "kind": "scoped", "scopes": ["users.read"]},
        {"redirect_uris": ["http://x/cb"], "scopes": ["users.read"]},
        {"redirect_uris": ["http://x/cb"], "kind": "scoped", "scopes": ["read"],
         "client_secret": "s3cret-value"},
        {"redirect_uris": ["http://x/cb"], "client_type": "public", "client_secret": "s3cret-v"},
        {"redirect_uris": ["http://x/cb"], "client_secret": "short"},
        {"redirect_uris": ["http://x/cb"], "client_id": "has space"},
        {"redirect_uris": ["http://x/cb"], "account": "nowhere"},
        {"redirect_uris": ["http://x/cb"], "name": 5},
    ],
)  # fmt: skip
async def test_bad_app_registrations_are_400(flow, body):
    response = await flow.client.post("/_emulator/apps", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    ("content", "ctype"),
    [
        (b"not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"a": 1}', "text/plain"),
        (b"\xff", "application/json"),
    ],
)
async def test_bad_json_bodies_are_400(flow, content, ctype):
    response = await flow.client.post(
        "/_emulator/apps", content=content, headers={"Content-Type": ctype}
    )
    assert response.status_code == 400


# -- authorize via the control API ----------------------------------------------------------------


async def test_control_authorize_reports_page_errors_as_400_json(flow):
    unknown = await flow.authorize(client_id="nobody")
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "invalid_client"
    bad_user = await flow.authorize(user="ghost@nowhere.example")
    assert bad_user.status_code == 400
    bad_decision = await flow.authorize(decision="perhaps")
    assert bad_decision.status_code == 400
    not_string = await flow.authorize(state=5)
    assert not_string.status_code == 400


async def test_control_authorize_defaults_to_approving_as_the_first_offered_user(flow):
    response = await flow.authorize(user=None, decision=None)
    code = flow.query(response.json()["redirect"])["code"]
    tokens = (await flow.exchange(code)).json()
    issued = flow.state.authenticate(tokens["access_token"])
    assert issued.user_id == flow.state.directory.find_user(flow.us_admin).id


async def test_user_may_be_given_by_id(flow):
    user = flow.state.directory.find_user(flow.eu_admin)
    tokens = await flow.tokens(user=user.id)
    assert flow.state.authenticate(tokens["access_token"]).user_id == user.id


# -- faults ---------------------------------------------------------------------------------------


async def test_faults_are_served_in_order_and_count_down(flow):
    tokens = await flow.tokens()
    for kind in ("503", "500"):
        added = await flow.client.post(
            "/_emulator/faults", json={"target": "token", "kind": kind, "count": 1}
        )
        assert added.status_code == 200
    assert added.json()["pending"] == {"token": 2, "rest": 0}
    assert (await flow.refresh(tokens["refresh_token"])).status_code == 503
    assert (await flow.refresh(tokens["refresh_token"])).status_code == 500
    assert (await flow.refresh(tokens["refresh_token"])).status_code == 200


async def test_rest_faults_hit_rest_requests_only(flow):
    tokens = await flow.tokens()
    added = await flow.client.post(
        "/_emulator/faults", json={"target": "rest", "kind": "503", "count": 2}
    )
    assert added.json()["pending"] == {"token": 0, "rest": 2}
    assert (await flow.refresh(tokens["refresh_token"])).status_code == 200
    fresh = await flow.tokens()
    assert (await flow.me(fresh["access_token"])).status_code == 503
    assert (await flow.me(fresh["access_token"])).status_code == 503
    assert (await flow.me(fresh["access_token"])).status_code == 200
    stats = (await flow.client.get("/_emulator/stats")).json()
    assert stats["faults_served"] == {"rest": {"503": 2}}


@pytest.mark.parametrize(
    "body",
    [
        {"target": "token"},
        {"kind": "500"},
        {"target": "db", "kind": "500"},
        {"target": "token", "kind": "418"},
        {"target": "token", "kind": "500", "count": 0},
        {"target": "token", "kind": "500", "count": 1.5},
        {"target": "token", "kind": "500", "count": "2"},
        {"target": "token", "kind": "500", "count": True},
        {"target": "token", "kind": "timeout", "delay": -1},
        {"target": "token", "kind": "timeout", "delay": 601},
        {"target": "token", "kind": "timeout", "delay": "1"},
    ],
)
async def test_bad_faults_are_400_and_queue_nothing(flow, body):
    response = await flow.client.post("/_emulator/faults", json=body)
    assert response.status_code == 400
    assert (await flow.client.get("/_emulator/faults")).json()["pending"] == {"token": 0, "rest": 0}


# -- revocation -----------------------------------------------------------------------------------


async def test_revoke_all_tokens_of_an_app(flow):
    a = await flow.tokens()
    b = await flow.tokens(user=flow.eu_admin)
    response = await flow.client.post("/_emulator/revoke", json={"client_id": "pdauth-demo"})
    assert response.json() == {"revoked": 2}
    for tokens in (a, b):
        assert flow.state.authenticate(tokens["access_token"]) is None
        assert (await flow.refresh(tokens["refresh_token"])).json()["error"] == "invalid_grant"
    # New authorizations work again afterwards.
    assert flow.state.authenticate((await flow.tokens())["access_token"]) is not None


async def test_revoke_one_users_delegation_by_email(flow):
    us = await flow.tokens()
    eu = await flow.tokens(user=flow.eu_admin)
    response = await flow.client.post(
        "/_emulator/revoke", json={"user": flow.eu_admin, "client_id": "pdauth-demo"}
    )
    assert response.json() == {"revoked": 1}
    assert flow.state.authenticate(eu["access_token"]) is None
    assert flow.state.authenticate(us["access_token"]) is not None
    stats = (await flow.client.get("/_emulator/stats")).json()
    assert stats["tokens_revoked"] == {"access": 1, "refresh": 1, "grant": 1}


@pytest.mark.parametrize("body", [{}, {"user": "ghost@nowhere.example"}, {"client_id": 3}])
async def test_bad_revoke_requests_are_400(flow, body):
    assert (await flow.client.post("/_emulator/revoke", json=body)).status_code == 400


# -- clock ----------------------------------------------------------------------------------------


async def test_clock_moves_forward_only(flow):
    before = (await flow.client.get("/_emulator/clock")).json()
    assert before == {"now": flow.start, "offset": 0.0}
    moved = await flow.client.post("/_emulator/clock", json={"advance": 90.5})
    assert moved.json() == {"now": flow.start + 90.5, "offset": 90.5}
    for bad in ({"advance": -1}, {"advance": "10"}, {"advance": None}, {"advance": 1e300}):
        assert (await flow.client.post("/_emulator/clock", json=bad)).status_code == 400
    assert flow.state.clock.now() == flow.start + 90.5


async def test_advancing_the_clock_expires_codes(flow):
    code = await flow.code()
    await flow.client.post("/_emulator/clock", json={"advance": 31})
    assert (await flow.exchange(code)).json()["error"] == "invalid_grant"


# -- stats and reset ------------------------------------------------------------------------------


async def test_stats_count_token_requests_authorize_decisions_and_issued_tokens(flow):
    tokens = await flow.tokens()
    await flow.refresh(tokens["refresh_token"])
    await flow.refresh("nope")
    await flow.token(grant_type="password")
    await flow.authorize(decision="deny")
    stats = (await flow.client.get("/_emulator/stats")).json()
    assert stats["token_requests"] == {
        "authorization_code": {"ok": 1},
        "refresh_token": {"ok": 1, "invalid_grant": 1},
        "password": {"unsupported_grant_type": 1},
    }
    assert stats["token_requests_total"] == 4
    assert stats["authorize_decisions"] == {"approved": 1, "denied": 1}
    assert stats["tokens_issued"] == {"access": 2, "refresh": 2, "code": 1, "id_token": 1}
    assert stats["refresh_reuse_detections"] == 0
    assert stats["rate_limited"] == {"total": 0, "with_headers": 0, "without_headers": 0}


async def test_stats_count_rest_requests_by_route_and_status(flow):
    tokens = await flow.tokens()
    await flow.me(tokens["access_token"])
    await flow.me("bogus")
    stats = (await flow.client.get("/_emulator/stats")).json()
    assert stats["rest_requests"]["GET /users/me"] == {"200": 1, "401": 1}


async def test_reset_forgets_tokens_but_keeps_apps_and_clock(flow):
    tokens = await flow.tokens()
    await flow.client.post("/_emulator/clock", json={"advance": 5})
    await flow.client.post("/_emulator/faults", json={"target": "token", "kind": "500"})
    assert (await flow.client.post("/_emulator/reset")).json() == {"reset": True}
    assert flow.state.authenticate(tokens["access_token"]) is None
    stats = (await flow.client.get("/_emulator/stats")).json()
    assert stats["token_requests_total"] == 0
    assert stats["faults_pending"] == {"token": 0, "rest": 0}
    assert flow.state.clock.now() == flow.start + 5
    assert flow.state.authenticate((await flow.tokens())["access_token"]) is not None


async def test_health(flow):
    assert (await flow.client.get("/_emulator/health")).json() == {"status": "ok"}
