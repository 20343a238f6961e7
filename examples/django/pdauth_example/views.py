"""The example's own views: a stand-in sign-in (use ``request.user`` in a real project, which
is pdauth's default owner) and one page listing incidents through the user's connection."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.urls import reverse
from django.utils.html import escape

from pdauth_example.pagerduty import connector


def signed_in_user(request: HttpRequest) -> str | None:
    user = request.session.get("user")
    return user if isinstance(user, str) else None


def sign_in(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        request.session["user"] = request.POST.get("user", "")[:64] or "demo-user"
        return HttpResponseRedirect(reverse("pdauth:home"))
    return HttpResponse(
        '<form method="post"><input type="hidden" name="csrfmiddlewaretoken" '
        f'value="{get_token(request)}"><input name="user" placeholder="your name">'
        "<button>Sign in</button></form>"
    )


def incidents(request: HttpRequest) -> HttpResponse:
    owner = signed_in_user(request)
    active = [c for c in connector.connections(owner) if c.status == "active"] if owner else []
    if not active:
        return HttpResponseRedirect(reverse("pdauth:home"))
    with connector.client(active[0]) as pd:
        found = pd.get("/incidents", params={"limit": 10})["incidents"]
    items = "".join(f"<li>#{i['incident_number']} {escape(i['title'])}</li>" for i in found)
    return HttpResponse(f"<h1>Incidents</h1><ul>{items}</ul>")
