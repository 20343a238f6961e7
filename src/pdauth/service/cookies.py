"""Browser state for the service: an HMAC-signed session cookie and the flow-binding cookie.

itsdangerous is not a dependency, so cookies are signed with the standard construction it uses
too: ``base64url(json) "." base64url(HMAC-SHA256(key, purpose ‖ payload))``, verified with
``hmac.compare_digest`` (ASVS 11.2.4). Keys are derived from ``PDAUTH_SESSION_SECRET`` per
purpose (HMAC as a KDF with a label), so a session cookie can never be replayed as a binding
cookie. Cookies carry no token: the session holds a random id, the CSRF token, and, when a
connect session or the admin login signed the browser in, who it is and until when. Cookie
attributes follow SECURITY-CHECKLIST.md item 37: ``HttpOnly``, ``SameSite=Lax`` (``Strict``
would drop the cookie on the redirect back from PagerDuty), and on https the ``__Host-`` prefix
with ``Secure`` and ``Path=/``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeGuard

from starlette.requests import HTTPConnection
from starlette.responses import Response

from pdauth.service.connect_sessions import ConnectSession, validate_owner
from pdauth.service.returnto import safe_return_to

__all__ = [
    "MAX_FLOWS",
    "BindingCookie",
    "BrowserSession",
    "CookieJar",
    "CookieSigner",
    "FlowBinding",
    "new_session",
]

MAX_COOKIE_LENGTH = 4096
SESSION_LIFETIME = 12 * 3600.0  # a browser session, even an idle one, ends after this
BINDING_LIFETIME = 600.0  # pending authorizations expire after 10 minutes (the Connector's rule)
# The cookie keeps a binding twice as long, so a late callback is told "expired" by the
# Connector rather than "another browser" by us.
BINDING_COOKIE_LIFETIME = 2 * BINDING_LIFETIME


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CookieSigner:
    """Signs and verifies small JSON objects for one purpose (``"session"``, ``"binding"``)."""

    def __init__(self, secret: bytes, purpose: str) -> None:
        if len(secret) < 32:
            raise ValueError("the signing secret must be at least 32 bytes")
        self._purpose = purpose.encode("ascii")
        self._key = hmac.new(secret, b"pdauth.cookie." + self._purpose, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"CookieSigner(purpose={self._purpose.decode()!r})"

    def _mac(self, payload: str) -> str:
        mac = hmac.new(self._key, self._purpose + b"|" + payload.encode("ascii"), hashlib.sha256)
        return _b64encode(mac.digest())

    def sign(self, data: dict[str, Any]) -> str:
        raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8")
        payload = _b64encode(raw)
        return f"{payload}.{self._mac(payload)}"

    def unsign(self, value: str | None) -> dict[str, Any] | None:
        """The signed object, or ``None`` for anything missing, oversized, malformed or forged."""
        if not value or len(value) > MAX_COOKIE_LENGTH or value.count(".") != 1:
            return None
        payload, mac = value.split(".")
        try:
            expected = self._mac(payload)
        except UnicodeEncodeError:
            return None
        if not hmac.compare_digest(mac.encode("ascii", "replace"), expected.encode("ascii")):
            return None
        try:
            data = json.loads(_b64decode(payload))
        except (binascii.Error, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def tag(self, value: str) -> str:
        """A short keyed digest of ``value`` (e.g. an owner) that reveals nothing about it."""
        return _b64encode(hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).digest()[:16])


@dataclass(frozen=True)
class BrowserSession:
    """What the service remembers about one browser (signed, client-side)."""

    sid: str = field(repr=False)
    csrf: str = field(repr=False)
    issued_at: float
    owner: str | None = None
    owner_until: float | None = None
    admin_until: float | None = None
    pending_link: ConnectSession | None = None  # a connect-session link opened, not yet used

    def owner_at(self, now: float) -> str | None:
        if self.owner is not None and self.owner_until is not None and now < self.owner_until:
            return self.owner
        return None

    def is_admin(self, now: float) -> bool:
        return self.admin_until is not None and now < self.admin_until

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
            "lnk": None
            if self.pending_link is None
            else [
                self.pending_link.owner,
                self.pending_link.return_to,
                self.pending_link.expires_at,
                self.pending_link.jti,
            ],
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
        if not (now - SESSION_LIFETIME < iat <= now + 60):
            return None
        return cls(sid, csrf, float(iat), owner, owner_until, admin_until, _link(data.get("lnk")))


def _link(value: object) -> ConnectSession | None:
    if not isinstance(value, list) or len(value) != 4:
        return None
    owner, return_to, expires_at, jti = value
    if validate_owner(owner) is None or not isinstance(jti, str) or not _is_number(expires_at):
        return None
    if return_to is not None and safe_return_to(return_to) is None:
        return None
    return ConnectSession(owner, return_to, float(expires_at), jti)


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
    kept (the oldest is dropped), which bounds the cookie well under 4 KB (checklist item 5).
    """

    owner_tag: str = field(repr=False)
    flows: tuple[FlowBinding, ...] = ()

    def live(self, now: float) -> BindingCookie:
        kept = tuple(
            f for f in self.flows if now - BINDING_COOKIE_LIFETIME < f.created_at <= now + 60
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
        data = self._session.unsign(conn.cookies.get(self.name(self.SESSION)))
        return None if data is None else BrowserSession.from_json(data, now)

    def write_session(self, response: Response, session: BrowserSession) -> None:
        # No Max-Age: a browser-session cookie; the signed issued-at bounds its life anyway.
        self._set(response, self.SESSION, self._session.sign(session.to_json()), None)

    def clear_session(self, response: Response) -> None:
        self._delete(response, self.SESSION)

    # binding
    def owner_tag(self, owner: str) -> str:
        return self._binding.tag("owner|" + owner)

    def state_tag(self, state: str) -> str:
        return self._binding.tag("state|" + state)

    def read_binding(self, conn: HTTPConnection, now: float) -> BindingCookie | None:
        """The live flow bindings of this browser, or ``None`` without a valid cookie."""
        data = self._binding.unsign(conn.cookies.get(self.name(self.BINDING)))
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

    def write_binding(self, response: Response, cookie: BindingCookie) -> None:
        value = self._binding.sign(
            {
                "o": cookie.owner_tag,
                "f": [[f.state_tag, f.binding, f.created_at] for f in cookie.flows],
            }
        )
        self._set(response, self.BINDING, value, int(BINDING_COOKIE_LIFETIME))

    def binding_matches_owner(self, cookie: BindingCookie, owner: str) -> bool:
        return hmac.compare_digest(cookie.owner_tag, self.owner_tag(owner))
