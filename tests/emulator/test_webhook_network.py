"""Webhooks over real sockets: PagerDuty's official ``pagerduty`` client creates and lists the
emulator's webhook subscriptions (TLS, as it insists on https), and the emulator's delivery task
posts signed events over the network to a receiver served by uvicorn, retrying on a 503 with the
backoff compressed by ``webhook_retry_scale`` on the emulator's real-time clock."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pagerduty
import pytest
import trustme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.server import EmulatorServer
from pdauth.emulator.state import EmulatorClock
from pdauth.service.server import ServiceServer
from tests.emulator_kit import make_emulator_state
from tests.schema_lookup import find_schema

from .conftest import Tls
from .webhook_kit import WebhookChecker, subscription_body

ACME = "PACME01"


@dataclass
class NetReceiver:
    """Records deliveries (thread-safe); answers 503 ``failures`` times, then 202."""

    failures: int = 0
    stall_first: float = 0.0  # seconds the first request is held (longer than the timeout)
    bodies: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            first = not self.bodies and self.stall_first > 0
        if first:
            await anyio.sleep(self.stall_first)  # the receiver being slow, not the test waiting
        with self.arrived:
            self.bodies.append((dict(request.headers), body))
            status = 503 if len(self.bodies) <= self.failures else 202
            self.arrived.notify_all()
        return Response(status_code=status)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[dict[str, str], bytes]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.bodies) >= count, timeout), self.bodies
            return list(self.bodies)


def poll_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


@contextlib.contextmanager
def serve(recorder: NetReceiver, tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """``recorder`` on a real socket (pdauth's threaded uvicorn server); yields its URL."""
    app = Starlette(routes=[Route("/hook", recorder.endpoint, methods=["POST"])])
    certfile, keyfile = (str(tls[0]), str(tls[1])) if tls else (None, None)
    with ServiceServer(app, certfile=certfile, keyfile=keyfile) as server:
        yield server.url + "/hook"


@pytest.fixture
def receiver() -> Iterator[tuple[NetReceiver, str]]:
    recorder = NetReceiver(failures=1)
    with serve(recorder) as url:
        yield recorder, url


def test_official_client_creates_and_lists_subscriptions(tls: Tls) -> None:
    checker = WebhookChecker(find_schema())
    state = make_emulator_state(EmulatorConfig())
    with EmulatorServer(state=state, certfile=tls.certfile, keyfile=tls.keyfile) as server:
        key = state.directory.api_keys[ACME].token
        with pagerduty.RestApiV2Client(
            key,
            base_url=server.url,
            verify=tls.context,
            event_hooks={"response": [checker.sync_hook()]},
        ) as api:
            created = [
                api.rpost("webhook_subscriptions", json=subscription_body(description=f"n{i}"))
                for i in range(30)
            ]
            assert all(c["delivery_method"]["secret"] for c in created)
            listed = list(api.iter_all("webhook_subscriptions", page_size=10))
            assert sorted(s["id"] for s in listed) == sorted(c["id"] for c in created)
            assert all(s["delivery_method"]["secret"] is None for s in listed)
            assert api.rget(f"webhook_subscriptions/{created[0]['id']}")["description"] == "n0"
    assert checker.checked[("GET", "/webhook_subscriptions", 200)] >= 3  # it paginated


def test_deliveries_go_over_the_network_with_scaled_retries(receiver) -> None:
    recorder, url = receiver
    config = EmulatorConfig(webhook_retry_scale=0.001)  # 30 s of backoff -> 30 ms
    state = make_emulator_state(config, clock=EmulatorClock())  # real time
    with EmulatorServer(state=state) as server:
        headers = {"Authorization": f"Token token={state.directory.api_keys[ACME].token}"}
        with httpx.Client(base_url=server.url) as client:
            created = client.post(
                "/webhook_subscriptions", headers=headers, json=subscription_body(url=url)
            )
            assert created.status_code == 200, created.text
            secret = created.json()["webhook_subscription"]["delivery_method"]["secret"]
            incident = client.post("/_emulator/incidents", json={"account": ACME})
            assert incident.status_code == 201
            (first_headers, first), (second_headers, second) = recorder.wait_for(2)
            assert first == second
            assert first_headers["x-webhook-id"] == second_headers["x-webhook-id"]
            expected = "v1=" + hmac.new(secret.encode(), second, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(second_headers["x-pagerduty-signature"], expected)
            assert json.loads(second)["event"]["data"]["id"] == incident.json()["incident"]["id"]
            stats = client.get("/_emulator/stats").json()["webhooks"]
            assert stats["retries"] == 1


def test_a_receiver_slower_than_the_timeout_gets_the_webhook_again(receiver) -> None:
    recorder, url = receiver
    recorder.failures, recorder.stall_first = 0, 1.0
    config = EmulatorConfig(webhook_timeout=0.2, webhook_retry_scale=0.001)
    state = make_emulator_state(config, clock=EmulatorClock())
    with EmulatorServer(state=state) as server, httpx.Client(base_url=server.url) as client:
        headers = {"Authorization": f"Token token={state.directory.api_keys[ACME].token}"}
        created = client.post(
            "/webhook_subscriptions", headers=headers, json=subscription_body(url=url)
        )
        assert created.status_code == 200, created.text
        assert client.post("/_emulator/incidents", json={"account": ACME}).status_code == 201
        (first_headers, _), (second_headers, _) = recorder.wait_for(2)
        assert first_headers["x-webhook-id"] == second_headers["x-webhook-id"]


@pytest.mark.parametrize(("expired", "outcome"), [(True, "retries"), (False, "failed")])
def test_tls_errors_are_permanent_except_an_expired_certificate(
    tmp_path: Path, expired: bool, outcome: str
) -> None:
    ca = trustme.CA()
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = (
        ca.issue_cert("127.0.0.1", not_before=past, not_after=past + datetime.timedelta(days=1))
        if expired
        else trustme.CA().issue_cert("127.0.0.1")  # signed by a CA the emulator does not trust
    )
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(keyfile))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)

    config = EmulatorConfig(webhook_retry_scale=1.0)
    state = make_emulator_state(config, clock=EmulatorClock())
    state.webhooks.transport = httpx.AsyncHTTPTransport(verify=trusting)
    recorder = NetReceiver()
    with (
        serve(recorder, (certfile, keyfile)) as url,
        EmulatorServer(state=state) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        headers = {"Authorization": f"Token token={state.directory.api_keys[ACME].token}"}
        created = client.post(
            "/webhook_subscriptions", headers=headers, json=subscription_body(url=url)
        )
        assert created.status_code == 200, created.text
        assert client.post("/_emulator/incidents", json={"account": ACME}).status_code == 201
        # Nothing reaches the handler: poll the emulator's counters, with a bound.
        poll_until(lambda: client.get("/_emulator/stats").json()["webhooks"][outcome] == 1)
        stats = client.get("/_emulator/stats").json()["webhooks"]
        assert stats["attempts"] == 1
        assert stats["delivered"] == 0
        assert recorder.bodies == []
