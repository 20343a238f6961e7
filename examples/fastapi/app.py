"""A FastAPI app with Connect PagerDuty (pdauth) and a page that lists incidents through it.

Run it with the ``PDAUTH_*`` variables set (``PDAUTH_REDIRECT_URI`` ends in
``/pagerduty/callback``) and the database migrated (``pdauth db upgrade``)::

    uvicorn app:create_app --factory --app-dir examples/fastapi --port 8000

Sign in at ``/`` (a stand-in for your own login), connect at ``/pagerduty/``, then open
``/incidents``. The keeper (refreshes, revocation retries, webhooks) runs inside the app.
"""

from __future__ import annotations

import os
import secrets
from html import escape
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.middleware.sessions import SessionMiddleware

from pdauth import Settings
from pdauth.integrations.fastapi import PagerDuty, mount_pdauth, session_owner


def create_app(settings: Settings | None = None, **pdauth_options: Any) -> FastAPI:
    app = FastAPI()
    # Your app's own sign-in session; pdauth keeps its own cookies and reads the user from it.
    secret = os.environ.get("APP_SECRET_KEY") or secrets.token_urlsafe(32)
    app.add_middleware(SessionMiddleware, secret_key=secret)
    mount_pdauth(
        app, settings, path="/pagerduty", owner_resolver=session_owner("user"), **pdauth_options
    )

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return (
            '<form method="post" action="/sign-in"><input name="user" placeholder="your name">'
            "<button>Sign in</button></form>"
        )

    @app.post("/sign-in")
    async def sign_in(request: Request) -> RedirectResponse:
        user = (await request.form()).get("user")
        request.session["user"] = user[:64] if isinstance(user, str) and user else "demo-user"
        return RedirectResponse("/pagerduty/", status_code=303)

    @app.get("/incidents", response_class=HTMLResponse)
    async def incidents(pd: PagerDuty) -> str:
        found = (await pd.get("/incidents", params={"limit": 10}))["incidents"]
        items = "".join(f"<li>#{i['incident_number']} {escape(i['title'])}</li>" for i in found)
        return f"<h1>Incidents</h1><ul>{items}</ul>"

    return app
