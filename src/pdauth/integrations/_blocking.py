"""The Connect PagerDuty flow for blocking web frameworks (Django, Flask), framework-neutral.

:class:`BlockingFlow` does what the service's browser routes do, through a
:class:`~pdauth.sync_connector.SyncConnector`, and answers with a :class:`Reply` that the
framework adapter (``pdauth.integrations.django`` / ``.flask``) turns into a response. The
browser binding of each started flow goes into a signed (itsdangerous, keyed by
``PDAUTH_SESSION_SECRET``) cookie scoped to the folder of pdauth's routes, HttpOnly,
SameSite=Lax and Secure on https, tagged with the owner it was made for and holding up to ten
flows (several tabs); the callback refuses a browser without the binding for its state, or
signed in as another owner, *before* the Connector consumes anything or calls PagerDuty
(docs/SECURITY.md items 2 and 5). Failures get the service's own reasons and texts
(:data:`pdauth.service.views.FLOW_FAILURES`, chosen by
:func:`pdauth.service.flow.failure_kind`): a clear page, never a secret, never a 500 (items 12,
13). Success is a 303 to a clean URL with ``Referrer-Policy: no-referrer`` and ``Cache-Control:
no-store``. CSRF is the framework's job: the adapters check it before calling in here.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import jinja2
from itsdangerous import BadSignature, URLSafeTimedSerializer

from pdauth.clock import SystemClock
from pdauth.connections import PENDING_TTL, Connection, safe_return_to
from pdauth.errors import ConfigurationError, ConnectionNotFoundError, PdauthError, StoreError
from pdauth.logs import protect_host_loggers
from pdauth.service.flow import failure_kind, single_state
from pdauth.service.views import FLOW_FAILURES, TEMPLATES as SERVICE_TEMPLATES, FlowFailure
from pdauth.sync_connector import SyncConnector

__all__ = ["BINDING_COOKIE", "BlockingFlow", "Csrf", "Reply", "Urls"]

_SYSTEM = SystemClock()  # the default when a caller gives no time of its own

BINDING_COOKIE: Final = "pdauth_binding"
MAX_FLOWS = 10
_NO_STORE: Final = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
_STATUS_LABELS: Final = {
    "active": "Active",
    "needs_reauth": "Needs re-authorization",
    "revoked": "Disconnected",
}
_TEMPLATES = jinja2.Environment(
    # The embedded pages, and the service's templates for the page head they share with it.
    loader=jinja2.PrefixLoader(
        {
            "pdauth_embedded": jinja2.FileSystemLoader(
                Path(__file__).parent / "templates" / "pdauth_embedded"
            ),
            "pdauth_service": jinja2.FileSystemLoader(SERVICE_TEMPLATES),
        }
    ),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


@dataclass(frozen=True)
class Csrf:
    """The framework's CSRF form field (name and value) to put in every POST form."""

    name: str
    value: str


@dataclass(frozen=True)
class Urls:
    """Where the integration's pages are, as the framework's router names them."""

    home: str
    connect: str
    disconnect: Callable[[str], str]


@dataclass(frozen=True)
class Reply:
    """What to answer: a status, an HTML body or a redirect, and the binding cookie's fate.

    ``binding_cookie``: None leaves the cookie alone, ``""`` deletes it, else the new value.
    """

    status: int
    html: str = ""
    location: str | None = None
    binding_cookie: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: dict(_NO_STORE))


# The pages of this integration's own refusals, beside the flow's FLOW_FAILURES.
_FORBIDDEN = FlowFailure(
    403,
    "Not allowed",
    "Your session expired or the form is out of date. Reload the page.",
    can_retry=False,
)
_MISROUTED = FlowFailure(
    503,
    "This application is misconfigured",
    "PagerDuty would send you back to an address this application does not serve, so nothing "
    "was started. Tell the site's administrator.",
    can_retry=False,
)
_NOT_FOUND = FlowFailure(
    404, "Not found", "There is no such PagerDuty connection.", can_retry=False
)


class BlockingFlow:
    """Connect, callback, disconnect and the connection list over one SyncConnector."""

    def __init__(self, connector: SyncConnector) -> None:
        settings = connector.settings
        if settings.session_secret is None:
            raise ConfigurationError(
                "PDAUTH_SESSION_SECRET is required to embed pdauth (it signs the flow cookie)"
            )
        self.connector = connector
        secret = settings.session_secret.get_secret_value().encode()
        self._tag_key = hmac.new(secret, b"pdauth.integrations.tags.v1", "sha256").digest()
        self._cookies = URLSafeTimedSerializer(secret, salt="pdauth.integrations.binding.v1")
        self.callback_path = urlsplit(settings.redirect_uri).path or "/"
        #: The binding cookie's path: the folder of the callback, which is also where
        #: ``connect`` is routed (so a second tab's flow is added to the same cookie); the
        #: host's other pages never receive it.
        self.cookie_path = self.callback_path.rsplit("/", 1)[0] + "/"
        #: The cookie lives as long as a pending authorization.
        self.cookie_max_age = PENDING_TTL
        protect_host_loggers(settings)

    # -- pages -------------------------------------------------------------------------------

    def home(self, owner: str | None, csrf: Csrf, urls: Urls, *, connected: bool = False) -> Reply:
        """The signed-in owner's connections, with Connect / Reconnect / Disconnect buttons."""
        if owner is None:
            return self.failure("not_signed_in", None, csrf, urls)
        try:
            found = self.connector.connections(owner)
        except StoreError:
            return self.failure("storage", owner, csrf, urls)
        shown = [_view(c, urls) for c in found if c.status != "revoked"]
        html = self._render(
            "connections.html",
            title="PagerDuty connections",
            connections=shown,
            connected=connected,
            csrf=csrf,
            urls=urls,
            return_to=None,
        )
        return Reply(200, html)

    def failure(self, kind: str, owner: str | None, csrf: Csrf, urls: Urls) -> Reply:
        """The page for one of the flow's failure reasons (``FLOW_FAILURES``)."""
        failure = FLOW_FAILURES[kind]
        return self._failure_page(failure, csrf, urls, can_retry=owner is not None)

    def forbidden(self, csrf: Csrf, urls: Urls) -> Reply:
        """A POST whose CSRF token did not match (the framework checked it)."""
        return self._failure_page(_FORBIDDEN, csrf, urls)

    def misrouted(self, csrf: Csrf, urls: Urls) -> Reply:
        """The page when the callback is not routed at the redirect URI's path."""
        return self._failure_page(_MISROUTED, csrf, urls)

    def callback_path_problem(self, routed_path: str) -> str | None:
        """Why the flow cannot work when the callback is routed at ``routed_path`` (or None)."""
        if routed_path == self.callback_path:
            return None
        return (
            f"PDAUTH_REDIRECT_URI's path is {self.callback_path!r} but the callback is routed "
            f"at {routed_path!r}; mount pdauth's routes so that they match"
        )

    # -- the flow ------------------------------------------------------------------------------

    def connect(
        self,
        owner: str | None,
        return_to: object,
        binding_cookie: str | None,
        csrf: Csrf,
        urls: Urls,
    ) -> Reply:
        """Begin a flow for ``owner`` (the CSRF token was checked by the framework)."""
        if owner is None:
            return self.failure("not_signed_in", None, csrf, urls)
        try:
            start = self.connector.begin(owner, return_to=safe_return_to(return_to))
        except StoreError:
            return self.failure("storage", owner, csrf, urls)
        owner_tag = self._tag("owner", owner)
        flows: list[list[Any]] = []
        existing = self._read(binding_cookie)
        if existing is not None and hmac.compare_digest(existing.get("o", ""), owner_tag):
            flows = existing["f"][-(MAX_FLOWS - 1) :]  # this owner's other tabs keep theirs
        flows.append([self._tag("state", start.state), start.binding, _SYSTEM.now()])
        cookie = self._cookies.dumps({"o": owner_tag, "f": flows})
        return Reply(303, location=start.url, binding_cookie=cookie)

    def callback(
        self,
        owner: str | None,
        query: str,
        binding_cookie: str | None,
        csrf: Csrf,
        urls: Urls,
    ) -> Reply:
        """The redirect back from PagerDuty: check the browser, then complete the flow."""
        if owner is None:
            # The host says nobody is signed in; the flow stays bound to its owner.
            return self.failure("not_signed_in", None, csrf, urls)
        state = single_state(query)
        binding: str | None = None
        if state is not None:
            cookie = self._read(binding_cookie)
            if cookie is None or not hmac.compare_digest(
                cookie.get("o", ""), self._tag("owner", owner)
            ):
                return self.failure("other_browser", owner, csrf, urls)
            tag = self._tag("state", state)
            binding = next((f[1] for f in cookie["f"] if hmac.compare_digest(f[0], tag)), None)
            if binding is None:
                # This browser did not start that flow: refuse before anything is consumed.
                return self.failure("other_browser", owner, csrf, urls)
        # A missing or repeated state is left to the Connector, which refuses the malformed
        # callback (CallbackError) before consuming anything. The flow stays in the cookie, so
        # a reload of this URL is told "already used", not "another browser".
        try:
            _, return_to = self.connector.complete_with_return_to(query, binding, owner=owner)
        except PdauthError as exc:
            return self.failure(failure_kind(exc), owner, csrf, urls)
        target = safe_return_to(return_to) or urls.home + "?connected=1"
        return Reply(303, location=target)

    def disconnect(self, owner: str | None, connection_id: str, csrf: Csrf, urls: Urls) -> Reply:
        """Disconnect one of ``owner``'s connections (CSRF checked by the framework)."""
        if owner is None:
            return self.failure("not_signed_in", None, csrf, urls)
        try:
            # Another owner's connection id is indistinguishable from an unknown one.
            self.connector.disconnect(connection_id[:64], owner=owner)
        except ConnectionNotFoundError:
            return self._failure_page(_NOT_FOUND, csrf, urls)
        except StoreError:
            return self.failure("storage", owner, csrf, urls)
        return Reply(303, location=urls.home)

    # -- helpers -------------------------------------------------------------------------------

    def _tag(self, kind: str, value: str) -> str:
        return hmac.new(self._tag_key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:32]

    def _read(self, value: str | None) -> dict[str, Any] | None:
        if not value or len(value) > 4096:
            return None
        try:
            data = self._cookies.loads(value, max_age=int(self.cookie_max_age))
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("o"), str):
            return None
        flows = data.get("f")
        if not isinstance(flows, list) or not all(_is_flow(f) for f in flows):
            return None
        return data

    def _failure_page(
        self, failure: FlowFailure, csrf: Csrf, urls: Urls, *, can_retry: bool = True
    ) -> Reply:
        """``failure.html`` for ``failure``; a retry is offered when both allow it."""
        html = self._render(
            "failure.html",
            title=failure.heading,
            heading=failure.heading,
            message=failure.message,
            can_retry=failure.can_retry and can_retry,
            csrf=csrf,
            urls=urls,
            return_to=None,
        )
        return Reply(failure.status, html)

    def _render(self, template: str, **context: Any) -> str:
        return _TEMPLATES.get_template(f"pdauth_embedded/{template}").render(**context)


def _is_flow(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and isinstance(value[1], str)
    )


def _view(connection: Connection, urls: Urls) -> dict[str, Any]:
    return {
        "id": connection.id,
        "status": connection.status,
        "status_label": _STATUS_LABELS.get(connection.status, connection.status),
        "region": connection.region,
        "account_id": connection.account_id,
        "subdomain": connection.subdomain,
        "user_name": connection.user_name,
        "user_email": connection.user_email,
        "scopes": sorted(connection.scopes),
        "disconnect_url": urls.disconnect(connection.id),
    }
