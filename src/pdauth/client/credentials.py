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
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, Self, runtime_checkable

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


class _FixedCredential:
    """What :class:`StaticToken` and :class:`ApiKeyToken` share: one secret that never
    changes, checked on creation, sent after a fixed scheme and never refreshed.

    A subclass is a frozen dataclass holding the secret in its public field (out of the
    repr), points :attr:`_secret` at it and sets the four class constants below.
    """

    _kind: ClassVar[str]  # names the credential type in its pacing key
    _what: ClassVar[str]  # names the credential in the message refusing a malformed one
    _scheme: ClassVar[str]  # what precedes the secret in the header value
    _not_refreshable: ClassVar[str]  # the message of the 401 a refresh raises

    @property
    def _secret(self) -> str:
        raise NotImplementedError

    def __post_init__(self) -> None:
        secret = self._secret
        if not secret or not secret.isprintable() or secret != secret.strip() or len(secret) > 4096:
            raise ValueError(
                f"the {self._what} must be a non-empty printable string without spaces"
            )

    @cached_property
    def pacing_key(self) -> str:
        # A hash prefix is enough to tell credentials apart and says nothing usable about them.
        digest = hashlib.sha256(f"{self._kind}\0{self._secret}".encode()).hexdigest()[:16]
        return f"{self._kind}:{digest}"

    async def authorization(self) -> str:
        return f"{self._scheme}{self._secret}"

    async def refresh(self, rejected: str) -> str:
        raise AuthenticationError(401, self._not_refreshable)


@dataclass(frozen=True)
class StaticToken(_FixedCredential):
    """An OAuth access token used as is (scripts, tests): ``Authorization: Bearer <token>``."""

    token: str = field(repr=False)

    _kind = "bearer"
    _what = "access token"
    _scheme = "Bearer "
    _not_refreshable = "PagerDuty rejected the access token and a static token cannot be refreshed"

    @property
    def _secret(self) -> str:
        return self.token


@dataclass(frozen=True)
class ApiKeyToken(_FixedCredential):
    """A PagerDuty REST API key: ``Authorization: Token token=<key>``."""

    key: str = field(repr=False)

    _kind = "api_key"
    _what = "API key"
    _scheme = "Token token="
    _not_refreshable = "PagerDuty rejected the API key; an API key has no refresh"

    @property
    def _secret(self) -> str:
        return self.key


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
