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

When pdauth is embedded in a host application (FastAPI, Starlette, Django, Flask), the host
owns logging. :func:`protect_host_loggers` then puts the filter on the host's request and
access loggers themselves (uvicorn, gunicorn, Django's ``django.server``/``django.request``,
werkzeug) and on their handlers and the root's, so the callback's ``code`` and ``state`` never
reach a host log line. A filter on the *logger* also covers handlers the host's server adds
later (uvicorn and Django configure theirs at start-up). Access formatters that rebuild the
line from the record's arguments (uvicorn's ``AccessFormatter`` unpacks five args, gunicorn's
reads a mapping) keep working: the filter redacts the arguments in place and collapses them
into the message only when a secret straddles message and argument.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from pdauth.config import Settings

__all__ = [
    "REDACTED",
    "RedactionFilter",
    "configure_logging",
    "log_context",
    "protect_handlers",
    "protect_host_loggers",
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
        if not _redact_args_in_place(record):
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


def _redact_args_in_place(record: logging.LogRecord) -> bool:
    """Redact a record's message and arguments without merging them; False if that is unsafe.

    Formatters such as uvicorn's ``AccessFormatter`` (a 5-tuple) and gunicorn's access log (a
    mapping) need the arguments, so they are kept whenever redacting each of them leaves no
    secret in the formatted line. Otherwise (a secret split between message and argument, an
    argument whose ``str`` is a secret, a broken format) the caller merges and redacts.
    """
    args = record.args
    if not args or not isinstance(record.msg, str):
        return False
    new_args: tuple[object, ...] | dict[str, object]
    if isinstance(args, tuple):
        new_args = tuple(_redact_arg(a) for a in args)
    else:
        new_args = {str(k): _redact_arg(v) for k, v in args.items()}
    msg = redact(record.msg)
    try:
        formatted = msg % new_args
    except Exception:
        return False
    if redact(formatted) != formatted:
        return False
    record.msg, record.args = msg, new_args
    return True


def _redact_arg(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", "replace"))
    return value


# Log injection (docs/SECURITY.md item 50): values that reach a text line may come from
# outside (owner ids, error descriptions). In the message, every control character and every
# Unicode line or paragraph separator is written as an escape, so one record is one line for any
# tool that splits lines; context fields that are not plain tokens are JSON-quoted, so a value
# cannot forge a ``key=value`` pair or close the bracket.
_BREAKS_A_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_LINE_SEPARATORS = re.compile("[\x85\u2028\u2029]")
_PLAIN_FIELD = re.compile(r"[A-Za-z0-9._:@/+-]{1,200}")


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def _field(value: object) -> str:
    text = str(value)
    return text if _PLAIN_FIELD.fullmatch(text) else json.dumps(text)


class _TextFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        record.message = _BREAKS_A_LINE.sub(_escape, message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message

    def format(self, record: logging.LogRecord) -> str:
        # Tracebacks keep their newlines; separators other tools split on are escaped there too.
        line = _LINE_SEPARATORS.sub(_escape, super().format(record))
        context = " ".join(
            f"{key}={_field(getattr(record, key))}"
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


# The host's request and access loggers (uvicorn, gunicorn, Django's runserver and request
# loggers, Flask's werkzeug): the callback's query string goes through all of them.
_HOST_LOGGERS: Final = (
    "uvicorn",
    "uvicorn.access",
    "uvicorn.error",
    "gunicorn",
    "gunicorn.access",
    "gunicorn.error",
    "django",
    "django.server",
    "django.request",
    "werkzeug",
    "flask.app",
    "httpx",
    "httpcore",
)


def protect_host_loggers(settings: Settings | None = None, *, loggers: Iterable[str] = ()) -> None:
    """Redact secrets on the host application's loggers (pdauth embedded in an app).

    Idempotent. Puts a :class:`RedactionFilter` on each host request/access logger (so the
    lines they emit are rewritten before any handler, including handlers configured later,
    sees them), on their current handlers and on the root logger's handlers; with
    ``settings``, also registers its secret values (client secret, session secret, admin
    password, webhook secret, API keys, encryption keys) with :func:`register_secret`.
    ``loggers`` names more of the host's loggers (a Flask app's ``app.logger``). Call it again
    after the host reconfigures logging to cover new root handlers.
    """
    if settings is not None:
        _register_settings_secrets(settings)
    protected = [logging.getLogger(name) for name in (*_HOST_LOGGERS, *loggers)]
    for logger in protected:
        _add_filter(logger)
    for logger in [logging.getLogger(), *protected]:
        for handler in logger.handlers:
            _add_filter(handler)


def _add_filter(target: logging.Filterer) -> None:
    if not any(isinstance(f, RedactionFilter) for f in target.filters):
        target.addFilter(RedactionFilter())


def _register_settings_secrets(settings: Settings) -> None:
    for secret in (
        settings.client_secret,
        settings.session_secret,
        settings.admin_password,
        settings.webhook_secret,
    ):
        if secret is not None:
            register_secret(secret.get_secret_value())
    for key in settings.api_key_list():
        register_secret(key.get_secret_value())
    for entry in settings.encryption_keys.get_secret_value().split(","):
        register_secret(entry.partition(":")[2].strip())
