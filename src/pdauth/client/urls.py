"""The API base URL and the paths sent under it: the client's guard against sending the
credential anywhere else.

:func:`normalise_base` accepts only an absolute ``https://`` base (``http://`` on a loopback
host) without credentials, query or fragment. :class:`ApiBase` turns the path of a call into
the URL to send, refusing anything that could leave the base (an authority, another scheme or
host, ``.``/``..`` segments, encoded or not, backslashes, control characters), and gives the
path to show in messages and logs (never the query: it may carry e-mail addresses).
"""

from __future__ import annotations

import re
from ipaddress import ip_address
from urllib.parse import urlsplit

import httpx

from pdauth.errors import ConfigurationError, RequestRefusedError

__all__ = ["DEFAULT_BASE_URL", "ApiBase", "normalise_base"]

#: PagerDuty's REST API (a client's ``base_url`` when none is given).
DEFAULT_BASE_URL = "https://api.pagerduty.com"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def normalise_base(base_url: str) -> httpx.URL:
    """https only (http on a loopback host), no credentials, query or fragment."""
    if _CONTROL.search(base_url):
        raise ConfigurationError("the API base URL must not contain spaces or control characters")
    try:
        parts = urlsplit(base_url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ConfigurationError("the API base URL has a malformed host or port") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigurationError("the API base URL must be an absolute https:// URL")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigurationError(
            "the API base URL must use https (http only on a loopback host: 127.0.0.0/8, ::1, "
            "localhost)"
        )
    if "@" in parts.netloc or parts.query or parts.fragment or "?" in base_url:
        raise ConfigurationError(
            "the API base URL must not contain credentials, a query or a fragment"
        )
    return httpx.URL(base_url.rstrip("/"))


class ApiBase:
    """One normalised API base URL and the URLs under it."""

    __slots__ = ("path", "text", "url")

    def __init__(self, base_url: str) -> None:
        self.url = normalise_base(base_url)
        self.text = str(self.url)
        self.path = self.url.path.rstrip("/")

    def resolve(self, path: str) -> httpx.URL | str:
        """The absolute URL for ``path``; refuses anything outside the base URL, so the
        credential never travels elsewhere."""
        if not isinstance(path, str) or _CONTROL.search(path):
            raise RequestRefusedError("the path must be a string without spaces or controls")
        if "\\" in path or path.startswith("//"):
            raise RequestRefusedError("the path must be relative to the API base URL")
        raw = path.split("?", 1)[0].split("#", 1)[0]
        if "." in raw and any(
            seg.lower().replace("%2e", ".") in (".", "..") for seg in raw.split("/")
        ):
            raise RequestRefusedError("the path must not contain '.' or '..' segments")
        if "%" in raw and "%2e" in raw.lower():
            raise RequestRefusedError("the path must not contain '.' or '..' segments")
        if not _SCHEME.match(path):
            # Relative, no dot segments, no authority: it cannot leave the base URL. A string
            # is enough (httpx parses it once, when building the request).
            return self.text + "/" + path.lstrip("/")
        try:
            url = httpx.URL(path)
        except httpx.InvalidURL:
            raise RequestRefusedError("the URL is malformed") from None
        base = self.url
        if (
            url.scheme != base.scheme
            or url.host != base.host
            or url.port != base.port
            or url.userinfo
            or not (url.path == self.path or url.path.startswith(self.path + "/"))
        ):
            raise RequestRefusedError(
                "refusing to send the PagerDuty credential to a URL outside the API base URL"
            )
        return url

    def where(self, url: httpx.URL | str) -> str:
        """The URL's path (no query: it may carry e-mail addresses) for messages and logs."""
        if isinstance(url, str):
            rest = url[len(self.text) + 1 :].split("?", 1)[0].split("#", 1)[0]
            return f"{self.path}/{rest}".rstrip("/") or "/"
        return url.path.rstrip("/") or "/"

    def relative(self, path: str) -> str:
        """``path`` relative to the base URL (for pagination-style lookup)."""
        return self.where(self.resolve(path))[len(self.path) :] or "/"
