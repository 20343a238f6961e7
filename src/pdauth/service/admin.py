"""The admin view: sign in with ``PDAUTH_ADMIN_PASSWORD``, see every connection, disconnect one.

The password is compared through SHA-256 digests with ``hmac.compare_digest``, the login is
rate-limited per client, and signing in rotates the session id and CSRF token. Without a
configured password the admin view is disabled (404 on login).

Admin sessions live on the server (docs/SECURITY.md item 48, ASVS 7.4.1): signing in stores the
SHA-256 of a random id (the cookie carries the id) with the session's times and a fingerprint
of the admin password (:func:`pdauth.service.core.admin_password_fingerprint`). Every admin
request checks that row, so signing out (the row is deleted) ends the session at once — a
copied cookie stops working too — and so do 30 minutes unused, the one-hour lifetime, and a
new admin password (the fingerprint no longer matches: every session ends).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import replace

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from pdauth.service.browser import Page, too_many
from pdauth.service.views import STATUS_LABELS, connection_view

__all__ = ["ROUTES"]

_SHOWN = 1000


def _id_hash(admin_sid: str) -> str:
    return hashlib.sha256(admin_sid.encode("ascii", "replace")).hexdigest()


async def _is_admin(page: Page) -> bool:
    """True while this browser's admin session is live on the server (see the docstring)."""
    session = page.session
    fingerprint = page.service.admin_fingerprint
    if not session.is_admin(page.now) or session.admin_sid is None or fingerprint is None:
        return False
    connector = await page.service.connector()
    live = await connector.store.check_admin_session(
        _id_hash(session.admin_sid),
        password_fingerprint=fingerprint,
        now=page.now,
        idle_timeout=page.service.options.admin_idle_seconds,
    )
    if not live:  # ended on the server: forget it in the cookie as well
        page.replace_session(replace(session, admin_until=None, admin_sid=None))
    return live


async def admin(request: Request) -> Response:
    page = Page(request)
    options = page.service.options
    if not await _is_admin(page):
        return await page.render(
            "admin_login.html",
            {
                "title": "Admin sign-in",
                "enabled": options.admin_password is not None,
                "failed": False,
            },
        )
    connector = await page.service.connector()
    every = await connector.connections(None)
    counts: dict[str, int] = {}
    for c in every:
        counts[c.status] = counts.get(c.status, 0) + 1
    return await page.render(
        "admin.html",
        {
            "title": "All connections",
            "connections": [connection_view(c) for c in every[:_SHOWN]],
            "counts": {STATUS_LABELS.get(k, k): n for k, n in counts.items()},
            "next_after": None,
        },
    )


async def admin_login(request: Request) -> Response:
    page = Page(request)
    wait = await page.service.rate_limited(request, "admin")
    if wait:
        return too_many(request, wait)
    form = await page.checked_form()
    expected = page.service.options.admin_password
    password = form.get("password")
    if expected is None or not isinstance(password, str) or not _same(password, expected):
        return await page.render(
            "admin_login.html",
            {"title": "Admin sign-in", "enabled": expected is not None, "failed": True},
            status=403 if expected is not None else 404,
        )
    fingerprint = page.service.admin_fingerprint
    assert fingerprint is not None  # a password is configured
    until = page.now + page.service.options.admin_session_seconds
    admin_sid = secrets.token_urlsafe(32)
    connector = await page.service.connector()
    await connector.store.create_admin_session(
        _id_hash(admin_sid), password_fingerprint=fingerprint, now=page.now, expires_at=until
    )
    page.replace_session(page.session.rotated(page.now, admin_until=until, admin_sid=admin_sid))
    return page.finish(RedirectResponse(page.path("admin"), status_code=303))


async def admin_logout(request: Request) -> Response:
    page = Page(request)
    await page.checked_form()
    if page.session.admin_sid is not None:
        connector = await page.service.connector()
        await connector.store.delete_admin_session(_id_hash(page.session.admin_sid))
    page.replace_session(page.session.rotated(page.now, admin_until=None, admin_sid=None))
    return page.finish(RedirectResponse(page.path("home"), status_code=303))


async def admin_disconnect(request: Request) -> Response:
    page = Page(request)
    await page.checked_form()
    if not await _is_admin(page):
        raise HTTPException(403)
    connector = await page.service.connector()
    # An unknown id is ConnectionNotFoundError: a 404 at the app's edge.
    await connector.disconnect(request.path_params["connection_id"])
    return page.finish(RedirectResponse(page.path("admin"), status_code=303))


def _same(presented: str, expected: str) -> bool:
    # Hash both sides first so compare_digest sees equal lengths and learns nothing of either.
    a = hashlib.sha256(presented.encode("utf-8", "replace")).digest()
    b = hashlib.sha256(expected.encode("utf-8")).digest()
    return hmac.compare_digest(a, b)


ROUTES: list[Route] = [
    Route("/admin", admin, methods=["GET"], name="admin"),
    Route("/admin/login", admin_login, methods=["POST"], name="admin_login"),
    Route("/admin/logout", admin_logout, methods=["POST"], name="admin_logout"),
    Route(
        "/admin/connections/{connection_id}/disconnect",
        admin_disconnect,
        methods=["POST"],
        name="admin_disconnect",
    ),
]
