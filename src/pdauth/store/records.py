"""The values that go into and come out of the store: frozen dataclasses, validated on creation.

``New*`` records are what callers hand to :class:`pdauth.store.Store`; ``*Row`` records are
what it returns, one field per column. Token and verifier columns hold ciphertext only (the
caller encrypts with :mod:`pdauth.crypto`); they are still kept out of ``repr`` so that
logging a row never spreads them. Event data is JSON and must never carry a secret, so
:class:`NewEvent` refuses keys that name one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "CONNECTION_KINDS",
    "CONNECTION_STATUSES",
    "EVENT_TYPE",
    "MAX_EVENT_TYPE",
    "REGIONS",
    "SECRET_KEYS",
    "ConnectionRow",
    "EventRow",
    "NewConnection",
    "NewEvent",
    "NewPending",
    "PendingRow",
]

CONNECTION_KINDS: Final = ("user", "app")
REGIONS: Final = ("us", "eu")
CONNECTION_STATUSES: Final = ("active", "needs_reauth", "revoked")

MAX_OWNER_LENGTH: Final = 255
_STATE_HASH = re.compile(r"[0-9a-f]{64}")
#: A pdauth event type: a dotted lower-case name of at most MAX_EVENT_TYPE characters.
EVENT_TYPE: Final = re.compile(r"[a-z][a-z_]*(\.[a-z][a-z_]*)+")
MAX_EVENT_TYPE: Final = 64
#: Keys that would put a plaintext secret into the audit log; ciphertext keys (``*_ct``) pass.
SECRET_KEYS: Final = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "code",
        "code_verifier",
        "verifier",
        "state",
        "client_secret",
        "secret",
        "password",
        "authorization",
        "key",
    }
)


def _require_text(name: str, value: str, *, max_length: int | None = None) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    if max_length is not None and len(value) > max_length:
        raise ValueError(f"{name} must be at most {max_length} characters")


def _check_no_secret_keys(value: object, path: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"event data keys must be strings (at {path})")
            if key.lower() in SECRET_KEYS:
                raise ValueError(f"event data must not carry secrets (key {path}.{key})")
            _check_no_secret_keys(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_no_secret_keys(item, f"{path}[{index}]")


@dataclass(frozen=True, kw_only=True)
class NewConnection:
    """A connection as learned at the end of the connect flow, tokens already encrypted.

    ``kind='user'`` needs ``pd_user_id``; ``kind='app'`` (app-level grant) has none.
    ``scopes`` is the granted scope string, space-separated as on the wire.
    """

    owner: str
    kind: str
    region: str
    account_id: str
    scopes: str
    access_token_ct: str = field(repr=False)
    refresh_token_ct: str | None = field(repr=False)
    key_id: str
    access_expires_at: float | None
    refresh_expires_at: float | None
    subdomain: str | None = None
    pd_user_id: str | None = None
    pd_user_name: str | None = None
    pd_user_email: str | None = None
    delegation_id: str | None = None

    def __post_init__(self) -> None:
        _require_text("owner", self.owner, max_length=MAX_OWNER_LENGTH)
        if self.kind not in CONNECTION_KINDS:
            raise ValueError(f"kind must be one of {', '.join(CONNECTION_KINDS)}")
        if self.region not in REGIONS:
            raise ValueError(f"region must be one of {', '.join(REGIONS)}")
        _require_text("account_id", self.account_id, max_length=255)
        if self.kind == "user":
            _require_text("pd_user_id", self.pd_user_id or "", max_length=255)
        elif self.pd_user_id is not None:
            raise ValueError("an app connection has no pd_user_id")
        if not isinstance(self.scopes, str):
            raise ValueError("scopes must be a space-separated string")
        _require_text("access_token_ct", self.access_token_ct)
        if self.refresh_token_ct is not None:
            _require_text("refresh_token_ct", self.refresh_token_ct)
        _require_text("key_id", self.key_id, max_length=64)


@dataclass(frozen=True, kw_only=True)
class ConnectionRow:
    """One row of ``connections``.

    ``token_version`` starts at 1 and moves on every change of the token pair (refresh,
    reconnect, needs_reauth, revoke), never on re-encryption under a new key, so a cache of
    decrypted tokens can be keyed by ``(id, token_version)``.
    """

    id: str
    owner: str
    kind: str
    region: str
    account_id: str
    subdomain: str | None
    pd_user_id: str | None
    pd_user_name: str | None
    pd_user_email: str | None
    delegation_id: str | None
    scopes: str
    status: str
    access_token_ct: str | None = field(repr=False)
    refresh_token_ct: str | None = field(repr=False)
    key_id: str | None
    access_expires_at: float | None
    refresh_expires_at: float | None
    token_version: int
    lease_owner: str | None
    lease_until: float | None
    created_at: float
    updated_at: float
    last_refreshed_at: float | None
    last_used_at: float | None
    last_error_code: str | None
    last_error_message: str | None
    last_error_at: float | None
    # Space-separated scopes PagerDuty said a call needs and the grant lacks, if any.
    missing_scopes: str | None = None

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    def lease_held(self, now: float) -> bool:
        """True while some worker holds an unexpired refresh lease."""
        return self.lease_until is not None and self.lease_until > now


@dataclass(frozen=True, kw_only=True)
class _Pending:
    """The columns of a ``pending_authorizations`` row as written: what the callback needs."""

    state_hash: str = field(repr=False)
    owner: str
    binding_hash: str = field(repr=False)
    verifier_ct: str = field(repr=False)
    redirect_uri: str
    scopes: str
    expires_at: float
    return_to: str | None = None
    # Who the link was meant for (subdomain or account id; user id or email), if anyone.
    expected_account: str | None = None
    expected_user: str | None = None
    # A re-consent: the connection an approval updates in place.
    connection_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class NewPending(_Pending):
    """A pending authorization: what the callback needs, keyed by the hash of ``state``.

    The state itself is never stored; ``verifier_ct`` is the encrypted PKCE verifier.
    """

    def __post_init__(self) -> None:
        if not isinstance(self.state_hash, str) or not _STATE_HASH.fullmatch(self.state_hash):
            raise ValueError("state_hash must be a lowercase hex SHA-256 digest")
        _require_text("owner", self.owner, max_length=MAX_OWNER_LENGTH)
        _require_text("binding_hash", self.binding_hash, max_length=128)
        _require_text("verifier_ct", self.verifier_ct)
        _require_text("redirect_uri", self.redirect_uri)
        if not isinstance(self.scopes, str):
            raise ValueError("scopes must be a space-separated string")


@dataclass(frozen=True, kw_only=True)
class PendingRow(_Pending):
    """One consumed row of ``pending_authorizations``; the caller checks expiry and binding."""

    created_at: float

    def is_expired(self, now: float) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True, kw_only=True)
class NewEvent:
    """An audit event, also an outbox entry unless ``outbox=False``.

    ``type`` is dotted (``connection.refreshed``). ``data`` must be JSON-serialisable and
    must not carry secrets: keys such as ``access_token`` or ``state`` are refused (ciphertext
    keys ending in ``_ct`` are allowed). When the event is written together with a connection
    change, the store fills ``connection_id`` and ``owner`` from that connection.
    """

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    connection_id: str | None = None
    owner: str | None = None
    outbox: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or len(self.type) > MAX_EVENT_TYPE:
            raise ValueError("event type must be a dotted name of at most 64 characters")
        if not EVENT_TYPE.fullmatch(self.type):
            raise ValueError("event type must be a dotted lowercase name like connection.created")
        if not isinstance(self.data, Mapping):
            raise ValueError("event data must be a mapping")
        _check_no_secret_keys(self.data, "data")
        try:
            json.dumps(self.data, allow_nan=False)
        except (TypeError, ValueError):
            raise ValueError("event data must be JSON-serialisable") from None
        if self.owner is not None:
            _require_text("owner", self.owner, max_length=MAX_OWNER_LENGTH)
        # A read-only view, so a frozen event cannot be changed through its data.
        object.__setattr__(self, "data", MappingProxyType(dict(self.data)))

    def data_json(self) -> str:
        return json.dumps(dict(self.data), sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True, kw_only=True)
class EventRow:
    """One row of ``events``; ``id`` is the cursor (strictly increasing in commit order)."""

    id: int
    type: str
    connection_id: str | None
    owner: str | None
    data: Mapping[str, Any]
    created_at: float
    delivered_at: float | None
    attempts: int
    next_attempt_at: float | None
    last_error: str | None
