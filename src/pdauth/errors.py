"""The one exception tree of pdauth.

Every error pdauth raises on purpose derives from :class:`PdauthError`, and every name
ends in ``Error``. Messages never contain a token, code, verifier, state, client secret
or key: they name what went wrong and, where it helps, which variable or scope to fix.

::

    PdauthError
    ├── ConfigurationError              settings missing or invalid (names the PDAUTH_ variable)
    ├── CryptoError
    │   ├── KeyNotFoundError            ciphertext names a key id the key ring lacks
    │   └── DecryptionError             tampered, swapped or wrongly bound ciphertext
    ├── OAuthError                      carries ``error``, ``description``, ``uri`` as on the wire
    │   ├── CallbackError               the redirect back from PagerDuty is malformed
    │   ├── AuthorizationDeniedError    the redirect carried ``error=`` (access_denied, …)
    │   ├── TokenResponseError          a token response that is not what RFC 6749 §5.1 promises
    │   │   └── InsufficientScopeError  granted scopes lack required ones (``missing_scopes``)
    │   ├── InvalidGrantError           code/refresh token expired, reused or revoked
    │   ├── InvalidClientError          client id/secret rejected: a configuration problem
    │   └── IdTokenError                id_token signature or claims invalid
    ├── FlowError                       the connect flow cannot continue
    │   ├── UnknownStateError           no pending authorization for this state (or replayed)
    │   ├── FlowExpiredError            the pending authorization is older than its lifetime
    │   ├── BindingMismatchError        callback delivered to another browser or owner
    │   └── UnexpectedGrantError        approved by another account or user than expected
    ├── ConnectionNotFoundError         no such connection (or not this owner's)
    ├── NeedsReauthError                the connection is dead; the user must reconnect
    ├── StoreError                      the database failed or refused a write
    │   └── LeaseUnavailableError       another worker holds the refresh lease for too long
    ├── TransportError                  could not talk to PagerDuty (connect error, timeout)
    │   └── DeadlineExceededError       the call's deadline passed (including rate-limit waits)
    ├── RequestRefusedError             pdauth refused to send a call (URL outside the API base)
    └── PagerDutyAPIError               PagerDuty answered a REST call with an error status
        ├── AuthenticationError         401: token rejected
        ├── ScopeError                  403: token lacks scopes (``required_scopes`` when known)
        ├── RateLimitedError            429 and the deadline does not allow another wait
        └── PaginationLimitError        classic pagination would pass PagerDuty's 10 000 cap
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "AuthenticationError",
    "AuthorizationDeniedError",
    "BindingMismatchError",
    "CallbackError",
    "ConfigurationError",
    "ConnectionNotFoundError",
    "CryptoError",
    "DeadlineExceededError",
    "DecryptionError",
    "FlowError",
    "FlowExpiredError",
    "IdTokenError",
    "InsufficientScopeError",
    "InvalidClientError",
    "InvalidGrantError",
    "KeyNotFoundError",
    "LeaseUnavailableError",
    "NeedsReauthError",
    "OAuthError",
    "PagerDutyAPIError",
    "PaginationLimitError",
    "PdauthError",
    "RateLimitedError",
    "RequestRefusedError",
    "ScopeError",
    "StoreError",
    "TokenResponseError",
    "TransportError",
    "UnexpectedGrantError",
    "UnknownStateError",
]


class PdauthError(Exception):
    """Root of every error pdauth raises on purpose."""


class ConfigurationError(PdauthError):
    """Settings are missing or invalid; the message names the ``PDAUTH_`` variable."""


class CryptoError(PdauthError):
    """Encryption or decryption failed; never falls back to plaintext."""


class KeyNotFoundError(CryptoError):
    """A ciphertext names a key id that the key ring does not hold."""


class DecryptionError(CryptoError):
    """A ciphertext was tampered with, truncated, or bound to other associated data."""


class OAuthError(PdauthError):
    """An OAuth 2.0 protocol error, with the wire fields of RFC 6749 §5.2 / §4.1.2.1."""

    def __init__(self, error: str, description: str | None = None, uri: str | None = None) -> None:
        self.error = error
        self.description = description
        self.uri = uri
        super().__init__(f"{error}: {description}" if description else error)


class CallbackError(OAuthError):
    """The authorization response (the redirect back to us) is malformed."""


class AuthorizationDeniedError(OAuthError):
    """The authorization server redirected back with ``error=…`` (RFC 6749 §4.1.2.1)."""


class TokenResponseError(OAuthError):
    """A token endpoint response that breaks RFC 6749 §5.1 (or our size limits)."""


class InsufficientScopeError(TokenResponseError):
    """The granted scopes do not cover the required ones.

    PagerDuty silently grants only ``openid`` for an invalid scope, so this is checked on
    every token response.
    """

    def __init__(self, missing_scopes: Sequence[str], granted_scopes: Sequence[str]) -> None:
        self.missing_scopes = tuple(sorted(missing_scopes))
        self.granted_scopes = tuple(sorted(granted_scopes))
        super().__init__(
            "insufficient_scope",
            "PagerDuty did not grant the required scopes: " + " ".join(self.missing_scopes),
        )


class InvalidGrantError(OAuthError):
    """The code or refresh token is invalid, expired, reused or revoked."""


class InvalidClientError(OAuthError):
    """The client credentials were rejected: a configuration error, not a dead connection."""


class IdTokenError(OAuthError):
    """The id_token failed signature or claim validation."""

    def __init__(self, description: str) -> None:
        super().__init__("invalid_id_token", description)


class FlowError(PdauthError):
    """The connect flow cannot continue; the user should start again."""


class UnknownStateError(FlowError):
    """No pending authorization matches this state (never issued, or already used)."""


class FlowExpiredError(FlowError):
    """The pending authorization expired before the callback arrived."""


class BindingMismatchError(FlowError):
    """The callback reached a browser (or owner) other than the one that started the flow."""


class UnexpectedGrantError(FlowError):
    """The approval came from another PagerDuty account or user than the flow expected.

    ``reason`` is ``unexpected_account`` or ``unexpected_user``; ``expected_account`` and
    ``expected_user`` are what the flow was meant for (no secret: a subdomain, an account or
    user id, an email the host named). Nothing was stored; the fresh tokens were revoked.
    """

    def __init__(
        self, reason: str, *, expected_account: str | None, expected_user: str | None
    ) -> None:
        self.reason = reason
        self.expected_account = expected_account
        self.expected_user = expected_user
        if reason == "unexpected_account":
            what = f"the PagerDuty account {expected_account}"
        else:
            what = f"the PagerDuty user {expected_user}"
        super().__init__(f"this link was meant for {what}; another one approved it")


class ConnectionNotFoundError(PdauthError):
    """No connection with this id (or it belongs to another owner)."""


class NeedsReauthError(PdauthError):
    """The connection's grant is dead (revoked or expired); the user must reconnect."""

    def __init__(
        self, connection_id: str, reason: str = "the connection needs re-authorization"
    ) -> None:
        self.connection_id = connection_id
        self.reason = reason
        super().__init__(f"connection {connection_id}: {reason}")


class StoreError(PdauthError):
    """The database failed or refused a write."""


class LeaseUnavailableError(StoreError):
    """Another worker held the refresh lease longer than we could wait."""


class TransportError(PdauthError):
    """PagerDuty could not be reached: connection error, TLS error or timeout."""


class DeadlineExceededError(TransportError):
    """The call's deadline passed, including any rate-limit or retry waits."""


class RequestRefusedError(PdauthError, ValueError):
    """pdauth refused to send a call: a URL outside the API base URL (the credential would
    travel elsewhere), a malformed path, or a header the client owns."""


class PagerDutyAPIError(PdauthError):
    """PagerDuty answered a REST call with an error status.

    ``code`` and ``message`` come from PagerDuty's error envelope
    (``{"error": {"message": …, "code": …, "errors": […]}}``) when there is one.
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: int | None = None,
        errors: Sequence[str] = (),
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.code = code
        self.errors = tuple(errors)
        self.method = method
        self.path = path
        where = f" ({method} {path})" if method and path else ""
        detail = f" [code {code}]" if code is not None else ""
        super().__init__(f"PagerDuty answered {status}{where}{detail}: {message}")


class AuthenticationError(PagerDutyAPIError):
    """401: PagerDuty rejected the token (expired, revoked, or wrong region)."""


class ScopeError(PagerDutyAPIError):
    """403: the token lacks a scope; ``required_scopes`` when PagerDuty says which."""

    def __init__(self, *args: Any, required_scopes: Sequence[str] = (), **kwargs: Any) -> None:
        # PagerDutyAPIError's arguments, and this one.
        self.required_scopes = tuple(required_scopes)
        super().__init__(*args, **kwargs)


class RateLimitedError(PagerDutyAPIError):
    """429, and the call's deadline leaves no room for another wait."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        # PagerDutyAPIError's arguments, and this one.
        self.retry_after = retry_after
        super().__init__(*args, **kwargs)


class PaginationLimitError(PagerDutyAPIError):
    """Classic offset pagination would pass PagerDuty's offset+limit ≤ 10 000 cap."""
