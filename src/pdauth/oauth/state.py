"""The ``state`` parameter: CSRF protection for the redirect back (RFC 6749 §10.12).

A state is 256 bits from the CSPRNG (§10.10 asks for a guessing probability of at most
2^-128), base64url-encoded. The store keeps only its SHA-256 digest (:func:`state_digest`), so
a database read does not yield a value that completes anyone's pending authorization.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from pdauth.errors import CallbackError
from pdauth.oauth._syntax import is_state

__all__ = ["constant_time_equals", "generate_state", "state_digest", "validate_state"]


def generate_state() -> str:
    """A fresh state: 32 CSPRNG bytes as 43 base64url characters."""
    return secrets.token_urlsafe(32)


def validate_state(value: str) -> str:
    """Return ``value`` if it is a well-formed state, else raise CallbackError.

    The message never contains the value.
    """
    if not is_state(value):
        raise CallbackError("invalid_request", "state must be 1-256 characters of [A-Za-z0-9_-]")
    return value


def state_digest(state: str) -> str:
    """Hex SHA-256 of a (valid) state: the key pending authorizations are stored under."""
    validate_state(state)
    return hashlib.sha256(state.encode("ascii")).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    """Compare two secrets without leaking, through timing, where they first differ."""
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )
