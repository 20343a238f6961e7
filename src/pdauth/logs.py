"""Logging for pdauth: structured output and a redaction filter that no secret gets past.

``configure_logging()`` installs one handler (text for a terminal, JSON lines when
``PDAUTH_LOG_FORMAT=json``) and puts :class:`RedactionFilter` on it *and* on every handler
already attached to the loggers that see secrets in their normal work: ``httpx`` and
``httpcore`` (request lines and, at DEBUG, headers), ``uvicorn.access`` (the callback's
query string carries ``code`` and ``state``) and ``uvicorn.error``. The filter rewrites the
record before any formatter sees it: query parameters and form fields named like secrets,
``Authorization`` header values, JSON members named like secrets, PagerDuty-shaped tokens,
JWTs, and every value registered with :func:`register_secret` (client secret, keys) become
``[redacted]``. Context (request id, connection id, owner) travels in a ContextVar so every
line of a request carries it without passing loggers around.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, Literal

__all__ = [
    "REDACTED",
    "RedactionFilter",
    "configure_logging",
    "log_context",
    "protect_handlers",
    "redact",
    "register_secret",
]

REDACTED: Final = "[redacted]"

# Names whose values are secrets wherever they appear as key=value, key: value or "key": "value".
_SECRET_NAMES = (
    "code",
    "state",
    "code_verifier",
    "verifier",
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "token",
    "binding",
    "session_secret",
    "encryption_keys",
    "password",
    "api_key",
    "api_keys",
    "assertion",
    "csrf",
    "csrf_token",
)
_NAMES = "|".join(sorted(_SECRET_NAMES, key=len, reverse=True))

_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    # Authorization header values: "Bearer x", "Token token=x", "Basic x".
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=%-]+"), rf"\1 {REDACTED}"),
    (re.compile(r"(?i)\btoken\s+token=[^\s,;'\"&]+"), f"Token token={REDACTED}"),
    # JSON members: "access_token": "…"
    (re.compile(rf'(?i)("(?:{_NAMES})"\s*:\s*)"(?:[^"\\]|\\.)*"'), rf'\1"{REDACTED}"'),
    # Python reprs of dict items: 'access_token': '…'
    (re.compile(rf"(?i)('(?:{_NAMES})'\s*:\s*)'(?:[^'\\]|\\.)*'"), rf"\1'{REDACTED}'"),
    # Query strings and form bodies: code=…&state=…   (also b'…' bytes reprs of bodies)
    (re.compile(rf"(?i)(?<![A-Za-z0-9_])((?:{_NAMES})=)[^&\s'\"<>]*"), rf"\1{REDACTED}"),
    # Cookie headers (httpcore's DEBUG header tuples, raw header lines): session and binding
    # cookies are bearer credentials. (b'set-cookie', b'…') / ("cookie", "…") / Cookie: …
    (re.compile(r"(?i)(b?'(?:set-)?cookie',\s*b?)'[^']*'"), rf"\1'{REDACTED}'"),
    (re.compile(r'(?i)(b?"(?:set-)?cookie",\s*b?)"[^"]*"'), rf'\1"{REDACTED}"'),
    (re.compile(r"(?i)\b((?:set-)?cookie:\s*)[^\r\n]*"), rf"\1{REDACTED}"),
    # JWTs (id_tokens): three base64url segments starting with a JSON header.
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    # PagerDuty token shapes (pdus+_0…, pdus+_1…), raw or percent-encoded '+'.
    (re.compile(r"\bpd[a-z]{1,4}(?:\+|%2B)_[A-Za-z0-9_-]{6,}", re.IGNORECASE), REDACTED),
)

_registry_lock = threading.Lock()
_registered: set[str] = set()
_registered_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Redact ``value`` from every log line from now on (client secret, keys, API keys).

    Values shorter than 8 characters are ignored: redacting them would mangle ordinary text.
    """
    global _registered_pattern
    if not value or len(value) < 8:
        return
    with _registry_lock:
        if value in _registered:
            return
        _registered.add(value)
        alternatives = sorted(_registered, key=len, reverse=True)
        _registered_pattern = re.compile("|".join(re.escape(v) for v in alternatives))


def redact(text: str) -> str:
    """Return ``text`` with every secret-looking value replaced by ``[redacted]``."""
    pattern = _registered_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return text


_context: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "pdauth_log_context", default=None
)


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Attach fields (``request_id``, ``connection_id``, ``owner``) to every record inside."""
    merged = dict(_context.get() or {})
    merged.update({k: v for k, v in fields.items() if v is not None})
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class RedactionFilter(logging.Filter):
    """Rewrites a record so that neither its message nor its traceback holds a secret.

    The message is formatted once here (``msg % args``), redacted and stored back with
    ``args`` cleared; a traceback is rendered and redacted into ``exc_text`` so formatters
    print the redacted text instead of rendering the exception again.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not take logging down
            message = f"{record.msg!r} (unformattable arguments)"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            rendered = "".join(traceback.format_exception(*record.exc_info))
            record.exc_text = redact(rendered.rstrip("\n"))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{key}={getattr(record, key)}"
            for key in ("request_id", "connection_id", "owner")
            if getattr(record, key, None)
        )
        return f"{line} [{context}]" if context else line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "connection_id", "owner", "event"):
            value = getattr(record, key, None)
            if value:
                payload[key] = value
        if record.exc_text:
            payload["exception"] = record.exc_text
        return json.dumps(payload, ensure_ascii=False)


# Loggers that handle secrets in their normal work; their handlers get the filter too.
_SENSITIVE_LOGGERS: Final = ("httpx", "httpcore", "uvicorn", "uvicorn.access", "uvicorn.error")


def configure_logging(
    level: str = "INFO",
    fmt: Literal["text", "json"] = "text",
    *,
    stream: Any = None,
) -> logging.Handler:
    """Install pdauth's handler on the root logger and redaction on every known handler.

    Idempotent: a second call replaces the handler it installed before. Returns the handler
    (tests attach to its stream).
    """
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_pdauth", False):
            root.removeHandler(existing)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler._pdauth = True  # type: ignore[attr-defined]
    handler.addFilter(RedactionFilter())
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    protect_handlers()
    return handler


def protect_handlers() -> None:
    """Put a RedactionFilter on every handler of the root and of the sensitive loggers."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in _SENSITIVE_LOGGERS)]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactionFilter) for f in handler.filters):
                handler.addFilter(RedactionFilter())
