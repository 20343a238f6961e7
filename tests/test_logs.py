"""The redaction filter: no secret survives into a log line, whatever logger emits it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
        assert value not in redact(f"/callback?x=1&{name}={value}").split("?", 1)[1].replace(
            "x=1", ""
        )
