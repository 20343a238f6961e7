"""A Flask app with Connect PagerDuty (pdauth) and a page that lists incidents through it.

Run it with the ``PDAUTH_*`` variables set (``PDAUTH_REDIRECT_URI`` ends in
``/pagerduty/callback``) and the database migrated (``pdauth db upgrade``)::

    flask --app examples/flask/app.py run --port 8000
    pdauth keeper        # next to it: refreshes, revocation retries, webhooks

Sign in at ``/`` (a stand-in for your own login), then connect at ``/pagerduty/``.
"""

from __future__ import annotations

from flask import Flask, redirect, request, session, url_for
from markupsafe import escape
from werkzeug.wrappers import Response

from pdauth import Settings, SyncConnector
from pdauth.integrations.flask import blueprint


def signed_in_user(req: object) -> str | None:
    """Your app's signed-in user; this example keeps a name in Flask's session."""
    user = session.get("user")
    return user if isinstance(user, str) else None


def create_app(connector: SyncConnector | None = None, secret_key: str | None = None) -> Flask:
    connector = connector or SyncConnector(Settings.from_env())
    app = Flask(__name__)
    app.secret_key = secret_key or _session_secret(connector)
    app.register_blueprint(blueprint(connector, owner=signed_in_user), url_prefix="/pagerduty")

    @app.get("/")
    def index() -> str:
        return (
            '<form method="post" action="/sign-in"><input name="user" placeholder="your name">'
            "<button>Sign in</button></form>"
        )

    @app.post("/sign-in")
    def sign_in() -> Response:
        session["user"] = request.form.get("user", "")[:64] or "demo-user"
        return redirect(url_for("pdauth.home"))

    @app.get("/incidents")
    def incidents() -> str | Response:
        owner = signed_in_user(request)
        active = [c for c in connector.connections(owner) if c.status == "active"] if owner else []
        if not active:
            return redirect(url_for("pdauth.home"))
        with connector.client(active[0]) as pd:
            found = pd.get("/incidents", params={"limit": 10})["incidents"]
        items = "".join(f"<li>#{i['incident_number']} {escape(i['title'])}</li>" for i in found)
        return f"<h1>Incidents</h1><ul>{items}</ul>"

    return app


def _session_secret(connector: SyncConnector) -> str:
    secret = connector.settings.session_secret
    if secret is None:
        raise SystemExit("set PDAUTH_SESSION_SECRET (or give create_app a secret_key)")
    return secret.get_secret_value()
