"""API keys for the JSON API: kept only as SHA-256 digests, checked in constant time.

``PDAUTH_API_KEYS`` is a comma-separated list of keys the host application's backend presents as
``Authorization: Bearer <key>``. At start-up each key is hashed and the plaintext dropped, so a
heap dump or a repr shows no key. A presented key is hashed and compared against every digest
with ``hmac.compare_digest`` (ASVS 11.2.4), without an early exit, so timing reveals neither
which key matched nor how much of one. Keys shorter than 16 characters are refused as
configuration errors: API keys here guard token vending.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from pdauth.errors import ConfigurationError

__all__ = ["MIN_API_KEY_LENGTH", "ApiKeyVerifier"]

MIN_API_KEY_LENGTH = 16
_MAX_PRESENTED = 512


class ApiKeyVerifier:
    """Digests of the configured API keys; ``verify(header)`` checks an Authorization value."""

    def __init__(self, keys: Iterable[str]) -> None:
        digests = []
        for key in keys:
            key = key.strip()
            if not key:
                continue
            if len(key) < MIN_API_KEY_LENGTH:
                raise ConfigurationError(
                    f"PDAUTH_API_KEYS: every key must be at least {MIN_API_KEY_LENGTH} characters"
                )
            digests.append(hashlib.sha256(key.encode("utf-8")).digest())
        self._digests = tuple(digests)

    @classmethod
    def from_config(cls, value: str | None) -> ApiKeyVerifier:
        return cls(value.split(",") if value else ())

    def __repr__(self) -> str:
        return f"ApiKeyVerifier(keys={len(self._digests)})"

    @property
    def configured(self) -> bool:
        return bool(self._digests)

    def verify(self, authorization: str | None) -> bool:
        if not self._digests or not authorization or len(authorization) > _MAX_PRESENTED:
            return False
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return False
        digest = hashlib.sha256(presented.strip().encode("utf-8", "replace")).digest()
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return matched
