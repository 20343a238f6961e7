"""The Flask integration and examples/flask/app.py, driven through the real flow.

A real-socket emulator plays PagerDuty (an OAuth app registered for the example's redirect
URI). Flask's test client drives sign-in → Connect → Approve → callback → the connection list
→ incidents through the connection → Disconnect, and every failure the callback can meet
(denied, expired, another browser, PagerDuty unavailable, scopes not granted, a missing CSRF
token, nobody signed in) gets its clear page with no secret in it. One run serves the example
on a real socket with werkzeug's request log on and scans that log for every secret.
"""

from __future__ import annotations

import io
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient

from pdauth import SyncConnector
from pdauth.clock import FrozenClock
from pdauth.errors import ConfigurationError
from pdauth.integrations.flask import blueprint
from tests.integrations.host_apps import Secrets, load_example
from tests.integrations.sync_flow import consent, emulator, host_settings, path_and_query

REDIRECT = "http://127.0.0.1:8000/pagerduty/callback"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

example = load_example("flask/app.py", "pdauth_flask_example")


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    with emulator(REDIRECT) as url:
        yield url


@pytest.fixture
def connector(emulator_url: str, tmp_path: Path) -> Iterator[SyncConnector]:
    with SyncConnector(host_settings(emulator_url, REDIRECT, str(tmp_path / "db.sqlite"))) as c:
        yield c


@pytest.fixture
def app(connector: SyncConnector) -> Flask:
    flask_app: Flask = example.create_app(connector)
    return flask_app


def signed_in(app: Flask, user: str = "alice") -> FlaskClient:
    client = app.test_client()
    assert client.post("/sign-in", data={"user": user}).status_code == 302
    return client


def csrf_of(client: FlaskClient) -> str:
    page = client.get("/pagerduty/")
    assert page.status_code == 200
    match = _CSRF.search(page.get_data(as_text=True))
    assert match is not None
    return match.group(1)


def start(client: FlaskClient, **form: str) -> Any:
    answer = client.post("/pagerduty/connect", data={"csrf_token": csrf_of(client), **form})
    assert answer.status_code == 303, answer.get_data(as_text=True)
    return answer


def test_connect_list_incidents_disconnect(app: Flask, emulator_url: str) -> None:
    client = signed_in(app)
    started = start(client)
    cookie = started.headers["Set-Cookie"]
    assert cookie.startswith("pdauth_binding=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/pagerduty/;" in cookie
    assert "Secure" not in cookie  # http here; https requests get Secure
    callback = consent(emulator_url, started.headers["Location"])
    done = client.get(path_and_query(callback))
    assert done.status_code == 303
    assert done.headers["Location"] == "/pagerduty/?connected=1"
    assert done.headers["Referrer-Policy"] == "no-referrer"
    assert done.headers["Cache-Control"] == "no-store"
    page = client.get(done.headers["Location"]).get_data(as_text=True)
    assert "Connected." in page
    assert "Active" in page
    incidents = client.get("/incidents")
    assert incidents.status_code == 200
    assert "<li>#" in incidents.get_data(as_text=True)
    [connection_id] = re.findall(r"/pagerduty/connections/(pdc_[^/]+)/disconnect", page)
    gone = client.post(
        f"/pagerduty/connections/{connection_id}/disconnect",
        data={"csrf_token": csrf_of(client)},
    )
    assert gone.status_code == 303
    assert "No PagerDuty account is connected yet." in client.get("/pagerduty/").get_data(
        as_text=True
    )


def test_https_requests_get_a_secure_cookie(app: Flask) -> None:
    client = app.test_client()
    client.post("/sign-in", data={"user": "alice"}, base_url="https://localhost")
    page = client.get("/pagerduty/", base_url="https://localhost").get_data(as_text=True)
    token = _CSRF.search(page)
    assert token is not None
    started = client.post(
        "/pagerduty/connect", data={"csrf_token": token.group(1)}, base_url="https://localhost"
    )
    assert "Secure" in started.headers["Set-Cookie"]


@pytest.mark.parametrize(
    ("case", "status", "heading"),
    [
        ("denied", 400, "Access was not granted"),
        ("other_browser", 400, "Finish in the browser where you started"),
        ("other_user", 400, "Finish in the browser where you started"),
        ("unavailable", 502, "PagerDuty is unavailable"),
        ("replayed", 400, "This link was already used"),
    ],
)
def test_callback_failures_have_clear_pages(
    app: Flask, emulator_url: str, case: str, status: int, heading: str
) -> None:
    client = signed_in(app)
    started = start(client)
    secrets = Secrets()
    callback = consent(
        emulator_url,
        started.headers["Location"],
        decision="deny" if case == "denied" else "approve",
    )
    secrets.add_callback(callback)
    if case == "unavailable":
        fault = httpx.post(
            emulator_url + "/_emulator/faults", json={"target": "token", "kind": "503"}
        )
        assert fault.status_code == 200
    browser = client
    if case == "other_browser":
        browser = signed_in(app)  # same user, another browser: no binding cookie
    elif case == "other_user":
        browser = client
        browser.post("/sign-in", data={"user": "mallory"})
    elif case == "replayed":
        assert client.get(path_and_query(callback)).status_code == 303
        start(client)  # a fresh cookie, but the replayed state is spent
    answer = browser.get(path_and_query(callback))
    text = answer.get_data(as_text=True)
    assert answer.status_code == status, text
    assert heading in text
    assert secrets.found_in(text) == []


def test_scopes_not_granted(emulator_url: str, tmp_path: Path) -> None:
    settings = host_settings(
        emulator_url, REDIRECT, str(tmp_path / "db.sqlite"), scopes="incidents.read"
    )
    with SyncConnector(settings) as connector:
        client = signed_in(example.create_app(connector))
        callback = consent(emulator_url, start(client).headers["Location"])
        answer = client.get(path_and_query(callback))
        assert answer.status_code == 400
        assert "Permissions not granted" in answer.get_data(as_text=True)
        assert connector.connections() == []


def test_an_expired_flow(emulator_url: str, tmp_path: Path) -> None:
    clock = FrozenClock(__import__("time").time())
    settings = host_settings(emulator_url, REDIRECT, str(tmp_path / "db.sqlite"))
    with SyncConnector(settings, clock=clock) as connector:
        client = signed_in(example.create_app(connector))
        callback = consent(emulator_url, start(client).headers["Location"])
        clock.advance(601)
        answer = client.get(path_and_query(callback))
        assert answer.status_code == 400
        assert "This link has expired" in answer.get_data(as_text=True)


def test_post_without_csrf_and_nobody_signed_in(app: Flask) -> None:
    client = signed_in(app)
    refused = client.post("/pagerduty/connect", data={})
    assert refused.status_code == 403
    assert "Set-Cookie" not in refused.headers or "pdauth_binding" not in refused.headers.get(
        "Set-Cookie", ""
    )
    anonymous = app.test_client()
    assert anonymous.get("/pagerduty/").status_code == 403
    denied = anonymous.get("/pagerduty/callback?code=x&state=y")
    assert denied.status_code == 403
    assert "You are not signed in" in denied.get_data(as_text=True)


def test_a_mismatched_prefix_is_refused_at_registration(connector: SyncConnector) -> None:
    app = Flask("host")
    app.secret_key = "host-secret-key-0123456789"
    with pytest.raises(ConfigurationError, match="/pagerduty/callback"):
        app.register_blueprint(blueprint(connector, owner=lambda r: None), url_prefix="/pd")
    bare = Flask("bare")
    with pytest.raises(ConfigurationError, match="secret_key"):
        bare.register_blueprint(blueprint(connector, owner=lambda r: None), url_prefix="/pagerduty")


def test_real_socket_run_keeps_secrets_out_of_werkzeug_log(
    app: Flask, connector: SyncConnector, emulator_url: str
) -> None:
    from werkzeug.serving import make_server

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    werkzeug = logging.getLogger("werkzeug")
    saved = werkzeug.handlers[:], werkzeug.propagate, werkzeug.level
    werkzeug.handlers, werkzeug.propagate = [handler], False
    werkzeug.setLevel(logging.INFO)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    secrets = Secrets()
    bodies: list[str] = []
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        with httpx.Client(base_url=base) as browser:
            browser.post("/sign-in", data={"user": "alice"})
            page = browser.get("/pagerduty/").text
            match = _CSRF.search(page)
            assert match is not None
            started = browser.post("/pagerduty/connect", data={"csrf_token": match.group(1)})
            callback = consent(emulator_url, started.headers["location"])
            secrets.add_callback(callback)
            secrets.add(*browser.cookies.values())
            done = browser.get(path_and_query(callback))
            assert done.status_code == 303
            bodies.append(browser.get(done.headers["location"]).text)
            bodies.append(browser.get("/incidents").text)
            assert "<li>#" in bodies[-1]
            [connection] = connector.connections("alice")
            secrets.add(connector.access_token(connection.id))
    finally:
        server.shutdown()
        thread.join(timeout=15)
        werkzeug.handlers, werkzeug.propagate, _ = saved
        werkzeug.setLevel(saved[2])
    log = out.getvalue()
    assert "GET /pagerduty/callback?code=[redacted]&state=[redacted]" in log
    assert secrets.found_in(log) == []
    assert secrets.found_in("\n".join(bodies)) == []


def test_the_keeper_process_delivers_the_webhook(
    app: Flask, connector: SyncConnector, emulator_url: str
) -> None:
    """Next to a Flask app the keeper is its own process: `pdauth keeper`."""
    import json
    import os
    import subprocess
    import sys

    from pdauth.webhooks import verify_signature
    from tests.integrations.host_apps import ROOT, WebhookReceiver
    from tests.integrations.sync_flow import settings_env

    client = signed_in(app, "keeper-user")
    done = client.get(path_and_query(consent(emulator_url, start(client).headers["Location"])))
    assert done.status_code == 303
    secret = "flask-keeper-webhook-secret-0123456789abcdef"
    with WebhookReceiver() as receiver:
        env = {
            **os.environ,
            **settings_env(connector.settings),
            "PDAUTH_WEBHOOK_URL": receiver.url,
            "PDAUTH_WEBHOOK_SECRET": secret,
        }
        keeper = subprocess.run(
            [sys.executable, "-m", "pdauth", "keeper", "--once", "--json"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert keeper.returncode == 0, keeper.stderr
    assert json.loads(keeper.stdout)["webhooks_delivered"] >= 1
    [(headers, body)] = receiver.received
    verified = verify_signature(
        secret, headers.get("X-Pdauth-Signature"), body, event_id=headers.get("X-Pdauth-Event-Id")
    )
    assert verified is not None
    event = json.loads(body)
    assert event["type"] == "connection.created"
    assert event["owner"] == "keeper-user"


def test_the_apps_own_logger_is_protected(app: Flask) -> None:
    from pdauth.logs import RedactionFilter

    assert any(isinstance(f, RedactionFilter) for f in app.logger.filters)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    app.logger.addHandler(handler)
    try:
        app.logger.warning("odd callback %s", "/pagerduty/callback?code=CANARYFLASK1&state=S2x")
    finally:
        app.logger.removeHandler(handler)
    assert "code=[redacted]&state=[redacted]" in out.getvalue()
    assert "CANARYFLASK1" not in out.getvalue()
