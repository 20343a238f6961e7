"""Identity conformance: authorize checks, codes, PKCE, refresh rotation, client auth, grants."""

from __future__ import annotations

import base64
import json

import pytest

from pdauth.emulator.config import EmulatorConfig

pytestmark = pytest.mark.anyio


def _claims(jwt: str) -> dict[str, object]:
    payload = jwt.split(".")[1]
    decoded: dict[str, object] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


# -- the happy path ---------------------------------------------------------------------------


async def test_code_exchange_returns_pagerduty_shaped_tokens(flow):
    verifier, challenge = flow.pkce()
    code = await flow.code(challenge)
    response = await flow.exchange(code, verifier)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {
        "client_info", "id_token", "token_type", "access_token", "refresh_token", "scope",
        "expires_in",
    }  # fmt: skip
    assert body["client_info"] == "prefix_legacy_app"
    assert body["token_type"] == "bearer"
    assert body["access_token"].startswith("pdus+_0")
    assert body["refresh_token"].startswith("pdus+_1")
    assert body["scope"] == "openid read write"
    assert body["expires_in"] == 30 * 86400  # Classic access lifetime
    issued = flow.state.authenticate(body["access_token"])
    assert issued is not None
    assert issued.user_id == flow.state.directory.find_user(flow.us_admin).id
    assert issued.region == "us"
    me = await flow.me(body["access_token"])
    assert me.status_code == 200
    assert me.json()["user"]["email"] == flow.us_admin


async def test_classic_confidential_client_may_skip_pkce(flow):
    code = await flow.code()
    response = await flow.exchange(code)
    assert response.status_code == 200, response.text


async def test_state_is_echoed_only_when_sent(flow):
    with_state = await flow.authorize(state="opaque-123")
    assert flow.query(with_state.json()["redirect"])["state"] == "opaque-123"
    without = await flow.authorize()
    assert "state" not in flow.query(without.json()["redirect"])


async def test_redirect_keeps_an_existing_query_on_the_registered_uri(flow):
    uri = "http://127.0.0.1:8000/callback?tenant=7"
    registered = await flow.client.post(
        "/_emulator/apps",
        json={"client_id": "q-app", "client_secret": "s3cret-value", "redirect_uris": [uri]},
    )
    assert registered.status_code == 201
    response = await flow.for_app("q-app", "s3cret-value", uri).authorize(state="s")
    query = flow.query(response.json()["redirect"])
    assert query["tenant"] == "7"
    assert query["state"] == "s"
    assert "code" in query


# -- authorize validation -----------------------------------------------------------------------


async def test_unknown_client_gets_an_error_page_and_no_redirect(flow):
    response = await flow.client.get(
        "/oauth/authorize",
        params={
            "client_id": "nope",
            "redirect_uri": flow.redirect_uri,
            "response_type": "code",
            "state": "s",
        },
    )
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert "invalid_client" in response.text


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://evil.example/callback",
        "http://127.0.0.1:8000/callback/",  # exact match only, no prefix tolerance
        "http://127.0.0.1:8011/callback",
        "",
    ],
)
async def test_unregistered_redirect_uri_is_never_redirected_to(flow, redirect_uri):
    response = await flow.client.get(
        "/oauth/authorize",
        params={
            "client_id": flow.client_id,
            "redirect_uri": redirect_uri,
            "response_type": "token",
        },
    )
    assert response.status_code == 400
    assert "location" not in response.headers
    control = await flow.authorize(redirect_uri=redirect_uri)
    assert control.status_code == 400
    assert control.json()["error"] == "invalid_request"


async def test_wrong_response_type_redirects_only_after_redirect_uri_is_checked(flow):
    response = await flow.client.get(
        "/oauth/authorize",
        params={
            "client_id": flow.client_id,
            "redirect_uri": flow.redirect_uri,
            "response_type": "token",
            "state": "st",
        },
    )
    assert response.status_code == 302
    query = flow.query(response.headers["location"])
    assert response.headers["location"].startswith(flow.redirect_uri + "?")
    assert query == {
        "error": "unsupported_response_type",
        "error_description": query["error_description"],
        "state": "st",
    }


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"code_challenge": "x" * 43, "code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "x" * 43}, "invalid_request"),  # method defaults to plain: refused
        ({"code_challenge_method": "S256"}, "invalid_request"),
        ({"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request"),
        ({"response_type": None}, "invalid_request"),
        ({"response_type": "code token"}, "unsupported_response_type"),
    ],
)
async def test_bad_authorize_parameters_redirect_with_an_error(flow, extra, error):
    response = await flow.authorize(**extra)
    assert response.status_code == 200
    query = flow.query(response.json()["redirect"])
    assert query["error"] == error
    assert "code" not in query


async def test_repeated_parameter_is_refused(flow):
    response = await flow.client.get(
        "/oauth/authorize",
        params=[
            ("client_id", flow.client_id),
            ("redirect_uri", flow.redirect_uri),
            ("response_type", "code"),
            ("scope", "read"),
            ("scope", "write"),
        ],
    )
    assert response.status_code == 302
    assert flow.query(response.headers["location"])["error"] == "invalid_request"


async def test_scoped_apps_and_public_clients_must_use_pkce(flow):
    for body in (
        {"client_id": "scoped-1", "client_secret": "s3cret-value", "kind": "scoped",
         "scopes": ["users.read"], "redirect_uris": [flow.redirect_uri]},
        {"client_id": "public-1", "redirect_uris": [flow.redirect_uri]},
    ):  # fmt: skip
        assert (await flow.client.post("/_emulator/apps", json=body)).status_code == 201
        app_flow = flow.for_app(body["client_id"], body.get("client_secret"), flow.redirect_uri)
        refused = await app_flow.authorize(scope=" ".join(body.get("scopes", ["read"])))
        assert flow.query(refused.json()["redirect"])["error"] == "invalid_request"
        tokens = await app_flow.tokens(scope=" ".join(body.get("scopes", ["read"])))
        assert tokens["token_type"] == "bearer"


@pytest.mark.parametrize("scope", ["admin", "read bogus", "users.read", "", "READ"])
async def test_unknown_scope_is_not_an_error_but_grants_only_openid(flow, scope):
    tokens = await flow.tokens(scope=scope)
    assert tokens["scope"] == "openid"
    issued = flow.state.authenticate(tokens["access_token"])
    assert issued is not None
    assert issued.scopes == frozenset({"openid"})


async def test_scoped_app_grants_its_configured_scopes(flow):
    body = {
        "client_id": "scoped-2", "client_secret": "s3cret-value", "kind": "scoped",
        "scopes": ["users.read", "incidents.read"], "redirect_uris": [flow.redirect_uri],
    }  # fmt: skip
    assert (await flow.client.post("/_emulator/apps", json=body)).status_code == 201
    app_flow = flow.for_app("scoped-2", "s3cret-value", flow.redirect_uri)
    tokens = await app_flow.tokens(scope="users.read")
    assert tokens["scope"] == "openid users.read"
    assert tokens["expires_in"] == 86400  # Scoped access lifetime
    wider = await app_flow.tokens(scope="users.read users.write")
    assert wider["scope"] == "openid"


async def test_deny_via_control_api_redirects_access_denied(flow):
    response = await flow.authorize(decision="deny", state="abc")
    location = response.json()["redirect"]
    assert location == (
        flow.redirect_uri + "?error=access_denied&error_description=The+resource+owner+or+"
        "authorization+server+denied+the+request.&state=abc"
    )


async def test_scoped_app_pinned_to_an_account_refuses_other_accounts_users(flow):
    body = {
        "client_id": "scoped-eu", "client_secret": "s3cret-value", "kind": "scoped",
        "scopes": ["users.read"], "redirect_uris": [flow.redirect_uri], "account": "eurocorp",
    }  # fmt: skip
    assert (await flow.client.post("/_emulator/apps", json=body)).status_code == 201
    app_flow = flow.for_app("scoped-eu", "s3cret-value", flow.redirect_uri)
    _, challenge = flow.pkce()
    refused = await app_flow.authorize(
        user=flow.us_admin, code_challenge=challenge, code_challenge_method="S256"
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "access_denied"
    tokens = await app_flow.tokens(user=flow.eu_admin, scope="users.read")
    issued = flow.state.authenticate(tokens["access_token"])
    assert issued is not None
    assert issued.region == "eu"


# -- codes ----------------------------------------------------------------------------------------


async def test_reused_code_is_refused_and_revokes_the_tokens_it_issued(flow):
    verifier, challenge = flow.pkce()
    code = await flow.code(challenge)
    first = (await flow.exchange(code, verifier)).json()
    assert flow.state.authenticate(first["access_token"]) is not None

    again = await flow.exchange(code, verifier)

    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert flow.state.authenticate(first["access_token"]) is None
    assert (await flow.me(first["access_token"])).status_code == 401
    refreshed = await flow.refresh(first["refresh_token"])
    assert refreshed.json()["error"] == "invalid_grant"
    stats = (await flow.client.get("/_emulator/stats")).json()
    assert stats["refresh_reuse_detections"] == 1
    assert stats["tokens_revoked"]["grant"] == 1


async def test_code_expires_after_code_ttl(flow):
    verifier, challenge = flow.pkce()
    code = await flow.code(challenge)
    flow.state.clock.advance(30)
    expired = await flow.exchange(code, verifier)
    assert expired.status_code == 400
    assert expired.json()["error"] == "invalid_grant"


async def test_code_is_good_just_before_code_ttl(flow):
    verifier, challenge = flow.pkce()
    code = await flow.code(challenge)
    flow.state.clock.advance(29.9)
    assert (await flow.exchange(code, verifier)).status_code == 200


@pytest.mark.parametrize("emulator_config", [EmulatorConfig(code_ttl=600)])
async def test_code_ttl_is_configurable(flow):
    verifier, challenge = flow.pkce()
    code = await flow.code(challenge)
    flow.state.clock.advance(599)
    assert (await flow.exchange(code, verifier)).status_code == 200


async def test_wrong_verifier_is_invalid_grant_and_does_not_consume_the_code(flow):
    verifier, challenge = flow.pkce()
    other, _ = flow.pkce()
    code = await flow.code(challenge)
    for bad in (other, None, "short", verifier + "x"):
        refused = await flow.exchange(code, bad)
        assert refused.status_code == 400
        assert refused.json()["error"] == "invalid_grant"
    assert (await flow.exchange(code, verifier)).status_code == 200


async def test_verifier_for_a_code_without_challenge_is_refused(flow):
    code = await flow.code()
    verifier, _ = flow.pkce()
    assert (await flow.exchange(code, verifier)).json()["error"] == "invalid_grant"


async def test_code_is_bound_to_redirect_uri_and_client(flow):
    verifier, challenge = flow.pkce()
    code = await flow.code(challenge)
    wrong_uri = await flow.exchange(code, verifier, redirect_uri="http://localhost:8000/callback")
    assert wrong_uri.json()["error"] == "invalid_grant"
    registered = await flow.client.post(
        "/_emulator/apps",
        json={
            "client_id": "other",
            "client_secret": "0ther-secret",
            "redirect_uris": [flow.redirect_uri],
        },
    )
    assert registered.status_code == 201
    other = flow.for_app("other", "0ther-secret", flow.redirect_uri)
    assert (await other.exchange(code, verifier)).json()["error"] == "invalid_grant"
    assert (await flow.exchange(code, verifier)).status_code == 200


async def test_unknown_code_is_invalid_grant(flow):
    response = await flow.exchange("no-such-code")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


# -- refresh -------------------------------------------------------------------------------------


async def test_refresh_rotates_the_refresh_token_and_issues_a_new_access_token(flow):
    first = await flow.tokens()
    response = await flow.refresh(first["refresh_token"])
    assert response.status_code == 200
    second = response.json()
    assert set(second) == {"token_type", "access_token", "refresh_token", "scope", "expires_in"}
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["scope"] == first["scope"]
    assert flow.state.authenticate(second["access_token"]) is not None
    # Same delegation: the grant id carries over.
    assert (
        flow.state.authenticate(second["access_token"]).grant_id
        == flow.state.authenticate(first["access_token"]).grant_id
    )
    third = await flow.refresh(second["refresh_token"])
    assert third.status_code == 200


async def test_strict_reuse_of_a_rotated_refresh_token_revokes_the_whole_grant(flow):
    first = await flow.tokens()
    second = (await flow.refresh(first["refresh_token"])).json()

    replay = await flow.refresh(first["refresh_token"])

    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    for access in (first["access_token"], second["access_token"]):
        assert flow.state.authenticate(access) is None
    assert (await flow.refresh(second["refresh_token"])).json()["error"] == "invalid_grant"
    stats = (await flow.client.get("/_emulator/stats")).json()
    assert stats["refresh_reuse_detections"] == 1
    assert stats["token_requests"]["refresh_token"] == {"invalid_grant": 2, "ok": 1}


@pytest.mark.parametrize("emulator_config", [EmulatorConfig(refresh_reuse="lenient")])
async def test_lenient_reuse_only_refuses(flow):
    first = await flow.tokens()
    second = (await flow.refresh(first["refresh_token"])).json()

    replay = await flow.refresh(first["refresh_token"])

    assert replay.json()["error"] == "invalid_grant"
    assert flow.state.authenticate(second["access_token"]) is not None
    assert (await flow.refresh(second["refresh_token"])).status_code == 200
    assert (await flow.client.get("/_emulator/stats")).json()["refresh_reuse_detections"] == 1


@pytest.mark.parametrize(
    "emulator_config", [EmulatorConfig(access_token_ttl=60, refresh_token_ttl=600)]
)
async def test_lifetimes_follow_config_and_expire_on_the_emulator_clock(flow):
    first = await flow.tokens()
    assert first["expires_in"] == 60
    flow.state.clock.advance(60)
    assert flow.state.authenticate(first["access_token"]) is None
    assert (await flow.me(first["access_token"])).status_code == 401
    second = (await flow.refresh(first["refresh_token"])).json()
    assert flow.state.authenticate(second["access_token"]) is not None
    flow.state.clock.advance(600)
    assert (await flow.refresh(second["refresh_token"])).json()["error"] == "invalid_grant"


async def test_refresh_token_of_another_client_is_invalid_grant(flow):
    first = await flow.tokens()
    registered = await flow.client.post(
        "/_emulator/apps",
        json={
            "client_id": "other",
            "client_secret": "0ther-secret",
            "redirect_uris": [flow.redirect_uri],
        },
    )
    assert registered.status_code == 201
    other = flow.for_app("other", "0ther-secret", flow.redirect_uri)
    assert (await other.refresh(first["refresh_token"])).json()["error"] == "invalid_grant"
    # The legitimate client is unaffected.
    assert (await flow.refresh(first["refresh_token"])).status_code == 200


# -- client authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [
        ("pdauth-demo", "wrong"),
        ("pdauth-demo", None),
        ("pdauth-demo", ""),
        ("nobody", "x"),
        ("", None),
    ],
)
async def test_bad_client_credentials_are_invalid_client_401(flow, client_id, secret):
    code = await flow.code()
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": flow.redirect_uri,
            "client_id": client_id}  # fmt: skip
    if secret is not None:
        form["client_secret"] = secret
    response = await flow.client.post("/oauth/token", data=form)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    # The code survives a failed client authentication.
    assert (await flow.exchange(code)).status_code == 200


async def test_http_basic_client_authentication_is_accepted(flow):
    code = await flow.code()
    basic = base64.b64encode(b"pdauth-demo:pdauth-demo-secret").decode()
    response = await flow.client.post(
        "/oauth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": flow.redirect_uri},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200, response.text
    bad = base64.b64encode(b"pdauth-demo:nope").decode()
    refused = await flow.client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": response.json()["refresh_token"]},
        headers={"Authorization": f"Basic {bad}"},
    )
    assert refused.status_code == 401
    assert "www-authenticate" in refused.headers


async def test_public_client_uses_no_secret_and_may_not_send_one(flow):
    registered = await flow.client.post(
        "/_emulator/apps", json={"client_id": "cli-app", "redirect_uris": [flow.redirect_uri]}
    )
    assert registered.json()["client_type"] == "public"
    public = flow.for_app("cli-app", None, flow.redirect_uri)
    tokens = await public.tokens(scope="read")
    assert tokens["scope"] == "openid read"
    assert (await public.refresh(tokens["refresh_token"])).status_code == 200
    with_secret = flow.for_app("cli-app", "made-up-secret", flow.redirect_uri)
    assert (await with_secret.refresh(tokens["refresh_token"])).status_code == 401


# -- client credentials ----------------------------------------------------------------------------


async def _scoped_private_app(flow, **extra):
    body = {
        "client_id": "scoped-cc", "client_secret": "s3cret-value", "kind": "scoped",
        "scopes": ["users.read", "incidents.read"], "redirect_uris": [flow.redirect_uri], **extra,
    }  # fmt: skip
    assert (await flow.client.post("/_emulator/apps", json=body)).status_code == 201
    return flow.for_app("scoped-cc", "s3cret-value", flow.redirect_uri)


@pytest.mark.parametrize(
    "scope",
    [
        None,
        "",
        "users.read",
        "as_account-us.nosuchco users.read",
        "as_account-eu.acme users.read",  # acme is a US account
        "as_account-us.acme as_account-eu.eurocorp",
        "as_account-xx.acme",
    ],
)
async def test_client_credentials_needs_an_as_account_scope(flow, scope):
    app = await _scoped_private_app(flow)
    response = await app.token(grant_type="client_credentials", scope=scope)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "error_description": "Invalid scope"}


async def test_client_credentials_issues_an_app_token_without_refresh_or_id_token(flow):
    app = await _scoped_private_app(flow)
    response = await app.token(
        grant_type="client_credentials", scope="as_account-eu.eurocorp users.read"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "scope", "token_type", "expires_in"}
    assert body["scope"] == "as_account-eu.eurocorp users.read"
    assert body["expires_in"] == 86400
    issued = flow.state.authenticate(body["access_token"])
    assert issued is not None
    assert issued.user_id is None
    assert issued.region == "eu"
    # A EU token on the US host fails; on the EU mount it works.
    headers = {"Authorization": f"Bearer {body['access_token']}", "Accept": flow.accept}
    assert (await flow.client.get("/users", headers=headers)).status_code == 401
    assert (await flow.client.get("/eu/users", headers=headers)).status_code == 200


async def test_client_credentials_refuses_unconfigured_scopes_and_classic_apps(flow):
    app = await _scoped_private_app(flow)
    wider = await app.token(grant_type="client_credentials", scope="as_account-us.acme users.write")
    assert wider.json()["error"] == "invalid_scope"
    classic = await flow.token(grant_type="client_credentials", scope="as_account-us.acme")
    assert classic.status_code == 400
    assert classic.json()["error"] == "unauthorized_client"


async def test_client_credentials_is_limited_to_the_apps_own_account(flow):
    app = await _scoped_private_app(flow, account="acme")
    own = await app.token(grant_type="client_credentials", scope="as_account-us.acme users.read")
    assert own.status_code == 200
    other = await app.token(grant_type="client_credentials", scope="as_account-eu.eurocorp")
    assert other.json()["error_description"] == "Invalid scope"


# -- grants and revocation ------------------------------------------------------------------------


async def test_state_revoke_by_client_and_by_user(flow):
    a = await flow.tokens()
    b = await flow.tokens(user=flow.eu_admin)
    eu_user = flow.state.directory.find_user(flow.eu_admin)
    assert flow.state.revoke(user_id=eu_user.id) == 1
    assert flow.state.authenticate(b["access_token"]) is None
    assert flow.state.authenticate(a["access_token"]) is not None
    assert flow.state.revoke(client_id=flow.client_id) == 1
    assert flow.state.authenticate(a["access_token"]) is None
    assert flow.state.revoke(client_id=flow.client_id) == 0


async def test_eu_user_token_is_for_the_eu_region(flow):
    tokens = await flow.tokens(user=flow.eu_admin)
    assert (await flow.me(tokens["access_token"])).status_code == 401
    me = await flow.me(tokens["access_token"], prefix="/eu")
    assert me.status_code == 200
    assert me.json()["user"]["email"] == flow.eu_admin


# -- revocation endpoint (not PagerDuty) ----------------------------------------------------------


async def test_revocation_endpoint_is_off_by_default(flow):
    tokens = await flow.tokens()
    response = await flow.client.post(
        "/oauth/revoke", data=flow.form(token=tokens["refresh_token"])
    )
    # Nothing at that path: the request falls through to the REST API, which refuses it.
    assert response.status_code in (401, 404)
    assert flow.state.authenticate(tokens["access_token"]) is not None
    assert (await flow.refresh(tokens["refresh_token"])).status_code == 200


@pytest.mark.parametrize("emulator_config", [EmulatorConfig(revocation_endpoint=True)])
async def test_revocation_endpoint_rfc7009(flow):
    tokens = await flow.tokens()
    unknown = await flow.client.post("/oauth/revoke", data=flow.form(token="pdus+_1nothing"))
    assert unknown.status_code == 200
    no_client = await flow.client.post("/oauth/revoke", data={"token": tokens["access_token"]})
    assert no_client.status_code == 401
    assert flow.state.authenticate(tokens["access_token"]) is not None

    access_only = await flow.client.post(
        "/oauth/revoke", data=flow.form(token=tokens["access_token"])
    )
    assert access_only.status_code == 200
    assert flow.state.authenticate(tokens["access_token"]) is None
    assert (await flow.refresh(tokens["refresh_token"])).status_code == 200

    fresh = await flow.tokens()
    revoked = await flow.client.post("/oauth/revoke", data=flow.form(token=fresh["refresh_token"]))
    assert revoked.status_code == 200
    assert flow.state.authenticate(fresh["access_token"]) is None
    assert (await flow.refresh(fresh["refresh_token"])).json()["error"] == "invalid_grant"
    discovery = await flow.client.get("/global/oauth/anonymous/.well-known/openid-configuration")
    assert discovery.json()["revocation_endpoint"] == "http://emulator/oauth/revoke"


# -- token endpoint input handling -----------------------------------------------------------------


async def test_grant_type_missing_or_unsupported(flow):
    missing = await flow.token()
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"
    password = await flow.token(grant_type="password", username="a", password="b")
    assert password.status_code == 400
    assert password.json()["error"] == "unsupported_grant_type"


async def test_token_endpoint_wants_a_form(flow):
    as_json = await flow.client.post("/oauth/token", json=flow.form(grant_type="refresh_token"))
    assert as_json.status_code == 400
    assert as_json.json()["error"] == "invalid_request"
    multipart = await flow.client.post(
        "/oauth/token", files={"grant_type": (None, "refresh_token")}
    )
    assert multipart.status_code == 400


async def test_token_endpoint_caps_the_body(flow):
    huge = await flow.client.post(
        "/oauth/token",
        content=b"grant_type=refresh_token&refresh_token=" + b"a" * 20_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert huge.status_code == 413
    assert huge.json()["error"] == "invalid_request"


async def test_token_endpoint_refuses_repeated_parameters(flow):
    response = await flow.client.post(
        "/oauth/token",
        content=b"grant_type=refresh_token&grant_type=authorization_code&client_id=pdauth-demo",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_form_encoded_plus_in_tokens_survives_and_raw_plus_does_not(flow):
    tokens = await flow.tokens()
    raw = (
        "grant_type=refresh_token&client_id=pdauth-demo&client_secret=pdauth-demo-secret"
        f"&refresh_token={tokens['refresh_token']}"  # '+' not encoded: becomes a space
    )
    broken = await flow.client.post(
        "/oauth/token",
        content=raw.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert broken.json()["error"] == "invalid_grant"
    assert (await flow.refresh(tokens["refresh_token"])).status_code == 200


# -- faults on the token endpoint ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "error"),
    [("500", 500, "server_error"), ("503", 503, "temporarily_unavailable")],
)
async def test_5xx_faults_answer_without_processing(flow, kind, status, error):
    tokens = await flow.tokens()
    flow.state.faults.add("token", kind)
    failed = await flow.refresh(tokens["refresh_token"])
    assert failed.status_code == status
    assert failed.json()["error"] == error
    # Not processed: the refresh token was not rotated.
    assert (await flow.refresh(tokens["refresh_token"])).status_code == 200


async def test_timeout_fault_answers_504_without_processing(flow):
    tokens = await flow.tokens()
    flow.state.faults.add("token", "timeout", delay=0.0)
    failed = await flow.refresh(tokens["refresh_token"])
    assert failed.status_code == 504
    assert (await flow.refresh(tokens["refresh_token"])).status_code == 200


async def test_drop_fault_processes_then_loses_the_answer(flow):
    tokens = await flow.tokens()
    flow.state.faults.add("token", "drop")
    lost = await flow.refresh(tokens["refresh_token"])
    assert lost.status_code == 502
    assert lost.content == b""
    assert "json" not in lost.headers.get("content-type", "")
    # Processed: the presented refresh token was rotated, so presenting it again is a reuse
    # and (strict) revokes the grant, including the access token the client never saw.
    replay = await flow.refresh(tokens["refresh_token"])
    assert replay.json()["error"] == "invalid_grant"
    assert flow.state.authenticate(tokens["access_token"]) is None
    stats = (await flow.client.get("/_emulator/stats")).json()
    assert stats["faults_served"] == {"token": {"drop": 1}}


@pytest.mark.parametrize(("length", "status"), [("9" * 5000, 413), ("abc", 400), ("-1", 400)])
async def test_token_endpoint_refuses_a_bogus_content_length(flow, length, status):
    response = await flow.client.post(
        "/oauth/token",
        content=b"grant_type=refresh_token",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Content-Length": length},
    )
    assert response.status_code == status
    assert response.json()["error"] == "invalid_request"
