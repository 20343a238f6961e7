"""Prometheus metrics: values after a scripted flow against the emulator, labels that never carry
ids or secrets, the connections-by-status collector and its cache, and the /metrics ASGI app.

The process-wide counters are shared by every test in the process, so flows are checked as
differences between two scrapes; the connection gauge reads the test's own database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pdauth.clock import FrozenClock
from pdauth.errors import (
    AuthorizationDeniedError,
    BindingMismatchError,
    CallbackError,
    FlowExpiredError,
    NeedsReauthError,
    UnknownStateError,
)
from pdauth.metrics import (
    CALLBACK_OUTCOMES,
    metrics_app,
    metrics_registry,
    observe_api,
    observe_callback,
    observe_outbox,
    observe_pacing_delay,
    observe_rate_limited,
    observe_redis_outage,
    observe_refresh,
    observe_token_latency,
    refresh_reason,
    refreshing_because,
)
from pdauth.service.scrape import ConnectionStatusCollector, service_registry
from pdauth.store import Store
from tests.workers.harness import Harness, harness

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(app: object) -> str:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://metrics.test",
    ) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


@pytest.fixture
async def h(tmp_path: os.PathLike[str]) -> AsyncIterator[Harness]:
    async with harness("sqlite:///" + os.path.join(os.fspath(tmp_path), "m.db")) as h:
        yield h


# -- a scripted flow ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_scripted_flow_shows_up_in_the_scrape(h: Harness) -> None:
    app = metrics_app(service_registry(h.store, clock=h.clock))
    before = parse(await scrape(app))

    # A successful connect (one code exchange), then each kind of refresh.
    conn = await h.connect("owner-metrics")
    await h.connector.tokens.force_refresh(conn.id)  # reason: forced
    token = await h.connector.access_token(conn.id)
    await h.connector.tokens.refresh_rejected(conn.id, token)  # reason: rejected (a 401)
    h.advance(170 * 86_400)  # the refresh token nears its idle expiry (Classic: 210 days)
    report = await h.connector.refresh_due()
    assert report.refreshed == 1  # reason: idle

    # A denied consent, a callback from another browser, and a malformed one.
    start = await h.connector.begin("owner-metrics")
    denied = await h.authorize(start, decision="deny")
    with pytest.raises(AuthorizationDeniedError):
        await h.connector.complete(denied, start.binding)
    start = await h.connector.begin("owner-metrics")
    approved = await h.authorize(start)
    with pytest.raises(BindingMismatchError):
        await h.connector.complete(approved, "another-browser")
    with pytest.raises(CallbackError):
        await h.connector.complete("code=&state=", start.binding)

    text = await scrape(app)
    after = parse(text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("pdauth_callbacks_total", outcome="success") == 1
    assert delta("pdauth_callbacks_total", outcome="denied") == 1
    assert delta("pdauth_callbacks_total", outcome="binding_mismatch") == 1
    assert delta("pdauth_callbacks_total", outcome="invalid") == 1
    assert delta("pdauth_callbacks_total", outcome="expired") == 0
    for reason in ("forced", "rejected", "idle"):
        assert delta("pdauth_refreshes_total", outcome="success", reason=reason) == 1, reason
    assert delta("pdauth_refreshes_total", outcome="success", reason="expiry") == 0
    assert delta("pdauth_refreshes_total", outcome="invalid_grant", reason="forced") == 0
    # Latency histograms count every token-endpoint call (a frozen clock measures 0 s).
    assert (
        delta("pdauth_token_request_duration_seconds_count", grant_type="authorization_code") == 1
    )
    assert delta("pdauth_token_request_duration_seconds_count", grant_type="refresh_token") == 3
    assert (
        delta("pdauth_token_request_duration_seconds_bucket", grant_type="refresh_token", le="0.05")
        == 3
    )
    assert value(after, "pdauth_connections", status="active") == 1
    assert value(after, "pdauth_connections", status="needs_reauth") == 0
    assert value(after, "pdauth_store_up") == 1

    # Nothing that identifies a connection, and no token, ever reaches a label.
    assert conn.id not in text
    assert "owner-metrics" not in text
    assert token not in text
    assert (await h.connector.access_token(conn.id)) not in text


@pytest.mark.anyio
async def test_a_refused_refresh_is_counted_as_invalid_grant(h: Harness) -> None:
    registry = service_registry(h.store, clock=h.clock)
    conn = await h.connect("owner-dead")
    before = registry.get_sample_value(
        "pdauth_refreshes_total", {"outcome": "invalid_grant", "reason": "forced"}
    )
    await h.revoke_all()  # the user revoked pdauth's access inside PagerDuty
    with pytest.raises(NeedsReauthError):
        await h.connector.tokens.force_refresh(conn.id)
    after = registry.get_sample_value(
        "pdauth_refreshes_total", {"outcome": "invalid_grant", "reason": "forced"}
    )
    assert before is not None
    assert after == before + 1
    h.advance(10)  # past the collector's cache
    assert registry.get_sample_value("pdauth_connections", {"status": "needs_reauth"}) == 1
    assert registry.get_sample_value("pdauth_connections", {"status": "active"}) == 0


@pytest.mark.anyio
async def test_an_expired_flow_is_counted_as_expired(h: Harness) -> None:
    registry = metrics_registry()
    before = registry.get_sample_value("pdauth_callbacks_total", {"outcome": "expired"})
    start = await h.connector.begin("owner-late")
    query = await h.authorize(start)
    h.advance(601)  # the pending authorization lives 10 minutes
    with pytest.raises(FlowExpiredError):
        await h.connector.complete(query, start.binding)
    assert registry.get_sample_value("pdauth_callbacks_total", {"outcome": "expired"}) == (
        (before or 0) + 1
    )


# -- the connections collector ------------------------------------------------------------


@pytest.mark.anyio
async def test_connection_counts_are_cached_for_a_few_seconds(h: Harness) -> None:
    registry = service_registry(h.store, clock=h.clock, cache_seconds=5)
    conn = await h.connect("owner-cache")
    assert registry.get_sample_value("pdauth_connections", {"status": "active"}) == 1
    await h.connector.disconnect(conn.id)
    h.advance(4)
    assert registry.get_sample_value("pdauth_connections", {"status": "active"}) == 1  # cached
    h.advance(2)
    assert registry.get_sample_value("pdauth_connections", {"status": "active"}) == 0
    assert registry.get_sample_value("pdauth_connections", {"status": "revoked"}) == 1


def test_counts_come_from_the_store_on_both_backends(store: Store) -> None:
    collector = ConnectionStatusCollector(store, clock=FrozenClock())
    [up, gauge] = list(collector.collect())
    assert up.samples[0].value == 1
    assert {s.labels["status"]: s.value for s in gauge.samples} == {
        "active": 0,
        "needs_reauth": 0,
        "revoked": 0,
    }


def test_an_unreadable_database_reports_store_down_and_the_scrape_still_works(
    tmp_path: os.PathLike[str],
) -> None:
    broken = Store("sqlite:///" + os.path.join(os.fspath(tmp_path), "never-migrated.db"))
    try:
        registry = service_registry(broken, clock=FrozenClock())
        assert registry.get_sample_value("pdauth_store_up") == 0
        assert registry.get_sample_value("pdauth_connections", {"status": "active"}) is None
        # The process metrics are still served.
        assert (
            registry.get_sample_value("pdauth_callbacks_total", {"outcome": "success"}) is not None
        )
    finally:
        broken.dispose()


# -- the observation functions ------------------------------------------------------------


def test_api_requests_keep_only_the_method_and_status_class() -> None:
    registry = metrics_registry()

    def count(method: str, status_class: str) -> float:
        found = registry.get_sample_value(
            "pdauth_api_requests_total", {"method": method, "status_class": status_class}
        )
        return found or 0.0

    before = (
        count("GET", "2xx"),
        count("GET", "4xx"),
        count("OTHER", "error"),
        count("POST", "error"),
    )
    observe_api("get", 200)
    observe_api("GET", 204)
    observe_api("GET", 404)
    observe_api("BREW /incidents/PXYZ123", None)  # an odd method never becomes a label
    observe_api("POST", 999)  # not an HTTP status: no new label either
    assert count("GET", "2xx") == before[0] + 2
    assert count("GET", "4xx") == before[1] + 1
    assert count("OTHER", "error") == before[2] + 1
    assert count("POST", "error") == before[3] + 1


def test_rate_limits_count_429s_and_observe_the_delays() -> None:
    registry = metrics_registry()

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    limited = sample("pdauth_api_rate_limited_total")
    after_429 = sample("pdauth_api_pacing_delay_seconds_count", cause="429")
    paced = sample("pdauth_api_pacing_delay_seconds_count", cause="pacer")
    total = sample("pdauth_api_pacing_delay_seconds_sum", cause="429")
    observe_rate_limited(2.5)
    observe_rate_limited(float("nan"))  # nonsense is observed as 0, never raises
    observe_pacing_delay(0.2)
    assert sample("pdauth_api_rate_limited_total") == limited + 2
    assert sample("pdauth_api_pacing_delay_seconds_count", cause="429") == after_429 + 2
    assert sample("pdauth_api_pacing_delay_seconds_sum", cause="429") == total + 2.5
    assert sample("pdauth_api_pacing_delay_seconds_count", cause="pacer") == paced + 1


def test_redis_outages_are_counted_and_the_degraded_gauge_follows() -> None:
    registry = metrics_registry()

    def sample(name: str) -> float:
        return registry.get_sample_value(name) or 0.0

    outages = sample("pdauth_redis_outages_total")
    observe_redis_outage(True)
    assert sample("pdauth_redis_pacing_degraded") == 1
    observe_redis_outage(False)
    assert sample("pdauth_redis_pacing_degraded") == 0
    assert sample("pdauth_redis_outages_total") == outages + 1


def test_unknown_label_values_fall_back_to_fixed_ones() -> None:
    registry = metrics_registry()

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    error = sample("pdauth_callbacks_total", outcome="error")
    observe_callback("a-token-like-value")
    assert sample("pdauth_callbacks_total", outcome="error") == error + 1
    failed = sample("pdauth_refreshes_total", outcome="error", reason="expiry")
    observe_refresh("weird", "weirder")
    assert sample("pdauth_refreshes_total", outcome="error", reason="expiry") == failed + 1
    other = sample("pdauth_token_request_duration_seconds_count", grant_type="other")
    observe_token_latency("urn:secret-grant", 0.1)
    assert sample("pdauth_token_request_duration_seconds_count", grant_type="other") == other + 1
    skipped = sample("pdauth_outbox_deliveries_total", kind="webhook", outcome="skipped")
    observe_outbox("webhook", "skipped")
    assert (
        sample("pdauth_outbox_deliveries_total", kind="webhook", outcome="skipped") == skipped + 1
    )
    text = "\n".join(str(s) for f in registry.collect() for s in f.samples)
    assert "a-token-like-value" not in text
    assert "urn:secret-grant" not in text


def test_every_callback_outcome_exists_from_the_start() -> None:
    registry = metrics_registry()
    for outcome in CALLBACK_OUTCOMES:
        assert registry.get_sample_value("pdauth_callbacks_total", {"outcome": outcome}) is not None


def test_refresh_reasons() -> None:
    assert refresh_reason("rejected-token", force=True) == "rejected"
    assert refresh_reason(None, force=True) == "forced"
    assert refresh_reason(None, force=False) == "expiry"
    with refreshing_because("idle"):
        assert refresh_reason(None, force=True) == "idle"
        assert refresh_reason("rejected-token", force=True) == "rejected"
    assert refresh_reason(None, force=True) == "forced"


def test_the_callback_outcome_decorator_maps_each_error() -> None:
    from pdauth.metrics import callback_outcome_of

    assert callback_outcome_of(AuthorizationDeniedError("access_denied")) == "denied"
    assert callback_outcome_of(FlowExpiredError("late")) == "expired"
    assert callback_outcome_of(BindingMismatchError("other browser")) == "binding_mismatch"
    assert callback_outcome_of(CallbackError("invalid_request")) == "invalid"
    assert callback_outcome_of(UnknownStateError("replayed")) == "invalid"
    assert callback_outcome_of(RuntimeError("boom")) == "error"


# -- the ASGI app ---------------------------------------------------------------------------


def test_two_registries_in_one_process_do_not_clash(tmp_path: os.PathLike[str]) -> None:
    first = metrics_registry()
    second = metrics_registry()
    observe_callback("success")
    assert first.get_sample_value(
        "pdauth_callbacks_total", {"outcome": "success"}
    ) == second.get_sample_value("pdauth_callbacks_total", {"outcome": "success"})


@pytest.mark.anyio
async def test_the_app_answers_get_and_head_and_refuses_other_methods() -> None:
    app = metrics_app()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://metrics.test"
    ) as client:
        got = await client.get("/metrics")
        head = await client.head("/metrics")
        post = await client.post("/metrics", content=b"x")
    assert got.status_code == 200
    assert "# TYPE pdauth_callbacks_total counter" in got.text
    assert got.headers["cache-control"] == "no-store"
    assert head.status_code == 200
    assert head.content == b""
    assert post.status_code == 405
    assert post.headers["allow"] == "GET, HEAD"


@pytest.mark.anyio
async def test_the_app_mounts_in_a_starlette_router() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route

    host = Starlette(routes=[Route("/metrics", metrics_app())])
    text = await scrape(host)
    assert "pdauth_refreshes_total" in text


# -- without the optional extra ------------------------------------------------------------

_WITHOUT_PROMETHEUS = """
import sys
sys.modules["prometheus_client"] = None  # as if pdauth[metrics] were not installed
import asyncio
import httpx
from pdauth import metrics
from pdauth.metrics import metrics_app, observe_api, observe_refresh

assert not metrics.AVAILABLE
observe_api("GET", 200)  # recording is a no-op, never an error
observe_refresh("success", "expiry")

async def scrape() -> None:
    transport = httpx.ASGITransport(app=metrics_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answer = await client.get("/metrics")
    print(answer.status_code, answer.text.strip())

asyncio.run(scrape())
"""


def _run_without_prometheus(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_without_prometheus_client_recording_is_a_no_op_and_metrics_answers_501() -> None:
    done = _run_without_prometheus(_WITHOUT_PROMETHEUS)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("501 "), done.stdout
    assert "pip install 'pdauth[metrics]'" in done.stdout


def test_without_prometheus_client_the_service_serves_and_says_501_at_metrics() -> None:
    code = """
import sys
sys.modules["prometheus_client"] = None
import asyncio, tempfile
import httpx
from pdauth.config import Settings
from pdauth.crypto import format_key, generate_key
from pdauth.service import create_app

settings = Settings.from_env(
    {},
    client_id="c",
    client_secret="s" * 16,
    redirect_uri="http://127.0.0.1:8000/callback",
    encryption_keys=format_key(generate_key("k1")),
    session_secret="x" * 32,
    database_url=f"sqlite:///{tempfile.mkdtemp()}/p.db",
)

async def main() -> None:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        health = await client.get("/healthz")
        scraped = await client.get("/metrics")
    print(health.status_code, scraped.status_code, scraped.text.strip())

asyncio.run(main())
"""
    done = _run_without_prometheus(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("200 501 "), done.stdout
    assert "pdauth[metrics]" in done.stdout


def test_with_prometheus_client_the_control_scrape_answers_200() -> None:
    # Negative control for the two tests above: the same script with the library present.
    done = _run_without_prometheus(
        _WITHOUT_PROMETHEUS.replace("sys.modules", "dict()", 1).replace(
            "assert not metrics.AVAILABLE", "assert metrics.AVAILABLE"
        )
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("200 "), done.stdout


def test_metrics_never_imports_the_database_layer() -> None:
    code = (
        "import sys, pdauth.metrics\n"
        "print(sorted(m for m in sys.modules if m.startswith(('pdauth.store', 'sqlalchemy'))))"
    )
    done = _run_without_prometheus(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
