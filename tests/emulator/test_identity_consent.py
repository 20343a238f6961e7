"""The login + consent page, driven over HTTP the way a browser submits its form."""

from __future__ import annotations

from urllib.parse import urljoin

import pytest

from .conftest import FormReader

pytestmark = pytest.mark.anyio


def _params(flow, **extra):
    params = {
        "client_id": flow.client_id,
        "redirect_uri": flow.redirect_uri,
        "response_type": "code",
        "scope": "read write",
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


async def _open(flow, **extra):
    page = await flow.client.get("/oauth/authorize", params=_params(flow, **extra))
    assert page.status_code == 200, page.text
    form = FormReader()
    form.feed(page.text)
    return page, form


async def _submit(flow, page, form, **fields):
    data = {**form.hidden, "user": form.selected or "", **fields}
    target = urljoin(str(page.url), form.action)
    return await flow.client.post(target, data=data)


async def test_approving_on_the_page_redirects_with_a_code_that_exchanges(flow):
    verifier, challenge = flow.pkce()
    page, form = await _open(
        flow, state="xyz", code_challenge=challenge, code_challenge_method="S256"
    )
    assert form.buttons == {"approve": "decision", "deny": "decision"}
    assert flow.us_admin in form.options
    assert flow.eu_admin in form.options  # the EU admin is offered too
    assert len(form.options) == 21

    response = await _submit(flow, page, form, decision="approve", user=flow.eu_admin)

    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(flow.redirect_uri + "?code=")
    query = flow.query(location)
    assert query["state"] == "xyz"
    tokens = await flow.exchange(query["code"], verifier)
    assert tokens.status_code == 200
    issued = flow.state.authenticate(tokens.json()["access_token"])
    assert issued.user_id == flow.state.directory.find_user(flow.eu_admin).id


async def test_denying_on_the_page_redirects_access_denied(flow):
    page, form = await _open(flow, state="st")
    response = await _submit(flow, page, form, decision="deny")
    assert response.status_code == 303
    query = flow.query(response.headers["location"])
    assert query == {
        "error": "access_denied",
        "error_description": "The resource owner or authorization server denied the request.",
        "state": "st",
    }


async def test_a_consent_page_can_be_submitted_once(flow):
    page, form = await _open(flow)
    assert (await _submit(flow, page, form, decision="approve")).status_code == 303
    again = await _submit(flow, page, form, decision="approve")
    assert again.status_code == 400
    assert "location" not in again.headers


async def test_a_forged_or_missing_consent_nonce_is_refused(flow):
    page, form = await _open(flow)
    forged = await _submit(flow, page, form, decision="approve", consent="forged")
    assert forged.status_code == 400
    missing = await flow.client.post(
        "/oauth/authorize/decision", data={"decision": "approve", "user": flow.us_admin}
    )
    assert missing.status_code == 400
    assert "location" not in missing.headers


async def test_a_consent_page_expires(flow):
    page, form = await _open(flow)
    flow.state.clock.advance(601)
    expired = await _submit(flow, page, form, decision="approve")
    assert expired.status_code == 400
    assert "expired" in expired.text


async def test_unknown_user_or_decision_is_an_error_page(flow):
    page, form = await _open(flow)
    unknown = await _submit(flow, page, form, decision="approve", user="ghost@nowhere.example")
    assert unknown.status_code == 400
    page, form = await _open(flow)
    undecided = await _submit(flow, page, form, decision="maybe")
    assert undecided.status_code == 400


async def test_the_page_shows_the_app_and_scopes_and_keeps_secrets_out_of_html(flow):
    _, challenge = flow.pkce()
    page, form = await _open(
        flow,
        state="state-value-not-for-html",
        code_challenge=challenge,
        code_challenge_method="S256",
        scope="read",
    )
    html = page.text
    assert "pdauth demo" in html
    assert "<code>read</code>" in html
    assert "<code>openid</code>" in html
    assert "state-value-not-for-html" not in html
    assert challenge not in html
    assert set(form.hidden) == {"consent"}
    assert form.select_id in form.labels  # the select is labelled
    assert '<html lang="en">' in html
    assert "<script" not in html
    headers = page.headers
    assert headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"


async def test_unknown_scope_is_flagged_on_the_page(flow):
    page, _ = await _open(flow, scope="read admin")
    assert "only" in page.text
    assert "<code>read</code>" not in page.text


async def test_app_names_are_escaped(flow):
    registered = await flow.client.post(
        "/_emulator/apps",
        json={
            "client_id": "xss-app",
            "client_secret": "s3cret-value",
            "name": "<script>alert(1)</script>",
            "redirect_uris": [flow.redirect_uri],
        },
    )
    assert registered.status_code == 201
    page = await flow.client.get(
        "/oauth/authorize",
        params={"client_id": "xss-app", "redirect_uri": flow.redirect_uri, "response_type": "code"},
    )
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text


async def test_an_app_pinned_to_the_eu_account_offers_eu_users(flow):
    body = {
        "client_id": "scoped-eu", "client_secret": "s3cret-value", "kind": "scoped",
        "scopes": ["users.read"], "redirect_uris": [flow.redirect_uri], "account": "PEURO01",
    }  # fmt: skip
    assert (await flow.client.post("/_emulator/apps", json=body)).status_code == 201
    _, challenge = flow.pkce()
    page = await flow.client.get(
        "/oauth/authorize",
        params={
            "client_id": "scoped-eu",
            "redirect_uri": flow.redirect_uri,
            "response_type": "code",
            "scope": "users.read",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
    )
    form = FormReader()
    form.feed(page.text)
    eu_emails = {u.email for u in flow.state.directory.users_of("PEURO01")}
    assert form.options
    assert set(form.options) <= eu_emails
    assert flow.us_admin not in form.options


async def test_a_hostile_decision_body_is_a_clean_4xx(flow):
    for content, ctype in [
        (b"\xff\xfe", "application/x-www-form-urlencoded"),
        (b"a" * 20_000, "application/x-www-form-urlencoded"),
        (b'{"consent": "x"}', "application/json"),
    ]:
        response = await flow.client.post(
            "/oauth/authorize/decision", content=content, headers={"Content-Type": ctype}
        )
        assert 400 <= response.status_code < 500
        assert response.headers["content-type"].startswith("text/html")
