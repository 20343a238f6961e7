"""Browser state for the service: a signed session cookie and the flow-binding cookie.

Cookies are signed and timestamped with itsdangerous (HMAC-SHA256; what Starlette's own
SessionMiddleware uses), verified in constant time (ASVS 11.2.4). Each purpose (``"session"``,
``"binding"``) has its own salt, so a session cookie can never be replayed as a binding cookie.
The payload is compact JSON in base64url; a value over 4 KiB, a signature older than the
cookie's lifetime or from the future, or a payload that is not a JSON object is refused before
anything reads it, and every field is then checked for type and range (a signed value is
trusted to be ours, not to be sane: a key rotation or a bug could have written it). Cookies
carry no token: the session holds a random id, the CSRF token, and, when a connect session or
the admin login signed the browser in, who it is and until when. Cookie attributes follow
docs/SECURITY.md item 37: ``HttpOnly``, ``SameSite=Lax`` (``Strict`` would drop the cookie on
the redirect back from PagerDuty), and on https the ``__Host-`` prefix with ``Secure`` and
``Path=/``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeGuard

from itsdangerous import BadData, TimestampSigner
from itsdangerous.encoding import base64_decode, base64_encode
from starlette.requests import HTTPConnection
from starlette.responses import Response

from pdauth.clock import SystemClock
from pdauth.returnto import safe_return_to
from pdauth.service.connect_sessions import ConnectSession, validate_owner

__all__ = [
    "MAX_FLOWS",
    "BindingCookie",
    "BrowserSession",
    "CookieJar",
    "CookieSigner",
    "FlowBinding",
    "new_session",
]

_SYSTEM = SystemClock()  # the default when a caller gives no time of its own

MAX_COOKIE_LENGTH = 4096
SESSION_LIFETIME = 12 * 3600.0  # a browser session, even an idle one, ends after this
BINDING_LIFETIME = 600.0  # pending authorizations expire after 10 minutes (the Connector's rule)
# The cookie keeps a binding twice as long, so a late callback is told "expired" by the
# Connector rather than "another browser" by us.
BINDING_COOKIE_LIFETIME = 2 * BINDING_LIFETIME
CLOCK_SKEW = 60.0  # how far in the future a signature or issued-at may lie


class _SignerAt(TimestampSigner):
    """itsdangerous' timestamp signer reading the service's clock instead of the system's."""

    def __init__(self, secret: bytes, salt: str, now: float) -> None:
        super().__init__(
            secret, salt=salt, key_derivation="hmac", digest_method=hashlib.sha256, sep="."
        )
        self._now = int(now)

    def get_timestamp(self) -> int:
        return self._now


class CookieSigner:
    """Signs and verifies small JSON objects for one purpose (``"session"``, ``"binding"``)."""

    def __init__(self, secret: bytes, purpose: str) -> None:
        if len(secret) < 32:
            raise ValueError("the signing secret must be at least 32 bytes")
        self._secret = secret
        self._salt = "pdauth.cookie." + purpose
        self._purpose = purpose
        self._tag_key = _SignerAt(secret, self._salt + ".tag", 0).derive_key()

    def __repr__(self) -> str:
        return f"CookieSigner(purpose={self._purpose!r})"

    def sign(self, data: dict[str, Any], now: float | None = None) -> str:
        """``data`` as a signed cookie value, timestamped ``now`` (default: the system clock)."""
        raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8")
        signer = _SignerAt(self._secret, self._salt, _SYSTEM.now() if now is None else now)
        return signer.sign(base64_encode(raw)).decode("ascii")

    def unsign(
        self, value: str | None, now: float | None = None, max_age: float | None = None
    ) -> dict[str, Any] | None:
        """The signed object, or ``None`` for anything missing, oversized, malformed, forged,
        older than ``max_age`` seconds or signed more than a minute in the future."""
        if not value or len(value) > MAX_COOKIE_LENGTH or not value.isascii():
            return None
        clock = _SYSTEM.now() if now is None else now
        signer = _SignerAt(self._secret, self._salt, clock)
        try:
            payload, signed_at = signer.unsign(value, return_timestamp=True)
        except (BadData, ValueError, OverflowError):
            return None
        # The age is checked here rather than by itsdangerous, which refuses any signature from
        # the future; a minute of skew between instances is tolerated.
        age = clock - signed_at.timestamp()
        if age < -CLOCK_SKEW or (max_age is not None and age > max_age):
            return None
        try:
            data = json.loads(base64_decode(payload))
        except (BadData, ValueError, RecursionError):
            return None
        return data if isinstance(data, dict) else None

    def tag(self, value: str) -> str:
        """A short keyed digest of ``value`` (e.g. an owner) that reveals nothing about it."""
        digest = hmac.new(self._tag_key, value.encode("utf-8"), hashlib.sha256).digest()
        return base64_encode(digest[:16]).decode("ascii")


@dataclass(frozen=True)
class BrowserSession:
    """What the service remembers about one browser (signed, client-side)."""

    sid: str = field(repr=False)
    csrf: str = field(repr=False)
    issued_at: float
    owner: str | None = None
    owner_until: float | None = None
    admin_until: float | None = None
    # The admin session's random id; the database keeps only its SHA-256 (service/admin.py).
    admin_sid: str | None = field(default=None, repr=False)
    pending_link: ConnectSession | None = None  # a connect-session link opened, not yet used
    flash: str | None = None  # a one-time message for the next page ("connected")

    def owner_at(self, now: float) -> str | None:
        if self.owner is not None and self.owner_until is not None and now < self.owner_until:
            return self.owner
        return None

    def is_admin(self, now: float) -> bool:
        """The cookie's side of an admin session; the server-side row must be live too."""
        return self.admin_until is not None and now < self.admin_until and bool(self.admin_sid)

    def without_flash(self) -> BrowserSession:
        return replace(self, flash=None)

    def rotated(self, now: float, **changes: Any) -> BrowserSession:
        """A new session id and CSRF token, as at any login (ASVS 7.2.4)."""
        return replace(
            self,
            sid=secrets.token_urlsafe(16),
            csrf=secrets.token_urlsafe(32),
            issued_at=now,
            **changes,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "csrf": self.csrf,
            "iat": self.issued_at,
            "own": self.owner,
            "own_exp": self.owner_until,
            "adm_exp": self.admin_until,
            "adm_sid": self.admin_sid,
            "lnk": None
            if self.pending_link is None
            else [
                self.pending_link.owner,
                self.pending_link.return_to,
                self.pending_link.expires_at,
                self.pending_link.jti,
                self.pending_link.expected_account,
                self.pending_link.expected_user,
            ],
            "fl": self.flash,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], now: float) -> BrowserSession | None:
        try:
            sid, csrf, iat = data["sid"], data["csrf"], data["iat"]
            owner, owner_until, admin_until = data["own"], data["own_exp"], data["adm_exp"]
        except KeyError:
            return None
        if not (isinstance(sid, str) and isinstance(csrf, str) and _is_number(iat)):
            return None
        if not (owner is None or isinstance(owner, str)):
            return None
        if not all(v is None or _is_number(v) for v in (owner_until, admin_until)):
            return None
        if not (now - SESSION_LIFETIME < iat <= now + CLOCK_SKEW):
            return None
        flash = data.get("fl")
        admin_sid = data.get("adm_sid")
        return cls(
            sid,
            csrf,
            float(iat),
            owner,
            owner_until,
            admin_until,
            admin_sid if isinstance(admin_sid, str) and admin_sid else None,
            _link(data.get("lnk")),
            flash if flash in FLASHES else None,
        )


FLASHES = frozenset({"connected"})


def _link(value: object) -> ConnectSession | None:
    # Four entries from before links named an expected account and user; six since.
    if not isinstance(value, list) or len(value) not in (4, 6):
        return None
    owner, return_to, expires_at, jti, account, user = [*value, None, None][:6]
    if validate_owner(owner) is None or not isinstance(jti, str) or not _is_number(expires_at):
        return None
    if return_to is not None and safe_return_to(return_to) is None:
        return None
    expected = [v for v in (account, user) if v is not None]
    if any(validate_owner(v) is None for v in expected):
        return None
    return ConnectSession(
        owner,
        return_to,
        float(expires_at),
        jti,
        expected_account=account,
        expected_user=user,
    )


def _is_number(value: object) -> TypeGuard[float]:
    # A finite number a float can hold: JSON also carries NaN, Infinity and 400-digit integers.
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def new_session(now: float) -> BrowserSession:
    return BrowserSession(secrets.token_urlsafe(16), secrets.token_urlsafe(32), now)


@dataclass(frozen=True)
class FlowBinding:
    """One pending flow's browser binding: the Connector's opaque value, keyed by a state tag."""

    state_tag: str
    binding: str = field(repr=False)
    created_at: float


@dataclass(frozen=True)
class BindingCookie:
    """The browser half of the flow bindings: the owner they were made for and each flow's value.

    ``Connector.begin`` makes a fresh binding per flow, so one browser with several tabs holds
    several; each is filed under a keyed digest of its flow's ``state`` (the state itself is
    not kept), which lets the callback pick the right one — or refuse at once, before anything
    is consumed, when this browser holds none for that state. At most :data:`MAX_FLOWS` are
    kept (the oldest is dropped), which bounds the cookie well under 4 KB (docs/SECURITY.md item 5).
    """

    owner_tag: str = field(repr=False)
    flows: tuple[FlowBinding, ...] = ()

    def live(self, now: float) -> BindingCookie:
        kept = tuple(
            f
            for f in self.flows
            if now - BINDING_COOKIE_LIFETIME < f.created_at <= now + CLOCK_SKEW
        )
        return BindingCookie(self.owner_tag, kept)

    def with_flow(self, flow: FlowBinding) -> BindingCookie:
        flows = (*(f for f in self.flows if f.state_tag != flow.state_tag), flow)
        return BindingCookie(self.owner_tag, flows[-MAX_FLOWS:])

    def find(self, state_tag: str) -> FlowBinding | None:
        for flow in self.flows:
            if hmac.compare_digest(flow.state_tag, state_tag):
                return flow
        return None


MAX_FLOWS = 10


class CookieJar:
    """Reads and writes the service's two cookies with the right names and attributes."""

    SESSION = "pdauth_session"
    BINDING = "pdauth_binding"

    def __init__(self, secret: bytes, *, secure: bool, path: str = "/") -> None:
        self._session = CookieSigner(secret, "session")
        self._binding = CookieSigner(secret, "binding")
        self.secure = secure
        # The __Host- prefix demands Path=/ (RFC 6265bis §4.1.3.2); on plain http (loopback
        # development) the cookie is scoped to the mount prefix instead.
        self.path = "/" if secure else (path or "/")

    def name(self, base: str) -> str:
        return f"__Host-{base}" if self.secure else base

    def _set(self, response: Response, base: str, value: str, max_age: int | None) -> None:
        response.set_cookie(
            self.name(base),
            value,
            max_age=max_age,
            path=self.path,
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )

    def _delete(self, response: Response, base: str) -> None:
        samesite: Literal["lax"] = "lax"
        response.delete_cookie(
            self.name(base), path=self.path, secure=self.secure, httponly=True, samesite=samesite
        )

    # session
    def read_session(self, conn: HTTPConnection, now: float) -> BrowserSession | None:
        value = conn.cookies.get(self.name(self.SESSION))
        data = self._session.unsign(value, now, SESSION_LIFETIME)
        return None if data is None else BrowserSession.from_json(data, now)

    def write_session(
        self, response: Response, session: BrowserSession, now: float | None = None
    ) -> None:
        # No Max-Age: a browser-session cookie; the signed issued-at bounds its life anyway.
        signed_at = session.issued_at if now is None else now
        self._set(response, self.SESSION, self._session.sign(session.to_json(), signed_at), None)

    def clear_session(self, response: Response) -> None:
        self._delete(response, self.SESSION)

    # binding
    def owner_tag(self, owner: str) -> str:
        return self._binding.tag("owner|" + owner)

    def state_tag(self, state: str) -> str:
        return self._binding.tag("state|" + state)

    def read_binding(self, conn: HTTPConnection, now: float) -> BindingCookie | None:
        """The live flow bindings of this browser, or ``None`` without a valid cookie."""
        value = conn.cookies.get(self.name(self.BINDING))
        data = self._binding.unsign(value, now, BINDING_COOKIE_LIFETIME + CLOCK_SKEW)
        if data is None:
            return None
        tag, flows = data.get("o"), data.get("f")
        if not isinstance(tag, str) or not isinstance(flows, list):
            return None
        parsed: list[FlowBinding] = []
        for entry in flows[:MAX_FLOWS]:
            if not (isinstance(entry, list) and len(entry) == 3):
                return None
            state_tag, binding, created = entry
            if not (isinstance(state_tag, str) and isinstance(binding, str)):
                return None
            if not _is_number(created):
                return None
            parsed.append(FlowBinding(state_tag, binding, float(created)))
        return BindingCookie(tag, tuple(parsed)).live(now)

    def write_binding(
        self, response: Response, cookie: BindingCookie, now: float | None = None
    ) -> None:
        if now is None:  # signed when its newest flow began
            now = max((f.created_at for f in cookie.flows), default=_SYSTEM.now())
        value = self._binding.sign(
            {
                "o": cookie.owner_tag,
                "f": [[f.state_tag, f.binding, f.created_at] for f in cookie.flows],
            },
            now,
        )
        self._set(response, self.BINDING, value, int(BINDING_COOKIE_LIFETIME))

    def binding_matches_owner(self, cookie: BindingCookie, owner: str) -> bool:
        return hmac.compare_digest(cookie.owner_tag, self.owner_tag(owner))
