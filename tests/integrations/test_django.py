# Django ships no type information, and the example project is put on sys.path at run time.
# mypy: disable-error-code="import-untyped,import-not-found"
"""The Django integration and the example project in examples/django, through the real flow.

A real-socket emulator plays PagerDuty. Django's test Client (with CSRF checks enforced)
drives sign-in → Connect → Approve → callback → the connection list → incidents through the
connection → Disconnect, and the failure pages; ``manage.py pdauth_keeper --once`` then
delivers the ``connection.created`` webhook, signed. The project is also served for real,
once under WSGI (Django's own server, ``django.server`` request log on) and once under ASGI
(uvicorn with its default access log), and each host log is scanned for every secret of the
flow.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pdauth.webhooks import verify_signature
from tests.integrations.host_apps import EXAMPLES, Secrets, WebhookReceiver
from tests.integrations.sync_flow import consent, emulator, host_env, path_and_query

REDIRECT = "http://127.0.0.1:8000/pagerduty/callback"
_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
WEBHOOK_SECRET = "webhook-secret-for-the-django-test-0123456789"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The example project set up in this process; yields the emulator's URL."""
    import django

    database = tmp_path_factory.mktemp("django") / "pdauth.sqlite"
    with emulator(REDIRECT) as emulator_url, pytest.MonkeyPatch.context() as patch:
        for name, value in host_env(emulator_url, REDIRECT, str(database)).items():
            patch.setenv(name, value)
        patch.setenv("DJANGO_SETTINGS_MODULE", "pdauth_example.settings")
        patch.syspath_prepend(str(EXAMPLES / "django"))
        django.setup()
        from pdauth_example.pagerduty import connector

        try:
            yield emulator_url
        finally:
            connector.close()


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match is not None, html
    return match.group(1)


def signed_in(user: str = "alice") -> Any:
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    token = csrf_of(client.get("/").content.decode())
    answer = client.post("/", {"user": user, "csrfmiddlewaretoken": token})
    assert answer.status_code == 302
    return client


def start(client: Any) -> Any:
    token = csrf_of(client.get("/pagerduty/").content.decode())
    answer = client.post("/pagerduty/connect", {"csrfmiddlewaretoken": token})
    assert answer.status_code == 303, answer.content
    return answer


def test_connect_incidents_disconnect_with_the_test_client(project: str) -> None:
    client = signed_in()
    started = start(client)
    cookie = started.cookies["pdauth_binding"]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/pagerduty/"
    assert not cookie["secure"]
    done = client.get(path_and_query(consent(project, started["Location"])))
    assert done.status_code == 303
    assert done["Location"] == "/pagerduty/?connected=1"
    assert done["Referrer-Policy"] == "no-referrer"
    page = client.get(done["Location"]).content.decode()
    assert "Connected." in page
    incidents = client.get("/incidents")
    assert incidents.status_code == 200
    assert "<li>#" in incidents.content.decode()
    [connection_id] = re.findall(r"/pagerduty/connections/(pdc_[^/]+)/disconnect", page)
    gone = client.post(
        f"/pagerduty/connections/{connection_id}/disconnect",
        {"csrfmiddlewaretoken": csrf_of(page)},
    )
    assert gone.status_code == 303
    assert "No PagerDuty account is connected yet." in client.get("/pagerduty/").content.decode()


def test_django_csrf_protects_the_posts(project: str) -> None:
    client = signed_in()
    client.get("/pagerduty/")
    assert client.post("/pagerduty/connect", {}).status_code == 403
    assert client.post("/pagerduty/connections/pdc_x/disconnect", {}).status_code == 403
    assert client.get("/pagerduty/connect").status_code == 405


@pytest.mark.parametrize(
    ("case", "status", "heading"),
    [
        ("denied", 400, "Access was not granted"),
        ("other_browser", 400, "Finish in the browser where you started"),
        ("not_signed_in", 403, "You are not signed in"),
    ],
)
def test_callback_failures(project: str, case: str, status: int, heading: str) -> None:
    from django.test import Client

    client = signed_in()
    started = start(client)
    callback = consent(
        project, started["Location"], decision="deny" if case == "denied" else "approve"
    )
    browser = {"other_browser": signed_in(), "not_signed_in": Client()}.get(case, client)
    answer = browser.get(path_and_query(callback))
    assert answer.status_code == status
    text = answer.content.decode()
    assert heading in text
    secrets = Secrets()
    secrets.add_callback(callback)
    assert secrets.found_in(text) == []


def test_the_keeper_command_delivers_the_webhook(
    project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.management import call_command

    client = signed_in("keeper-user")
    done = client.get(path_and_query(consent(project, start(client)["Location"])))
    assert done.status_code == 303
    with WebhookReceiver() as receiver:
        monkeypatch.setenv("PDAUTH_WEBHOOK_URL", receiver.url)
        monkeypatch.setenv("PDAUTH_WEBHOOK_SECRET", WEBHOOK_SECRET)
        call_command("pdauth_keeper", "--once", stdout=io.StringIO())
        assert receiver.arrived.is_set()
    events = []
    for headers, body in receiver.received:
        verified = verify_signature(
            WEBHOOK_SECRET,
            headers.get("X-Pdauth-Signature"),
            body,
            event_id=headers.get("X-Pdauth-Event-Id"),
        )
        assert verified is not None
        events.append(json.loads(body))
    created = [e for e in events if e["type"] == "connection.created"]
    assert any(e.get("owner") == "keeper-user" for e in created), events


def drive(base: str, emulator_url: str, secrets: Secrets) -> list[str]:
    """The flow through a real server at ``base``; returns the pages it served."""
    from pdauth_example.pagerduty import connector

    bodies = []
    with httpx.Client(base_url=base) as browser:
        token = csrf_of(browser.get("/").text)
        browser.post("/", data={"user": "socket-user", "csrfmiddlewaretoken": token})
        page = browser.get("/pagerduty/").text
        started = browser.post("/pagerduty/connect", data={"csrfmiddlewaretoken": csrf_of(page)})
        assert started.status_code == 303, started.text
        callback = consent(emulator_url, started.headers["location"])
        secrets.add_callback(callback)
        secrets.add(*browser.cookies.values())
        done = browser.get(path_and_query(callback))
        assert done.status_code == 303, done.text
        bodies.append(browser.get(done.headers["location"]).text)
        bodies.append(browser.get("/incidents").text)
        assert "<li>#" in bodies[-1]
    for connection in connector.connections("socket-user"):
        if connection.status == "active":
            secrets.add(connector.access_token(connection.id))
    return bodies


def test_wsgi_run_keeps_secrets_out_of_django_server_log(project: str) -> None:
    from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer
    from django.core.wsgi import get_wsgi_application

    # get_wsgi_application() runs django.setup() again, which re-applies Django's logging
    # config (new handlers; pdauth's filters on the loggers stay): capture after it.
    application = get_wsgi_application()
    out = io.StringIO()
    server_log = logging.getLogger("django.server")
    # Django's own logging config gave it a StreamHandler with its ServerFormatter.
    handlers = [h for h in server_log.handlers if type(h) is logging.StreamHandler]
    assert handlers
    old = [h.setStream(out) for h in handlers]
    server = WSGIServer(("127.0.0.1", 0), WSGIRequestHandler)
    server.set_app(application)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    secrets = Secrets()
    try:
        bodies = drive(f"http://127.0.0.1:{server.server_port}", project, secrets)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=15)
        for handler, stream in zip(handlers, old, strict=True):
            handler.setStream(stream)
    log = out.getvalue()
    assert "GET /pagerduty/callback?code=[redacted]&state=[redacted] HTTP/1.1" in log
    assert secrets.found_in(log) == []
    assert secrets.found_in("\n".join(bodies)) == []


def test_asgi_run_under_uvicorn_keeps_secrets_out_of_the_access_log(project: str) -> None:
    import uvicorn

    from pdauth.service.server import bind_socket

    saved = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
        for name in ("uvicorn", "uvicorn.access", "uvicorn.error")
    }
    config = uvicorn.Config(
        "pdauth_example.asgi:application",
        log_config=uvicorn.config.LOGGING_CONFIG,
        access_log=True,
        lifespan="off",
    )
    config.load()
    out = io.StringIO()
    logging.getLogger("uvicorn.access").handlers[0].setStream(out)  # type: ignore[attr-defined]
    server = uvicorn.Server(config)
    sock = bind_socket("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    secrets = Secrets()
    deadline = time.monotonic() + 15
    try:
        while not server.started:
            assert thread.is_alive(), "uvicorn did not start"
            assert time.monotonic() < deadline, "uvicorn did not start in time"
            time.sleep(0.005)
        bodies = drive(f"http://127.0.0.1:{sock.getsockname()[1]}", project, secrets)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        for name, (handlers, propagate) in saved.items():
            logging.getLogger(name).handlers = handlers
            logging.getLogger(name).propagate = propagate
    log = out.getvalue()
    assert '"GET /pagerduty/callback?code=[redacted]&state=[redacted] HTTP/1.1" 303' in log
    assert secrets.found_in(log) == []
    assert secrets.found_in("\n".join(bodies)) == []


def test_https_gets_a_secure_cookie(project: str) -> None:
    from django.test import Client

    # Over https Django's CSRF check also wants a same-origin Referer, as browsers send.
    client = Client(enforce_csrf_checks=True, headers={"referer": "https://testserver/"})
    token = csrf_of(client.get("/", secure=True).content.decode())
    signed = client.post("/", {"user": "alice", "csrfmiddlewaretoken": token}, secure=True)
    assert signed.status_code == 302
    page = client.get("/pagerduty/", secure=True).content.decode()
    started = client.post("/pagerduty/connect", {"csrfmiddlewaretoken": csrf_of(page)}, secure=True)
    assert started.status_code == 303
    assert started.cookies["pdauth_binding"]["secure"]


def test_a_callback_routed_elsewhere_is_a_clear_page_not_a_dead_end(project: str) -> None:
    from django.test import Client, override_settings

    with override_settings(ROOT_URLCONF="tests.integrations.django_misrouted_urls"):
        client = Client(enforce_csrf_checks=True)
        token = csrf_of(client.get("/").content.decode())
        client.post("/", {"user": "alice", "csrfmiddlewaretoken": token})
        page = client.get("/pd/").content.decode()
        answer = client.post("/pd/connect", {"csrfmiddlewaretoken": csrf_of(page)})
    assert answer.status_code == 503
    assert "This application is misconfigured" in answer.content.decode()
    assert "pdauth_binding" not in answer.cookies  # nothing was started


def test_a_failed_callback_is_not_logged_with_its_request(project: str) -> None:
    """django.request would carry the request (GET: code, state) to AdminEmailHandler."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logging.getLogger("django.request").addHandler(keep)
    try:
        client = signed_in()
        callback = consent(project, start(client)["Location"])
        fault = httpx.post(project + "/_emulator/faults", json={"target": "token", "kind": "503"})
        assert fault.status_code == 200
        answer = client.get(path_and_query(callback))
    finally:
        logging.getLogger("django.request").removeHandler(keep)
    assert answer.status_code == 502
    assert "PagerDuty is unavailable" in answer.content.decode()
    assert [r for r in records if getattr(r, "request", None) is not None] == []
