"""Everything the emulator remembers: apps, codes, grants, tokens, signing keys, faults, counters.

One :class:`EmulatorState` per emulator app. The identity side writes it (codes, grants,
tokens); the REST side reads it (:meth:`EmulatorState.authenticate`) and counts into its
``stats``; the control API pokes it (clock, faults, revocation, key rotation); the counters and
the fault queue live in :mod:`~pdauth.emulator.instruments`. A *grant* is
PagerDuty's OAuth delegation (its id is the id_token ``delegation_id``): revoking it kills
every access and refresh token issued under it (CONCEPTS.md in PagerDuty/api-schema). Handlers
run on one event loop and never await while mutating, so a mutation is atomic there; a lock
guards the few calls tests make from another thread (e.g. against an ``EmulatorServer``).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import RSAKey

from pdauth.emulator.config import AppKind, EmulatorConfig
from pdauth.emulator.instruments import Fault, FaultKind, FaultQueue, FaultTarget, Stats
from pdauth.emulator.webhooks import WebhookHub

if TYPE_CHECKING:
    from pdauth.emulator.data import Directory

__all__ = [
    "AuthCode",
    "EmulatorClock",
    "EmulatorState",
    "Fault",
    "FaultKind",
    "FaultQueue",
    "FaultTarget",
    "Grant",
    "IssuedToken",
    "KeyRing",
    "OAuthApp",
    "PendingConsent",
    "RefreshToken",
    "Region",
    "Stats",
]

Region = Literal["us", "eu"]

_ID_ALPHABET = string.ascii_uppercase + string.digits
CODE_PRUNE_AT = 10_000
CODE_MEMORY = 3600.0


def new_pd_id(prefix: str = "P") -> str:
    """A PagerDuty-looking id: ``P`` + 6 uppercase alphanumerics (random, not seeded)."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))


class EmulatorClock:
    """The emulator's own clock: real time plus an offset tests can push forward.

    ``EmulatorClock(start=…)`` freezes the base instead (deterministic tests): ``now()`` is then
    ``start + offset`` and only moves through :meth:`advance`.
    """

    def __init__(self, start: float | None = None) -> None:
        self._start = start
        self._offset = 0.0
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        base = time.time() if self._start is None else self._start
        return base + self._offset

    @property
    def offset(self) -> float:
        return self._offset

    def advance(self, seconds: float) -> None:
        if not seconds >= 0:  # also refuses NaN
            raise ValueError("the emulator clock does not go backwards")
        with self._lock:
            self._offset += seconds
            listeners = list(self._listeners)
        for listener in listeners:  # e.g. webhook deliveries that just became due
            listener()

    def on_advance(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (from the advancing thread) after every :meth:`advance`."""
        with self._lock:
            self._listeners.append(listener)


@dataclass(frozen=True)
class OAuthApp:
    """A registered OAuth client.

    ``client_secret=None`` is a public client (Classic only; PKCE mandatory). ``account_id``
    pins a Scoped app to its own account (PagerDuty's Scoped apps are private to one account);
    ``None`` lets users of any account authorize it, as a Classic app allows.
    """

    client_id: str
    name: str
    kind: AppKind
    redirect_uris: tuple[str, ...]
    scopes: frozenset[str]
    client_secret: str | None = field(default=None, repr=False)
    account_id: str | None = None

    @property
    def confidential(self) -> bool:
        return self.client_secret is not None

    @property
    def pkce_required(self) -> bool:
        """Scoped apps and public clients must use PKCE (06-OAuth-Functionality.md)."""
        return self.kind == "scoped" or not self.confidential


@dataclass
class Grant:
    """An OAuth delegation: one user's consent to one app (or an app token's account grant)."""

    id: str
    client_id: str
    account_id: str
    user_id: str | None
    scopes: frozenset[str]
    region: Region
    kind: AppKind
    created_at: float
    delegation_type: Literal["web", "mobile", "integration"] = "web"
    revoked: bool = False
    revoked_at: float | None = None
    sid: str = field(default_factory=lambda: str(uuid.uuid4()))
    auth_time: float = 0.0

    def expires_at(self, config: EmulatorConfig) -> float:
        """When the rolling refresh window ends (no refresh can extend a grant past it)."""
        return self.created_at + config.rolling_window(self.kind)


@dataclass
class AuthCode:
    """An authorization code: single use, short-lived, bound to client, redirect and challenge."""

    value: str = field(repr=False)
    client_id: str
    redirect_uri: str
    code_challenge: str | None = field(repr=False)
    account_id: str
    user_id: str
    scopes: frozenset[str]
    expires_at: float
    nonce: str | None = field(default=None, repr=False)
    used: bool = False
    grant_id: str | None = None  # set by the first successful exchange


@dataclass
class IssuedToken:
    """An access token the identity side issued; the REST side authenticates requests with it."""

    value: str = field(repr=False)
    client_id: str
    account_id: str
    user_id: str | None  # None for app (client_credentials) tokens
    scopes: frozenset[str]
    region: Region
    expires_at: float
    grant_id: str
    revoked: bool = False
    issued_at: float = 0.0


@dataclass
class RefreshToken:
    """A refresh token; ``rotated`` once it has been exchanged for a new pair."""

    value: str = field(repr=False)
    grant_id: str
    client_id: str
    expires_at: float
    rotated: bool = False
    revoked: bool = False


@dataclass(frozen=True)
class PendingConsent:
    """The authorize parameters behind a rendered consent page; they stay on the server so
    ``state`` and the PKCE challenge never reach HTML and cannot be tampered with."""

    params: dict[str, str] = field(repr=False)
    expires_at: float


class KeyRing:
    """The RS256 keys that sign id_tokens; the newest signs, older ones may stay in the JWKS.

    Keys are generated with ``cryptography`` at start (2048-bit); the ``kid`` is the RFC 7638
    thumbprint, as many providers use.
    """

    def __init__(self, key: rsa.RSAPrivateKey | None = None) -> None:
        self._lock = threading.Lock()
        self._keys: list[RSAKey] = [self._make(key)]

    @staticmethod
    def _make(key: rsa.RSAPrivateKey | None) -> RSAKey:
        private = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAKey.import_key(private, {"use": "sig", "alg": "RS256"})
        jwk.ensure_kid()
        return jwk

    @property
    def current_kid(self) -> str:
        kid = self._keys[0].kid
        assert kid is not None
        return kid

    def kids(self) -> list[str]:
        return [k.kid for k in self._keys if k.kid is not None]

    def rotate(self, *, keep_old: bool = True, key: rsa.RSAPrivateKey | None = None) -> str:
        """Start signing with a new key; returns its kid. ``keep_old=False`` drops the others."""
        new = self._make(key)
        with self._lock:
            self._keys = [new, *self._keys] if keep_old else [new]
        return self.current_kid

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set (RFC 7517 §5) served at ``/global/oauth/anonymous/jwks``."""
        return {"keys": [k.as_dict(private=False) for k in self._keys]}

    def sign(self, claims: dict[str, Any]) -> str:
        key = self._keys[0]
        return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, claims, key)


def at_hash(access_token: str) -> str:
    """OIDC Core §3.1.3.6: left half of SHA-256 of the access token, base64url, no padding."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


class EmulatorState:
    """The emulator's memory. Build it with a config and B's seeded ``Directory``.

    Token shapes copy PagerDuty's examples: access ``pdus+_0<ID>_<uuid>``, refresh
    ``pdus+_1<ID>_<uuid>``; the ``+`` makes form-encoding bugs visible.
    """

    def __init__(
        self,
        config: EmulatorConfig,
        directory: Directory,
        *,
        clock: EmulatorClock | None = None,
        keys: KeyRing | None = None,
    ) -> None:
        self.config = config
        self.directory = directory
        self.clock = clock or EmulatorClock()
        self.keys = keys or KeyRing()
        self.stats = Stats()
        self.faults = FaultQueue()
        self.apps: dict[str, OAuthApp] = {}
        self.grants: dict[str, Grant] = {}
        self.codes: dict[str, AuthCode] = {}
        self.access_tokens: dict[str, IssuedToken] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        # Token values per grant, so revoking a grant does not scan every token.
        self._by_grant: dict[str, list[str]] = {}
        self.lock = threading.RLock()
        # Consent pages awaiting a decision, keyed by the single-use nonce the page carries.
        self.consents: dict[str, PendingConsent] = {}
        self._token_tag = new_pd_id("X")[:6]
        # Other parts (e.g. the REST rate limiter) register here to be cleared by reset().
        self.reset_hooks: list[Callable[[], None]] = []
        # v3 webhook subscriptions and their deliveries (reset() forgets them too).
        self.webhooks = WebhookHub(self)
        self.reset_hooks.append(self.webhooks.reset)

    def reset(self) -> None:
        """Forget codes, grants, tokens, pending consents, faults, counters and (through its
        reset hook) webhook subscriptions with their queues; apps, keys,
        the clock and the directory stay."""
        with self.lock:
            self.codes.clear()
            self.grants.clear()
            self.access_tokens.clear()
            self.refresh_tokens.clear()
            self._by_grant.clear()
            self.consents.clear()
        self.faults.clear()
        self.stats.reset()
        for hook in self.reset_hooks:
            hook()

    # -- apps ------------------------------------------------------------------------------

    def register_app(self, app: OAuthApp) -> None:
        """Add or replace an app (replacing does not revoke tokens: PagerDuty neither)."""
        with self.lock:
            self.apps[app.client_id] = app

    def app(self, client_id: str) -> OAuthApp | None:
        return self.apps.get(client_id)

    # -- authentication (REST side) --------------------------------------------------------

    def authenticate(self, token: str) -> IssuedToken | None:
        """The access token's record, or ``None`` if unknown, expired or revoked."""
        issued = self.access_tokens.get(token)
        if issued is None or issued.revoked:
            return None
        grant = self.grants.get(issued.grant_id)
        if grant is None or grant.revoked:
            return None
        if self.clock.now() >= issued.expires_at:
            return None
        return issued

    # -- issuing (identity side) -----------------------------------------------------------

    def issue_code(
        self,
        *,
        app: OAuthApp,
        redirect_uri: str,
        code_challenge: str | None,
        account_id: str,
        user_id: str,
        scopes: frozenset[str],
        nonce: str | None = None,
    ) -> AuthCode:
        code = AuthCode(
            value=secrets.token_urlsafe(32),
            client_id=app.client_id,
            redirect_uri=redirect_uri,
            code_challenge=code_challenge,
            account_id=account_id,
            user_id=user_id,
            scopes=scopes,
            expires_at=self.clock.now() + self.config.code_ttl,
            nonce=nonce,
        )
        with self.lock:
            if len(self.codes) >= CODE_PRUNE_AT:
                self._prune_codes()
            self.codes[code.value] = code
        self.stats.record_issued("code")
        return code

    def _prune_codes(self) -> None:
        # A code is kept well past its expiry so a late replay is still recognised (and
        # revokes its grant); after that it is forgotten, bounding memory in long runs.
        horizon = self.clock.now() - CODE_MEMORY
        for value in [v for v, c in self.codes.items() if c.expires_at < horizon]:
            del self.codes[value]

    def new_grant(
        self,
        *,
        app: OAuthApp,
        account_id: str,
        user_id: str | None,
        scopes: frozenset[str],
        region: Region,
        delegation_type: Literal["web", "mobile", "integration"] = "web",
    ) -> Grant:
        now = self.clock.now()
        grant = Grant(
            id=new_pd_id(),
            client_id=app.client_id,
            account_id=account_id,
            user_id=user_id,
            scopes=scopes,
            region=region,
            kind=app.kind,
            created_at=now,
            delegation_type=delegation_type,
            auth_time=now,
        )
        with self.lock:
            self.grants[grant.id] = grant
        return grant

    def issue_access_token(self, grant: Grant) -> IssuedToken:
        now = self.clock.now()
        value = f"pdus+_0{self._token_tag}_{uuid.uuid4()}"
        token = IssuedToken(
            value=value,
            client_id=grant.client_id,
            account_id=grant.account_id,
            user_id=grant.user_id,
            scopes=grant.scopes,
            region=grant.region,
            expires_at=now + self.config.access_ttl(grant.kind),
            grant_id=grant.id,
            issued_at=now,
        )
        with self.lock:
            self.access_tokens[value] = token
            self._by_grant.setdefault(grant.id, []).append(value)
        self.stats.record_issued("access")
        return token

    def issue_refresh_token(self, grant: Grant) -> RefreshToken:
        now = self.clock.now()
        expires = min(now + self.config.refresh_ttl(grant.kind), grant.expires_at(self.config))
        token = RefreshToken(
            value=f"pdus+_1{self._token_tag}_{uuid.uuid4()}",
            grant_id=grant.id,
            client_id=grant.client_id,
            expires_at=expires,
        )
        with self.lock:
            self.refresh_tokens[token.value] = token
            self._by_grant.setdefault(grant.id, []).append(token.value)
        self.stats.record_issued("refresh")
        return token

    # -- revocation ------------------------------------------------------------------------

    def revoke_grant(self, grant_id: str) -> bool:
        """Revoke one grant and every access/refresh token under it; False if already gone."""
        with self.lock:
            grant = self.grants.get(grant_id)
            if grant is None or grant.revoked:
                return False
            grant.revoked = True
            grant.revoked_at = self.clock.now()
            access = refresh = 0
            for value in self._by_grant.get(grant_id, ()):
                at = self.access_tokens.get(value)
                if at is not None and not at.revoked:
                    at.revoked = True
                    access += 1
                rt = self.refresh_tokens.get(value)
                if rt is not None and not rt.revoked:
                    rt.revoked = True
                    refresh += 1
        self.stats.record_revoked("grant")
        self.stats.record_revoked("access", access)
        self.stats.record_revoked("refresh", refresh)
        return True

    def revoke(self, *, client_id: str | None = None, user_id: str | None = None) -> int:
        """Revoke every live grant matching both filters; returns how many grants were revoked.

        ``client_id`` alone is PagerDuty's "Revoke All Tokens" for an app; ``user_id`` (with or
        without ``client_id``) deletes a user's delegations. At least one filter is required.
        """
        if client_id is None and user_id is None:
            raise ValueError("revoke needs a client_id or a user_id")
        with self.lock:
            targets = [
                g.id
                for g in self.grants.values()
                if not g.revoked
                and (client_id is None or g.client_id == client_id)
                and (user_id is None or g.user_id == user_id)
            ]
            return sum(1 for gid in targets if self.revoke_grant(gid))

    def revoke_token(self, value: str) -> bool:
        """RFC 7009 semantics for ``/oauth/revoke``: a refresh token takes its grant with it;
        an access token is revoked alone. Unknown tokens are ignored (returns False)."""
        with self.lock:
            rt = self.refresh_tokens.get(value)
            if rt is not None:
                return self.revoke_grant(rt.grant_id)
            at = self.access_tokens.get(value)
            if at is not None and not at.revoked:
                at.revoked = True
                self.stats.record_revoked("access")
                return True
        return False

    # -- queries (REST /oauth_delegations, control API) ------------------------------------

    def grants_of(self, *, user_id: str | None = None, client_id: str | None = None) -> list[Grant]:
        """Grants (live and revoked) matching the filters, oldest first."""
        with self.lock:
            found: Iterable[Grant] = (
                g
                for g in self.grants.values()
                if (user_id is None or g.user_id == user_id)
                and (client_id is None or g.client_id == client_id)
            )
            return sorted(found, key=lambda g: (g.created_at, g.id))

    def live_access_tokens(self, grant_id: str) -> list[IssuedToken]:
        now = self.clock.now()
        with self.lock:
            found = (self.access_tokens.get(v) for v in self._by_grant.get(grant_id, ()))
            return [t for t in found if t is not None and not t.revoked and now < t.expires_at]
