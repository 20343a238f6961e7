"""Where the REST client gets its ``Authorization`` header: the :class:`TokenSource` port.

The Connector adapts its TokenManager (one connection, refresh single-flighted across
processes) to this Protocol; scripts use :class:`StaticToken` (an OAuth access token) or
:class:`ApiKeyToken` (a REST API key, ``Token token=…``), which have nothing to refresh.
``pacing_key`` names the credential for rate-limit pacing without revealing it: PagerDuty
counts requests per credential, so every client using the same one must share one budget.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, runtime_checkable

from pdauth.client.urls import DEFAULT_BASE_URL
from pdauth.errors import AuthenticationError

__all__ = ["ApiKeyToken", "FromToken", "StaticToken", "TokenSource", "token_source"]


@runtime_checkable
class TokenSource(Protocol):
    """A credential the client can send, and refresh once after a 401."""

    @property
    def pacing_key(self) -> str:
        """Stable, non-secret id of the credential (a connection id, or a token's hash)."""
        ...

    async def authorization(self) -> str:
        """The full header value: ``Bearer <token>`` or ``Token token=<key>``."""
        ...

    async def refresh(self, rejected: str) -> str:
        """After a 401: force ONE refresh unless the token changed since ``rejected`` (the
        header value that was refused); return the new header value. May raise
        :class:`~pdauth.errors.NeedsReauthError`."""
        ...


def _fingerprint(kind: str, secret: str) -> str:
    # A hash prefix is enough to tell credentials apart and says nothing usable about them.
    digest = hashlib.sha256(f"{kind}\0{secret}".encode()).hexdigest()[:16]
    return f"{kind}:{digest}"


def _check(secret: str, what: str) -> None:
    if not secret or not secret.isprintable() or secret != secret.strip() or len(secret) > 4096:
        raise ValueError(f"the {what} must be a non-empty printable string without spaces")


@dataclass(frozen=True)
class StaticToken:
    """An OAuth access token used as is (scripts, tests): ``Authorization: Bearer <token>``."""

    token: str = field(repr=False)

    def __post_init__(self) -> None:
        _check(self.token, "access token")

    @cached_property
    def pacing_key(self) -> str:
        return _fingerprint("bearer", self.token)

    async def authorization(self) -> str:
        return f"Bearer {self.token}"

    async def refresh(self, rejected: str) -> str:
        raise AuthenticationError(
            401, "PagerDuty rejected the access token and a static token cannot be refreshed"
        )


@dataclass(frozen=True)
class ApiKeyToken:
    """A PagerDuty REST API key: ``Authorization: Token token=<key>``."""

    key: str = field(repr=False)

    def __post_init__(self) -> None:
        _check(self.key, "API key")

    @cached_property
    def pacing_key(self) -> str:
        return _fingerprint("api_key", self.key)

    async def authorization(self) -> str:
        return f"Token token={self.key}"

    async def refresh(self, rejected: str) -> str:
        raise AuthenticationError(401, "PagerDuty rejected the API key; an API key has no refresh")


def token_source(token: str, kind: Literal["bearer", "api_key"]) -> TokenSource:
    """The credential behind ``from_token``: a static OAuth access token (``kind="bearer"``) or
    a REST API key (``kind="api_key"``)."""
    if kind == "bearer":
        return StaticToken(token)
    if kind == "api_key":
        return ApiKeyToken(token)
    raise ValueError("kind must be 'bearer' or 'api_key'")


class FromToken:
    """Base of a client built as ``cls(base_url, tokens, **options)`` (the async client and its
    blocking twin): gives it :meth:`from_token`."""

    if TYPE_CHECKING:

        def __init__(self, base_url: str, tokens: TokenSource, **kw: Any) -> None: ...

    @classmethod
    def from_token(
        cls,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        kind: Literal["bearer", "api_key"] = "bearer",
        **kw: Any,
    ) -> Self:
        """A client for a static OAuth access token (``kind="bearer"``) or a REST API key
        (``kind="api_key"``)."""
        return cls(base_url, token_source(token, kind), **kw)
