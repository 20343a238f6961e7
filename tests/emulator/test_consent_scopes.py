"""The approving user can grant fewer scopes than the app asks for — on the consent page (its
"withhold" checkboxes) and through ``POST /_emulator/authorize`` (``scopes``) — and the token
response's ``scope`` and the REST API's scope checks follow exactly what was granted. Nothing
narrowed: everything requested, as before."""

from __future__ import annotations

from urllib.parse import urljoin

import pytest

from .conftest import FormReader

pytestmark = pytest.mark.anyio


async def _scoped_app(flow, scopes: list[str]):
    registered = await flow.client.post(
        "/_emulator/apps",
        json={
            "client_id": "narrowing",
            "client_secret": "s3cret-value",
            "kind": "scoped",
            "scopes": scopes,
            "redirect_uris": [flow.redirect_uri],
            "account": "acme",
        },
    )
    assert registered.status_code == 201, registered.text
    return flow.for_app("narrowing", "s3cret-value", flow.redirect_uri)


async def test_default_grants_everything_requested(flow):
    tokens = await flow.tokens(scope="read write")
    assert tokens["scope"] == "openid read write"


@pytest.mark.parametrize(
    ("approved", "expected"),
    [(["read"], "openid read"), ("write", "openid write"), ([], "openid")],
)
async def test_control_authorize_narrows_the_classic_grant(flow, approved, expected):
    tokens = await flow.tokens(scope="read write", scopes=approved)
    assert tokens["scope"] == expected
    refreshed = await flow.refresh(tokens["refresh_token"])
    assert refreshed.json()["scope"] == expected  # the grant itself is narrow


async def test_narrowed_scoped_grant_is_enforced_by_the_rest_api(flow):
    app_flow = await _scoped_app(flow, ["users.read", "webhook_subscriptions.write"])
    tokens = await app_flow.tokens(
        scope="users.read webhook_subscriptions.write", scopes=["users.read"]
    )
    assert tokens["scope"] == "openid users.read"
    headers = {"Authorization": f"Bearer {tokens['access_token']}", "Accept": flow.accept}
    assert (await flow.client.get("/users", headers=headers)).status_code == 200
    refused = await flow.client.post(
        "/webhook_subscriptions", headers=headers, json={"webhook_subscription": {}}
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["required_scopes"] == "webhook_subscriptions.write"

    # Asking again for the union, approved in full, upgrades (a new grant with both scopes).
    upgraded = await app_flow.tokens(scope="users.read webhook_subscriptions.write")
    assert upgraded["scope"] == "openid users.read webhook_subscriptions.write"


async def test_approving_a_scope_not_requested_is_refused(flow):
    response = await flow.authorize(scope="read", scopes=["read", "write"])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    bad = await flow.authorize(scope="read", scopes={"read": True})
    assert bad.status_code == 400


async def _open_page(flow, scope: str):
    page = await flow.client.get(
        "/oauth/authorize",
        params={
            "client_id": flow.client_id,
            "redirect_uri": flow.redirect_uri,
            "response_type": "code",
            "scope": scope,
        },
    )
    assert page.status_code == 200, page.text
    form = FormReader()
    form.feed(page.text)
    return page, form


async def _decide(flow, page, form, **fields):
    data = {**form.hidden, "user": form.options[0], "decision": "approve", **fields}
    answer = await flow.client.post(urljoin(str(page.url), form.action), data=data)
    assert answer.status_code == 303, answer.text
    code = flow.query(answer.headers["location"])["code"]
    exchanged = await flow.exchange(code)
    assert exchanged.status_code == 200, exchanged.text
    return exchanged.json()["scope"]


async def test_the_consent_page_offers_withhold_checkboxes_unticked(flow):
    page, form = await _open_page(flow, "read write")
    assert form.checkboxes == {"withhold:read": False, "withhold:write": False}
    assert await _decide(flow, page, form) == "openid read write"


async def test_ticking_withhold_on_the_page_narrows_the_grant(flow):
    page, form = await _open_page(flow, "read write")
    assert await _decide(flow, page, form, **{"withhold:write": "1"}) == "openid read"
    page, form = await _open_page(flow, "read write")
    both = {"withhold:read": "1", "withhold:write": "1"}
    assert await _decide(flow, page, form, **both) == "openid"
