"""examples/fastapi/app.py end to end: a real uvicorn serves the host app on a socket, a real
emulator plays PagerDuty, and a browser with a cookie jar signs in, connects (consent, callback),
sees "Connected", lists incidents through the host's dependency; the keeper that
``mount_pdauth`` runs in the host's lifespan delivers the signed ``connection.created``
webhook; and the host's own uvicorn access log never shows the callback's code or state."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from pdauth.service.server import bind_socket
from pdauth.webhooks import EVENT_TYPE_HEADER, SIGNATURE_HEADER, verify_signature
from tests.integrations.host_apps import Secrets, WebhookReceiver, load_example
from tests.integrations.sync_flow import consent, emulator, host_settings, path_and_query

WEBHOOK_SECRET = "webhook-secret-for-the-fastapi-test-0123456789"


class Captured(logging.Handler):
    """Every line the host's loggers emit, as formatted text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def served(app: FastAPI, sock: object, log: Captured) -> Iterator[uvicorn.Server]:
    """``uvicorn app:create_app --factory`` as a user runs it: default logging, access log
    on, lifespan on; on a background thread."""
    # uvicorn's default logging config rewires the process-wide "uvicorn.*" loggers; put them
    # back afterwards so later tests in this process see the logging they set up.
    saved = {
        name: (
            logging.getLogger(name).handlers[:],
            logging.getLogger(name).propagate,
            logging.getLogger(name).level,
        )
        for name in ("uvicorn", "uvicorn.access", "uvicorn.error")
    }
    server = uvicorn.Server(uvicorn.Config(app, access_log=True, lifespan="on", log_level="info"))
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addHandler(log)
    started = threading.Event()

    class Started(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Uvicorn running" in record.getMessage() or "Application startup complete" in (
                record.getMessage()
            ):
                started.set()

    watcher = Started()
    logging.getLogger("uvicorn.error").addHandler(watcher)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert started.wait(30), "the host app did not start"
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        for name, (handlers, propagate, level) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)


def test_the_fastapi_example_connects_lists_incidents_and_delivers_a_webhook(
    tmp_path: Path,
) -> None:
    example = load_example("fastapi/app.py", "pdauth_example_fastapi")
    sock = bind_socket("127.0.0.1", 0)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    redirect_uri = base + "/pagerduty/callback"
    secrets = Secrets()
    log = Captured()
    with WebhookReceiver() as hooks, emulator(redirect_uri) as pd:
        settings = host_settings(
            pd,
            redirect_uri,
            str(tmp_path / "host.db"),
            webhook_url=hooks.url,
            webhook_secret=WEBHOOK_SECRET,
            keeper_interval=0.2,
        )
        with served(example.create_app(settings), sock, log), httpx.Client(base_url=base) as web:
            # Not signed in: the dependency refuses (negative control for what follows).
            assert web.get("/incidents").status_code == 401
            signed_in = web.post("/sign-in", data={"user": "alice"})
            assert signed_in.status_code == 303
            assert signed_in.headers["location"] == "/pagerduty/"
            home = web.get("/pagerduty/")
            assert home.status_code == 200
            assert "Signed in as <strong>alice</strong>" in home.text
            token = home.text.split('name="csrf_token" value="')[1].split('"')[0]
            started = web.post("/pagerduty/connect", data={"csrf_token": token})
            assert started.status_code == 303, started.text
            callback = consent(pd, started.headers["location"])
            secrets.add_callback(callback)
            assert callback.startswith(redirect_uri + "?")
            done = web.get(path_and_query(callback))
            assert done.status_code == 303, done.text
            assert done.headers["location"] == "/pagerduty/"
            connected = web.get("/pagerduty/")
            assert "Connected." in connected.text
            assert "status-active" in connected.text
            incidents = web.get("/incidents")
            assert incidents.status_code == 200, incidents.text
            assert "<h1>Incidents</h1>" in incidents.text
            assert "<li>#" in incidents.text
            # The keeper runs in the host's lifespan: the connection.created webhook arrives.
            assert hooks.arrived.wait(30), "no webhook arrived: the keeper is not running"
    headers, body = hooks.received[0]
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered[EVENT_TYPE_HEADER.lower()] == "connection.created"
    assert verify_signature(WEBHOOK_SECRET, lowered[SIGNATURE_HEADER.lower()], body) is not None
    # The host's own access log saw the callback, but never its code or state.
    callback_lines = [line for line in log.lines if "/pagerduty/callback" in line]
    assert callback_lines, "the access log did not record the callback (the scan would be blind)"
    assert secrets.found_in(callback) != []  # the scan sees a code and state in clear text
    assert secrets.found_in("\n".join(log.lines)) == []
    assert not [line for line in log.lines if "keeper is NOT running" in line]
