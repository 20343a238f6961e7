"""The page ``pdauth connect``'s loopback listener answers the browser with.

It has the service pages' look: the service's one stylesheet (``service/static/pdauth.css``),
inlined in a ``<style>`` element because the one-shot listener serves nothing else, and allowed
by its SHA-256 in the Content-Security-Policy (no ``unsafe-inline``, no script, no external
asset, nothing from the request echoed). :func:`loopback_response` builds the whole HTTP
response.
"""

from __future__ import annotations

import base64
import hashlib
import html
from functools import cache
from importlib.resources import files
from typing import Literal

__all__ = ["Tone", "loopback_response", "page_css"]

Tone = Literal["ok", "notice", "error"]

_BOX = {"ok": "card", "notice": "card notice", "error": "card error-box"}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title} · pdauth</title>
<style>{css}</style>
</head>
<body>
<header class="top">
<a class="brand" href="#main">pdauth</a><span class="who">pdauth connect</span>
</header>
<main id="main">
<h1>{title}</h1>
<div class="{box}"><p>{message}</p></div>
</main>
<footer>Connections to PagerDuty are stored encrypted; this page never shows a token.</footer>
</body>
</html>
"""


@cache
def page_css() -> str:
    """The service's stylesheet, read once from the installed package."""
    return (files("pdauth") / "service" / "static" / "pdauth.css").read_text(encoding="utf-8")


@cache
def _style_hash() -> str:
    digest = hashlib.sha256(page_css().encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


def loopback_response(status: int, reason: str, title: str, message: str, tone: Tone) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response carrying the styled page."""
    body = _PAGE.format(
        title=html.escape(title),
        message=html.escape(message),
        css=page_css(),
        box=_BOX[tone],
    ).encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Referrer-Policy: no-referrer\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "X-Frame-Options: DENY\r\n"
        f"Content-Security-Policy: default-src 'none'; style-src '{_style_hash()}'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    return head + body
