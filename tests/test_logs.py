"""The redaction filter: no secret survives into a log line, whatever logger emits it."""

from __future__ import annotations

import io
import json
import logging
import shlex
from collections.abc import Iterator

import pytest
from hypothesis import given, settings, strategies as st

from pdauth.logs import REDACTED, configure_logging, log_context, redact, register_secret

ACCESS = "pdus+_0XBPWQQ_b2b2060b-cafe-4bad-9dad-0123456789ab"
REFRESH = "pdus+_1XBPWQQ_f85dd2f1-cafe-4bad-9dad-0123456789ab"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJQMTIzIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    old_level = root.level
    # uvicorn (started by other tests in this process) gives its loggers their own handlers
    # and stops propagation; route them to the root for this test, then put them back.
    saved = {}
    for name in ("httpx", "uvicorn", "uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.propagate, logger.level, logger.disabled)
        logger.handlers, logger.propagate, logger.level, logger.disabled = [], True, 0, False
    handler = configure_logging("DEBUG", "text", stream=out)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for name, (handlers, propagate, level, disabled) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate, logger.level, logger.disabled = (
                handlers,
                propagate,
                level,
                disabled,
            )


@pytest.mark.parametrize(
    "line",
    [
        "GET /callback?code=CANARYCODE123&state=CANARYSTATE456 HTTP/1.1",
        f"headers: [(b'authorization', b'Bearer {ACCESS}')]",
        "Authorization: Token token=CANARYAPIKEY789",
        f'{{"access_token": "{ACCESS}", "refresh_token": "{REFRESH}", "expires_in": 10}}',
        f"{{'access_token': '{ACCESS}', 'token_type': 'bearer'}}",
        "grant_type=refresh_token&refresh_token=pdus%2B_1XBPWQQ_abcdef&client_secret=CANARYSECRET",
        f"id_token {JWT}",
        "b'code_verifier=CANARYVERIFIER&code=CANARYCODE123'",
        f"token was {ACCESS}.",
    ],
)
def test_redact_removes_secrets(line: str) -> None:
    out = redact(line)
    for canary in (
        ACCESS,
        REFRESH,
        JWT,
        "CANARYCODE123",
        "CANARYSTATE456",
        "CANARYAPIKEY789",
        "CANARYSECRET",
        "CANARYVERIFIER",
        "XBPWQQ_abcdef",
    ):
        assert canary not in out
    assert REDACTED in out


def test_redact_keeps_ordinary_text() -> None:
    line = "refreshed connection pdc_abc in 12 ms (status_code=200, code 2020)"
    assert redact(line) == line


def test_registered_secret_is_redacted_anywhere() -> None:
    register_secret("a-registered-client-secret-value")
    assert "a-registered-client-secret-value" not in redact(
        "oops a-registered-client-secret-value!"
    )
    register_secret("short")  # too short to redact safely: ignored
    assert redact("short") == "short"


def test_every_logger_goes_through_the_filter(stream: io.StringIO) -> None:
    logging.getLogger("httpx").debug(
        "HTTP Request: POST https://x/oauth/token body=%s", f"refresh_token={REFRESH}"
    )
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:5000",
        "GET",
        "/callback?code=CANARY1&state=CANARY2",
        "1.1",
        303,
    )
    text = stream.getvalue()
    assert REFRESH not in text
    assert "CANARY1" not in text
    assert "CANARY2" not in text
    assert "/callback?code=[redacted]&state=[redacted]" in text


def test_tracebacks_are_redacted(stream: io.StringIO) -> None:
    try:
        raise ValueError(f"bad token {ACCESS}")
    except ValueError:
        logging.getLogger("pdauth.test").exception("failure")
    text = stream.getvalue()
    assert "ValueError" in text
    assert ACCESS not in text


def test_context_fields_and_json_format() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    old_level = root.level
    handler = configure_logging("INFO", "json", stream=out)
    try:
        with log_context(request_id="req-1", connection_id="pdc_1", owner="tenant-a"):
            logging.getLogger("pdauth.test").info("refreshed with %s", f"Bearer {ACCESS}")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    record = json.loads(out.getvalue().strip().splitlines()[-1])
    assert record["request_id"] == "req-1"
    assert record["connection_id"] == "pdc_1"
    assert record["owner"] == "tenant-a"
    assert ACCESS not in record["message"]


@settings(max_examples=60)
@given(
    st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="&'\" <>"),
        min_size=8,
        max_size=40,
    )
)
def test_any_query_value_of_a_secret_parameter_is_redacted(value: str) -> None:
    for name in (
        "code",
        "state",
        "access_token",
        "refresh_token",
        "client_secret",
        "code_verifier",
    ):
        # The whole value goes, and nothing else (comparing the full line keeps a value that
        # happens to spell part of the parameter's name from failing the check).
        assert redact(f"/callback?x=1&{name}={value}") == f"/callback?x=1&{name}={REDACTED}"


# -- the host's loggers (pdauth embedded in someone else's app) ---------------------------------

HOST_LOGGERS = (
    "",
    "uvicorn",
    "uvicorn.access",
    "uvicorn.error",
    "gunicorn.access",
    "gunicorn.error",
    "django",
    "django.server",
    "django.request",
    "werkzeug",
)
CODE = "CANARYHOSTCODE0123456789"
STATE = "CANARYHOSTSTATE0123456789abcdef"
CALLBACK = f"/pagerduty/callback?code={CODE}&state={STATE}"


@pytest.fixture
def host_logging() -> Iterator[None]:
    """Save and restore the host loggers' handlers, filters, levels and propagation."""
    saved = {}
    for name in HOST_LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (
            logger.handlers[:],
            logger.filters[:],
            logger.propagate,
            logger.level,
            logger.disabled,
        )
    try:
        yield
    finally:
        for name, (handlers, filters, propagate, level, disabled) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.filters = handlers, filters
            logger.propagate, logger.level, logger.disabled = propagate, level, disabled


def leaked(text: str) -> list[str]:
    from tests.test_connections_canary import leaks

    return leaks(text.encode(), [CODE, STATE, ACCESS, "a-host-client-secret-for-the-canary"])


def capture(name: str, formatter: logging.Formatter) -> io.StringIO:
    """A handler of the host's own kind on logger ``name`` (no propagation), writing here."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.disabled = False
    return out


def test_uvicorn_access_log_keeps_its_format_and_loses_the_code(host_logging: None) -> None:
    """A real uvicorn server with its default logging config, configured after protection."""
    import threading
    import time

    import httpx
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from pdauth.logs import protect_host_loggers
    from pdauth.service.server import bind_socket

    async def callback(request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/pagerduty/callback", callback)])
    protect_host_loggers()
    # uvicorn's own dictConfig runs now, *after* protection, replacing the handlers.
    config = uvicorn.Config(app, log_config=uvicorn.config.LOGGING_CONFIG, access_log=True)
    config.load()
    access = logging.getLogger("uvicorn.access")
    assert isinstance(access.handlers[0].formatter, uvicorn.logging.AccessFormatter)
    out = io.StringIO()
    access.handlers[0].setStream(out)  # type: ignore[attr-defined]
    server = uvicorn.Server(config)
    sock = bind_socket("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    try:
        while not server.started:
            assert thread.is_alive(), "uvicorn did not start"
            assert time.monotonic() < deadline, "uvicorn did not start in time"
            time.sleep(0.005)
        port = sock.getsockname()[1]
        assert httpx.get(f"http://127.0.0.1:{port}{CALLBACK}").text == "ok"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
    text = out.getvalue()
    assert '"GET /pagerduty/callback?code=[redacted]&state=[redacted] HTTP/1.1" 200' in text
    assert leaked(text) == []


def test_uvicorn_access_formatter_would_print_the_code_unprotected(host_logging: None) -> None:
    """Negative control: the same record through the same formatter, no protection."""
    import uvicorn.logging

    out = capture("uvicorn.access", uvicorn.logging.AccessFormatter("%(request_line)s"))
    logging.getLogger("uvicorn.access").filters = []
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", CALLBACK, "1.1", 303
    )
    assert CODE in out.getvalue()


def test_werkzeug_request_line_is_redacted(host_logging: None) -> None:
    """A real werkzeug development server logs the request line; the code is gone from it."""
    import threading

    import httpx
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Response

    from pdauth.logs import protect_host_loggers

    out = capture("werkzeug", logging.Formatter("%(name)s %(message)s"))
    protect_host_loggers()
    server = make_server("127.0.0.1", 0, Response("ok"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        httpx.get(f"http://127.0.0.1:{server.server_port}{CALLBACK}")
    finally:
        server.shutdown()
        thread.join(timeout=15)
    text = out.getvalue()
    assert "GET /pagerduty/callback?code=[redacted]&state=[redacted] HTTP/1.1" in text
    assert leaked(text) == []


def test_django_server_and_request_loggers_are_redacted(host_logging: None) -> None:
    """Django's runserver handler and request logger, with Django's own ServerFormatter."""
    from django.utils.log import ServerFormatter  # type: ignore[import-untyped]

    from pdauth.logs import protect_host_loggers

    out = capture("django.server", ServerFormatter("[{server_time}] {message}", style="{"))
    request_out = capture("django.request", logging.Formatter("%(levelname)s %(message)s"))
    protect_host_loggers()
    # As django.core.servers.basehttp.WSGIRequestHandler.log_message logs it.
    logging.getLogger("django.server").info(
        '"%s" %s %s',
        f"GET {CALLBACK} HTTP/1.1",
        "302",
        "0",
        extra={"status_code": 302, "server_time": "04/Dec/2026 16:00:00"},
    )
    logging.getLogger("django.request").warning(
        "Bad Request: %s", f"{CALLBACK}&token={ACCESS}", extra={"status_code": 400}
    )
    text = out.getvalue() + request_out.getvalue()
    assert "GET /pagerduty/callback?code=[redacted]&state=[redacted] HTTP/1.1" in text
    assert leaked(text) == []


def test_gunicorn_access_log_mapping_args_are_redacted(host_logging: None) -> None:
    """gunicorn's access log formats a mapping of atoms; each atom is redacted in place."""
    from pdauth.logs import protect_host_loggers

    out = capture("gunicorn.access", logging.Formatter("%(message)s"))
    protect_host_loggers()
    atoms = {
        "h": "127.0.0.1",
        "r": f"GET {CALLBACK} HTTP/1.1",
        "s": "302",
        "U": "/pagerduty/callback",
        "q": f"code={CODE}&state={STATE}",
        "{authorization}i": f"Bearer {ACCESS}",
    }
    logger = logging.getLogger("gunicorn.access")
    logger.info('%(h)s "%(r)s" %(s)s q=%(q)s auth=%({authorization}i)s', atoms)
    record_args: list[object] = []

    def keep_args(record: logging.LogRecord) -> bool:
        record_args.append(record.args)
        return True

    logger.addFilter(keep_args)
    logger.info("%(h)s %(s)s", atoms)
    text = out.getvalue()
    assert '"GET /pagerduty/callback?code=[redacted]&state=[redacted] HTTP/1.1" 302' in text
    assert leaked(text) == []
    assert isinstance(record_args[0], dict)  # the formatter still gets its mapping


def test_root_handlers_and_registered_settings_secrets(host_logging: None) -> None:
    from pdauth.logs import RedactionFilter, protect_host_loggers
    from tests.service.conftest import make_settings

    secret = "a-host-client-secret-for-the-canary"
    settings = make_settings("sqlite:///unused.db", client_secret=secret)
    out = capture("", logging.Formatter("%(message)s"))
    protect_host_loggers(settings)
    protect_host_loggers(settings)  # idempotent: one filter per handler and logger
    handler = logging.getLogger().handlers[0]
    assert sum(isinstance(f, RedactionFilter) for f in handler.filters) == 1
    werkzeug = logging.getLogger("werkzeug")
    assert sum(isinstance(f, RedactionFilter) for f in werkzeug.filters) == 1
    logging.getLogger("myapp.views").info("posting %s with secret %s", CALLBACK, secret)
    text = out.getvalue()
    assert "posting /pagerduty/callback" in text
    assert leaked(text) == []


# -- log injection (Step 11 item 4): one record, one line; fields cannot be forged ------------

FORGED_OWNER = "rt-log] X owner=admin request_id=0 ["


def test_an_owner_cannot_forge_context_fields_in_the_text_format(stream: io.StringIO) -> None:
    with log_context(request_id="req-7", owner=FORGED_OWNER):
        logging.getLogger("pdauth.test").warning("connect failed")
    (line,) = stream.getvalue().splitlines()
    assert line.endswith(f'[request_id=req-7 owner="{FORGED_OWNER}"]')
    # Read back as key=value pairs with quotes honoured: exactly the two real fields.
    fields = shlex.split(line[line.rindex(" [request_id") + 2 : -1])
    assert fields == ["request_id=req-7", f"owner={FORGED_OWNER}"]


@pytest.mark.parametrize("separator", ["\n", "\r", "\u2028", "\u2029", "\x85", "\x0b", "\x1b"])
def test_a_value_cannot_start_a_forged_line(stream: io.StringIO, separator: str) -> None:
    forged = f"tenant{separator}2026-12-04 00:00:00 CRITICAL pdauth: forged"
    with log_context(owner=forged):
        logging.getLogger("pdauth.test").warning("denied for %s", forged)
    text = stream.getvalue().rstrip("\n")
    assert separator not in text
    assert len(text.splitlines()) == 1  # str.splitlines splits on every Unicode line break
    assert "CRITICAL pdauth: forged" in text  # still readable, escaped in place


def test_plain_context_values_stay_unquoted_and_tracebacks_keep_their_lines(
    stream: io.StringIO,
) -> None:
    with log_context(request_id="req-8", connection_id="pdc_1", owner="tenant-a@example.com"):
        try:
            raise ValueError("first\nsecond")
        except ValueError:
            logging.getLogger("pdauth.test").exception("failure")
    text = stream.getvalue()
    assert "[request_id=req-8 connection_id=pdc_1 owner=tenant-a@example.com]" in text
    assert "Traceback (most recent call last):\n" in text
