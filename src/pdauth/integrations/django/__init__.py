"""Connect PagerDuty inside a Django project (WSGI or ASGI), over a :class:`~pdauth.SyncConnector`.

::

    # urls.py
    from pdauth.integrations.django import urls as pdauth_urls
    urlpatterns = [path("pagerduty/", include(pdauth_urls(connector)))]

gives ``pagerduty/`` (the signed-in owner's connections with Connect, Reconnect and Disconnect
buttons; URL name ``pdauth:home``), ``pagerduty/connect`` (POST), ``pagerduty/callback`` (so
``PDAUTH_REDIRECT_URI`` is ``<origin>/pagerduty/callback``; a mismatch shows the
"misconfigured" page and logs why) and ``pagerduty/connections/<id>/disconnect`` (POST). The
owner is ``owner(request)``: by default the authenticated ``request.user``'s primary key.
POSTs go through Django's own CSRF protection (``csrf_protect``, whether or not the project
enables ``CsrfViewMiddleware``). The flow, its cookie and its failure pages are
:class:`~pdauth.integrations._blocking.BlockingFlow`'s; :func:`urls` installs pdauth's log
redaction on ``django.server``, ``django.request`` and the rest of the host's loggers. Under
ASGI Django runs these sync views in a worker thread; the SyncConnector is safe there.

The keeper runs as its own process: add ``"pdauth.integrations.django"`` to
``INSTALLED_APPS`` and run ``manage.py pdauth_keeper`` (or ``pdauth keeper``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect  # type: ignore[import-untyped]
from django.middleware.csrf import get_token  # type: ignore[import-untyped]
from django.urls import path, reverse  # type: ignore[import-untyped]
from django.views.decorators.csrf import csrf_protect  # type: ignore[import-untyped]
from django.views.decorators.http import require_GET, require_POST  # type: ignore[import-untyped]

from pdauth.integrations._blocking import BINDING_COOKIE, BlockingFlow, Csrf, Reply, Urls
from pdauth.sync_connector import SyncConnector

__all__ = ["signed_in_user", "urls"]

APP_NAME = "pdauth"
log = logging.getLogger("pdauth.integrations.django")


def signed_in_user(request: HttpRequest) -> str | None:
    """The default owner: the authenticated Django user's primary key, else None."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    return str(user.pk)


def urls(
    connector: SyncConnector,
    owner: Callable[[HttpRequest], str | None] = signed_in_user,
) -> tuple[list[Any], str]:
    """The URL patterns and app name for ``include(...)`` (namespace ``pdauth``)."""
    flow = BlockingFlow(connector)
    views = _Views(flow, owner)
    patterns = [
        path("", require_GET(views.home), name="home"),
        path("connect", require_POST(csrf_protect(views.connect)), name="connect"),
        path("callback", require_GET(views.callback), name="callback"),
        path(
            "connections/<str:connection_id>/disconnect",
            require_POST(csrf_protect(views.disconnect)),
            name="disconnect",
        ),
    ]
    return patterns, APP_NAME


class _Views:
    def __init__(self, flow: BlockingFlow, owner: Callable[[HttpRequest], str | None]) -> None:
        self.flow = flow
        self.owner = owner

    def home(self, request: HttpRequest) -> HttpResponse:
        connected = request.GET.get("connected") == "1"
        reply = self.flow.home(
            self.owner(request), _csrf(request), _urls(request), connected=connected
        )
        return self._respond(request, reply)

    def connect(self, request: HttpRequest) -> HttpResponse:
        problem = self.flow.callback_path_problem(_reverse(request, "callback"))
        if problem is not None:
            log.error("pdauth is misconfigured: %s", problem)
            return self._respond(request, self.flow.misrouted(_csrf(request), _urls(request)))
        reply = self.flow.connect(
            self.owner(request),
            request.POST.get("return_to"),
            request.COOKIES.get(BINDING_COOKIE),
            _csrf(request),
            _urls(request),
        )
        return self._respond(request, reply)

    def callback(self, request: HttpRequest) -> HttpResponse:
        query = request.META.get("QUERY_STRING", "")
        reply = self.flow.callback(
            self.owner(request),
            query,
            request.COOKIES.get(BINDING_COOKIE),
            _csrf(request),
            _urls(request),
        )
        response = self._respond(request, reply)
        if response.status_code >= 400:
            # Django would log this response on django.request with the request attached, and
            # its AdminEmailHandler mails 5xx requests' GET parameters: the callback's code and
            # state. Mark it logged (Django's own flag) and log a line without the query.
            response._has_been_logged = True
            log.warning("PagerDuty callback refused (status %s)", response.status_code)
        return response

    def disconnect(self, request: HttpRequest, connection_id: str) -> HttpResponse:
        reply = self.flow.disconnect(
            self.owner(request), connection_id, _csrf(request), _urls(request)
        )
        return self._respond(request, reply)

    def _respond(self, request: HttpRequest, reply: Reply) -> HttpResponse:
        if reply.location is not None:
            response = HttpResponseRedirect(reply.location)
            response.status_code = reply.status
        else:
            response = HttpResponse(
                reply.html, status=reply.status, content_type="text/html; charset=utf-8"
            )
        for name, value in reply.headers.items():
            response[name] = value
        secure = request.is_secure()
        if reply.binding_cookie == "":
            response.delete_cookie(BINDING_COOKIE, path=self.flow.cookie_path, samesite="Lax")
        elif reply.binding_cookie is not None:
            response.set_cookie(
                BINDING_COOKIE,
                reply.binding_cookie,
                max_age=int(self.flow.cookie_max_age),
                path=self.flow.cookie_path,
                secure=secure,
                httponly=True,
                samesite="Lax",
            )
        return response


def _reverse(request: HttpRequest, name: str, **kwargs: str) -> str:
    match = request.resolver_match
    namespace = match.namespace if match is not None and match.namespace else APP_NAME
    url: str = reverse(f"{namespace}:{name}", kwargs=kwargs or None)
    return url


def _urls(request: HttpRequest) -> Urls:
    return Urls(
        home=_reverse(request, "home"),
        connect=_reverse(request, "connect"),
        disconnect=lambda cid: _reverse(request, "disconnect", connection_id=cid),
    )


def _csrf(request: HttpRequest) -> Csrf:
    return Csrf("csrfmiddlewaretoken", get_token(request))
