"""Step 11 hardening in the service: who may read /metrics (PDAUTH_METRICS_TOKEN, else loopback
only, proxies believed only when trusted), and the per-owner limit on the "Call PagerDuty"
panel, which spends the owner's PagerDuty rate limit and may refresh tokens."""

from __future__ import annotations

import time

import httpx
import pytest

from pdauth.clock import FrozenClock
from tests.service.conftest import AppFactory, BrowserFactory, connect, make_settings

pytestmark = pytest.mark.anyio

METRICS_TOKEN = "metrics-token-for-tests-0123456789abcdef"


async def test_with_a_metrics_token_only_its_bearer_may_scrape(
    app_factory: AppFactory, browser_factory: BrowserFactory, settings
) -> None:
    app = app_factory(settings_=make_settings(settings.database_url, metrics_token=METRICS_TOKEN))
    local = browser_factory(None, target=app)
    assert (await local.get("/metrics")).status_code == 401  # loopback is not enough now
    wrong = await local.get("/metrics", headers={"authorization": "Bearer " + "x" * 40})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == "Bearer"
    remote = browser_factory(None, target=app, peer="203.0.113.9")
    scraped = await remote.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    assert scraped.status_code == 200
    assert "pdauth_refreshes_total" in scraped.text


async def test_without_a_token_metrics_are_for_loopback_only(
    app_factory: AppFactory, browser_factory: BrowserFactory, settings
) -> None:
    app = app_factory(settings_=make_settings(settings.database_url, trusted_proxies="10.0.0.1"))
    assert (await browser_factory(None, target=app).get("/metrics")).status_code == 200
    ipv6 = browser_factory(None, target=app, peer="::1")
    assert (await ipv6.get("/metrics")).status_code == 200
    remote = await browser_factory(None, target=app, peer="203.0.113.9").get("/metrics")
    assert remote.status_code == 403
    assert "PDAUTH_METRICS_TOKEN" in remote.text
    assert "pdauth_" not in remote.text
    # A client claiming loopback in X-Forwarded-For is not believed from an untrusted peer ...
    spoofed = await browser_factory(None, target=app, peer="203.0.113.9").get(
        "/metrics", headers={"x-forwarded-for": "127.0.0.1"}
    )
    assert spoofed.status_code == 403
    # ... and a trusted proxy forwarding a remote client is that remote client.
    proxied = await browser_factory(None, target=app, peer="10.0.0.1").get(
        "/metrics", headers={"x-forwarded-for": "198.51.100.7"}
    )
    assert proxied.status_code == 403


async def test_the_call_pagerduty_panel_is_rate_limited_per_owner(
    app_factory: AppFactory, browser_factory: BrowserFactory, emulator_client: httpx.AsyncClient
) -> None:
    clock = FrozenClock(current=time.time())
    app = app_factory(clock=clock)
    alice = browser_factory("alice", target=app)
    await connect(alice, emulator_client)
    home = await alice.get("/")
    connection_id = home.text.split('href="/connections/')[1].split('"')[0]
    url = f"/connections/{connection_id}"
    answers = [(await alice.get(url, params={"try": "1"})).status_code for _ in range(11)]
    assert answers[:10] == [200] * 10
    assert answers[10] == 429
    limited = await alice.get(url, params={"try": "1"})
    assert int(limited.headers["retry-after"]) >= 1
    assert (await alice.get(url)).status_code == 200  # viewing the page is not limited
    # Another owner has their own budget.
    bob = browser_factory("bob", target=app)
    await connect(bob, emulator_client)
    bobs = (await bob.get("/")).text.split('href="/connections/')[1].split('"')[0]
    assert (await bob.get(f"/connections/{bobs}", params={"try": "1"})).status_code == 200
    # The budget comes back with time.
    clock.advance(60)
    assert (await alice.get(url, params={"try": "1"})).status_code == 200
