"""Connect PagerDuty inside a Flask app: a Blueprint over a :class:`~pdauth.SyncConnector`.

::

    bp = pdauth.integrations.flask.blueprint(connector, owner=lambda request: ...)
    app.register_blueprint(bp, url_prefix="/pagerduty")

gives ``GET /pagerduty/`` (the signed-in owner's connections with Connect, Reconnect and
Disconnect buttons), ``POST /pagerduty/connect``, ``GET /pagerduty/callback`` (so
``PDAUTH_REDIRECT_URI`` is ``<origin>/pagerduty/callback``; registration refuses a mismatch)
and ``POST /pagerduty/connections/<id>/disconnect``. ``owner(request)`` is the host's signed-in
user (or None). Flask has no CSRF protection of its own, so the blueprint keeps a token in
Flask's signed session (the app needs a ``secret_key``) and checks it on every POST. The flow
itself, its cookie and its failure pages are :class:`~pdauth.integrations._blocking.BlockingFlow`'s;
registering the blueprint installs pdauth's log redaction on werkzeug's and the app's loggers.
The keeper runs as its own process: ``pdauth keeper``.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable

from flask import Blueprint, make_response, redirect, request, session, url_for
from flask.blueprints import BlueprintSetupState
from werkzeug.wrappers import Response

from pdauth.errors import ConfigurationError
from pdauth.integrations._blocking import BINDING_COOKIE, BlockingFlow, Csrf, Reply, Urls
from pdauth.logs import protect_host_loggers
from pdauth.sync_connector import SyncConnector

__all__ = ["blueprint"]

_CSRF_KEY = "pdauth_csrf"
_CSRF_FIELD = "csrf_token"


def blueprint(
    connector: SyncConnector,
    owner: Callable[..., str | None],
    *,
    name: str = "pdauth",
) -> Blueprint:
    """The Connect PagerDuty pages as a Blueprint; register it under the redirect URI's prefix.

    ``owner`` is called with ``flask.request`` and returns the signed-in user's id (or None).
    """
    flow = BlockingFlow(connector)
    bp = Blueprint(name, __name__)

    @bp.record
    def _check(state: BlueprintSetupState) -> None:
        if not state.app.secret_key:
            raise ConfigurationError("the Flask app needs a secret_key (pdauth's CSRF token)")
        problem = flow.callback_path_problem(f"{state.url_prefix or ''}/callback")
        if problem is not None:
            raise ConfigurationError(problem)
        protect_host_loggers(connector.settings, loggers=[state.app.logger.name])

    def urls() -> Urls:
        return Urls(
            home=url_for(f"{name}.home"),
            connect=url_for(f"{name}.connect"),
            disconnect=lambda cid: url_for(f"{name}.disconnect", connection_id=cid),
        )

    @bp.get("/")
    def home() -> Response:
        connected = request.args.get("connected") == "1"
        return _respond(flow, flow.home(owner(request), _csrf(), urls(), connected=connected))

    @bp.post("/connect")
    def connect() -> Response:
        if not _csrf_ok():
            return _respond(flow, flow.forbidden(_csrf(), urls()))
        reply = flow.connect(
            owner(request),
            request.form.get("return_to"),
            request.cookies.get(BINDING_COOKIE),
            _csrf(),
            urls(),
        )
        return _respond(flow, reply)

    @bp.get("/callback")
    def callback() -> Response:
        query = request.query_string.decode("latin-1")
        reply = flow.callback(
            owner(request), query, request.cookies.get(BINDING_COOKIE), _csrf(), urls()
        )
        return _respond(flow, reply)

    @bp.post("/connections/<connection_id>/disconnect")
    def disconnect(connection_id: str) -> Response:
        if not _csrf_ok():
            return _respond(flow, flow.forbidden(_csrf(), urls()))
        return _respond(flow, flow.disconnect(owner(request), connection_id, _csrf(), urls()))

    del home, connect, callback, disconnect  # registered on the blueprint
    return bp


def _csrf() -> Csrf:
    """This session's CSRF token (made on first use), kept in Flask's signed session."""
    token = session.get(_CSRF_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[_CSRF_KEY] = token
    return Csrf(_CSRF_FIELD, token)


def _csrf_ok() -> bool:
    """Whether the POSTed form carries this session's CSRF token."""
    expected = session.get(_CSRF_KEY)
    given = request.form.get(_CSRF_FIELD)
    return (
        isinstance(expected, str)
        and isinstance(given, str)
        and hmac.compare_digest(given.encode(), expected.encode())
    )


def _respond(flow: BlockingFlow, reply: Reply) -> Response:
    if reply.location is not None:
        response = redirect(reply.location, code=reply.status)
    else:
        response = make_response(reply.html, reply.status)
        response.content_type = "text/html; charset=utf-8"
    response.headers.update(dict(reply.headers))
    secure = request.is_secure
    if reply.binding_cookie == "":
        response.delete_cookie(
            BINDING_COOKIE, path=flow.cookie_path, secure=secure, httponly=True, samesite="Lax"
        )
    elif reply.binding_cookie is not None:
        response.set_cookie(
            BINDING_COOKIE,
            reply.binding_cookie,
            max_age=int(flow.cookie_max_age),
            path=flow.cookie_path,
            secure=secure,
            httponly=True,
            samesite="Lax",
        )
    return response
