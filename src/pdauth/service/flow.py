"""The connect flow's browser endpoints: ``POST /connect``, the callback, and connect-session links.

``POST /connect`` starts a flow through ``Connector.begin`` and files the flow's browser binding
in an HttpOnly, SameSite=Lax cookie tagged with the owner it was made for; the cookie keeps the
bindings of up to ten pending flows, so several tabs can connect at once (docs/SECURITY.md items
2, 5). The callback refuses, *before* the Connector consumes anything or calls PagerDuty, a
browser that holds no binding for the callback's state or is signed in as another owner; then
``Connector.complete_with_return_to`` consumes the state once, checks binding and owner, and
exchanges the code. The answer is a 303 to a clean URL (the ``return_to`` stored with the
pending authorization, or the home page) with ``Referrer-Policy: no-referrer`` and
``Cache-Control: no-store`` (item 12), and every failure is a friendly page with no secret and
no attacker-chosen text in it (item 13). ``/connect``, the callback and connect links are
rate-limited per client (item 42). The callback's path is the configured redirect URI's
(``ServiceOptions.callback_path``), so :func:`routes` takes it.
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from pdauth.connect_flow import UnexpectedGrantError
from pdauth.errors import (
    AuthorizationDeniedError,
    BindingMismatchError,
    CallbackError,
    ConnectionNotFoundError,
    FlowExpiredError,
    IdTokenError,
    InsufficientScopeError,
    InvalidClientError,
    InvalidGrantError,
    OAuthError,
    PdauthError,
    StoreError,
    TransportError,
    UnknownStateError,
)
from pdauth.returnto import safe_return_to
from pdauth.service.browser import Page, limited
from pdauth.service.connect_sessions import ConnectSession
from pdauth.service.cookies import BindingCookie, BrowserSession, FlowBinding
from pdauth.service.core import service_of

__all__ = ["CONNECTED_FLASH", "failure_kind", "routes", "single_state"]

_UNAVAILABLE_ERRORS = frozenset({"server_error", "temporarily_unavailable"})
#: The flash a successful callback leaves in the session, so the next page says "Connected".
CONNECTED_FLASH = "connected"


@limited("connect")
async def connect(request: Request) -> Response:
    service = service_of(request)
    page = Page(request)
    form = await page.checked_form()
    return_to = safe_return_to(form.get("return_to"))
    if form.get("connect_session") == "1":
        link = page.session.pending_link
        if link is None or not await service.connect_sessions.redeem(link):
            page.replace_session(_with_link(page.session, None))
            return await page.failure("link_used")
        # Opening a connect link is this browser's sign-in: new session id and CSRF token. The
        # flow runs for the link's owner, whom the host's backend named with its API key (in an
        # embedding host too, where the session keeps that owner for the callback only).
        page.replace_session(
            page.session.rotated(
                page.now,
                owner=link.owner,
                owner_until=page.now + service.options.owner_session_seconds,
                pending_link=None,
            )
        )
        return await _begin(
            page,
            link.owner,
            link.return_to,
            expect_account=link.expected_account,
            expect_user=link.expected_user,
        )
    owner = await page.owner()
    if owner is None:
        return await page.failure("not_signed_in")
    # "Grant more access": a re-consent that updates this owner's connection in place (an
    # unknown id, or another owner's, is ConnectionNotFoundError: a 404 at the app's edge).
    connection_id = form.get("connection_id")
    if not isinstance(connection_id, str) or not connection_id:
        connection_id = None
    return await _begin(page, owner, return_to, connection_id=connection_id)


async def _begin(
    page: Page,
    owner: str,
    return_to: str | None,
    *,
    expect_account: str | None = None,
    expect_user: str | None = None,
    connection_id: str | None = None,
) -> Response:
    cookies = page.service.cookies
    connector = await page.service.connector()
    try:
        start = await connector.begin(
            owner,
            return_to=return_to,
            expect_account=expect_account,
            expect_user=expect_user,
            connection_id=connection_id,
        )
    except StoreError:
        return await page.failure("storage")
    except ValueError:  # a crafted re-consent of a connection that cannot have one (an app)
        return await page.failure("cannot_reconsent")
    existing = cookies.read_binding(page.request, page.now)
    if existing is None or not cookies.binding_matches_owner(existing, owner):
        # Another owner's flows in this browser end here; this owner's tabs keep theirs.
        existing = BindingCookie(cookies.owner_tag(owner))
    flow = FlowBinding(cookies.state_tag(start.state), start.binding, page.now)
    response = RedirectResponse(start.url, status_code=303)
    cookies.write_binding(response, existing.with_flow(flow), now=page.now)
    return page.finish(response)


@limited("callback")
async def callback(request: Request) -> Response:
    service = service_of(request)
    page = Page(request)
    query = request.scope.get("query_string", b"").decode("latin-1")
    owner = await page.owner()
    binding: str | None = None
    state = single_state(query)
    if state is not None:
        found = _binding_for(page, state, owner)
        if found is None:
            # This browser did not start that flow (or its cookie expired, or it belongs to
            # another owner): refuse before anything is consumed or PagerDuty is called.
            return await page.failure("other_browser")
        owner, binding = found
    if owner is None and service.owner_resolver is not None:
        # Embedded: the host says nobody is signed in; the flow stays bound to its owner.
        return await page.failure("not_signed_in")
    # A missing or repeated state is left to the Connector, which refuses the malformed
    # callback (CallbackError) before consuming anything.
    connector = await service.connector()
    try:
        completed, return_to = await connector.complete_with_return_to(query, binding, owner=owner)
    except PdauthError as exc:
        detail = _unexpected_message(exc) if isinstance(exc, UnexpectedGrantError) else None
        return await page.failure(failure_kind(exc), message=detail)
    session = replace(page.session, flash=CONNECTED_FLASH)  # the next page says "Connected"
    if owner is None:
        # The binding proved this browser started the flow for this owner.
        session = session.rotated(
            page.now,
            owner=completed.owner,
            owner_until=page.now + service.options.owner_session_seconds,
        )
    page.replace_session(session)
    target = safe_return_to(return_to) or page.path("home")
    return page.finish(RedirectResponse(target, status_code=303))


def _binding_for(page: Page, state: str, owner: str | None) -> tuple[str | None, str] | None:
    """The owner a callback completes for and this browser's binding for ``state``, or None.

    The owner is the signed-in one; in an embedding host, a flow started from a connect link
    runs for the link's owner (kept in the session when the link was redeemed), so a binding
    made for that owner is accepted too.
    """
    cookies = page.service.cookies
    cookie = cookies.read_binding(page.request, page.now)
    flow = cookie.find(cookies.state_tag(state)) if cookie is not None else None
    if cookie is None or flow is None:
        return None
    if owner is not None and cookies.binding_matches_owner(cookie, owner):
        return owner, flow.binding
    linked = page.session.owner_at(page.now)
    embedded = page.service.owner_resolver is not None
    if embedded and linked is not None and cookies.binding_matches_owner(cookie, linked):
        return linked, flow.binding
    if owner is None:
        return None, flow.binding
    return None


@limited("connect")
async def connect_session(request: Request) -> Response:
    service = service_of(request)
    page = Page(request)
    # The token rides in the query as ``token=`` so that pdauth's log redaction (which masks
    # ``token=…`` in access-log lines) keeps it out of the logs.
    link = service.connect_sessions.open(request.query_params.get("token", ""))
    if link is None:
        return await page.failure("link_used")
    # Only remembered here; the link is used up when the user presses the button, so mail
    # scanners and link previews that fetch the URL do not spend it.
    page.replace_session(_with_link(page.session, link))
    return await page.render(
        "connect_session.html",
        {
            "title": "Connect PagerDuty",
            "session_owner": link.owner,
            "expires_at": link.expires_at,
            "app_name": service.options.app_name or "this application",
            "app_title": service.options.app_name or "This application",
            "expected_account": link.expected_account,
            "expected_user": link.expected_user,
        },
    )


def _unexpected_message(exc: UnexpectedGrantError) -> str:
    if exc.reason == "unexpected_account":
        meant = f"the PagerDuty account {exc.expected_account}"
    else:
        meant = f"the PagerDuty user {exc.expected_user}"
    return (
        f"This link was meant for {meant}, but another one approved it. Nothing was "
        "connected and the access just granted was withdrawn. If the link was meant for you, "
        "sign in to PagerDuty as that account or user and ask the application for a new link; "
        "otherwise, whoever sent it to you may be trying to get at your PagerDuty account."
    )


def _with_link(session: BrowserSession, link: ConnectSession | None) -> BrowserSession:
    return replace(session, pending_link=link)


def single_state(query: str) -> str | None:
    """The callback's ``state`` when it appears exactly once, else ``None``."""
    try:
        values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "state"]
    except ValueError:
        return None
    return values[0] if len(values) == 1 and values[0] else None


def failure_kind(exc: PdauthError) -> str:
    """Which friendly page a failed callback gets (checked most specific first)."""
    if isinstance(exc, UnexpectedGrantError):
        return exc.reason  # unexpected_account / unexpected_user
    if isinstance(exc, AuthorizationDeniedError):
        if exc.error == "access_denied":
            return "denied"
        if exc.error in _UNAVAILABLE_ERRORS:
            return "unavailable"
        return "scopes" if exc.error == "invalid_scope" else "pagerduty_error"
    for kind, name in _FAILURE_KINDS:
        if isinstance(exc, kind):
            return name
    if isinstance(exc, OAuthError):
        return "unavailable" if exc.error in _UNAVAILABLE_ERRORS else "pagerduty_error"
    return "pagerduty_error"


_FAILURE_KINDS: tuple[tuple[type[PdauthError], str], ...] = (
    (CallbackError, "invalid"),
    (UnknownStateError, "replayed"),
    (FlowExpiredError, "expired"),
    (BindingMismatchError, "other_browser"),
    (InsufficientScopeError, "scopes"),
    (InvalidClientError, "misconfigured"),
    (InvalidGrantError, "code_rejected"),
    (IdTokenError, "identity"),
    (TransportError, "unavailable"),
    (StoreError, "storage"),
    (ConnectionNotFoundError, "connection_gone"),
)


def routes(callback_path: str = "/callback") -> list[Route]:
    """The flow's routes, the callback at ``callback_path`` (the redirect URI's path)."""
    return [
        Route("/connect", connect, methods=["POST"], name="connect"),
        Route(callback_path, callback, methods=["GET"], name="callback"),
        Route("/connect-session", connect_session, methods=["GET"], name="connect_session"),
    ]
