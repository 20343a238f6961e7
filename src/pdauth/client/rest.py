"""``PagerDutyClient``: PagerDuty's REST API v2 over httpx, polite and hard to misuse.

The only module of pdauth's client that imports httpx (held, never subclassed). One call is:
wait for the pacer (:mod:`pdauth.client.pacing`; it also keeps the per-credential concurrency
limit), send with ``Authorization`` from the :class:`~pdauth.client.credentials.TokenSource`
and ``Accept: application/vnd.pagerduty+json;version=2``, report the ``ratelimit-*`` headers
back to the pacer, then decide (:mod:`pdauth.client.retry`): return the JSON, retry, refresh
once after a 401, or raise a typed error from :mod:`pdauth.errors`. Every call has a deadline
covering all its waits. Redirects are never followed and the credential is never sent outside
the base URL.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from importlib.metadata import PackageNotFoundError, version
from ipaddress import ip_address
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import anyio
import httpx

from pdauth.client.credentials import ApiKeyToken, StaticToken, TokenSource
from pdauth.client.pacer import DEFAULT_PACER, Pacer, SleepFn
from pdauth.client.pacing import parse_ratelimit_headers
from pdauth.client.pagination import (
    entity_key,
    first_offset_page,
    next_offset_page,
    unwrap_entity,
    unwrap_page,
    uses_cursor,
)
from pdauth.client.retry import FailureKind, RetryPolicy, parse_retry_after, should_retry
from pdauth.clock import Clock, SystemClock
from pdauth.errors import (
    AuthenticationError,
    ConfigurationError,
    DeadlineExceededError,
    PagerDutyAPIError,
    RateLimitedError,
    RequestRefusedError,
    ScopeError,
    TransportError,
)
from pdauth.metrics import observe_api, observe_pacing_delay, observe_rate_limited

__all__ = ["DEFAULT_BASE_URL", "PagerDutyClient"]

DEFAULT_BASE_URL = "https://api.pagerduty.com"
ACCEPT = "application/vnd.pagerduty+json;version=2"
DEFAULT_MAX_CONCURRENCY = 8

_log = logging.getLogger("pdauth.client")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")

Params = Mapping[str, Any]


def _user_agent() -> str:
    try:
        return f"pdauth/{version('pdauth')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "pdauth"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _normalise_base(base_url: str) -> httpx.URL:
    """https only (http on a loopback host), no credentials, query or fragment."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in base_url):
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


def _path_of(url: httpx.URL) -> str:
    return url.path.rstrip("/")


class PagerDutyClient:
    """An async PagerDuty REST client for one credential.

    Build it with a :class:`TokenSource` (``Connector.client(connection_id)`` does), or with
    :meth:`from_token` for a static OAuth token or API key. Use it as an async context manager
    or call :meth:`aclose`. ``timeout`` bounds one attempt, ``deadline`` a whole call including
    rate-limit waits and retries (both overridable per call). ``retries`` is the number of
    extra attempts after 5xx answers and transport failures (or a full :class:`RetryPolicy`).
    Pacing state is shared per credential through ``pacer`` (the process-wide
    :data:`~pdauth.client.pacer.DEFAULT_PACER` unless given).
    """

    def __init__(
        self,
        base_url: str,
        tokens: TokenSource,
        *,
        from_email: str | None = None,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        deadline: float = 60.0,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        pacer: Pacer | None = None,
        clock: Clock | None = None,
        retries: int | RetryPolicy = 3,
        sleep: SleepFn | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if http is not None and transport is not None:
            raise ValueError("give either an httpx.AsyncClient or a transport, not both")
        if not (timeout > 0 and deadline > 0):
            raise ValueError("timeout and deadline must be positive")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if from_email is not None and (
            "@" not in from_email or not from_email.isprintable() or len(from_email) > 320
        ):
            raise ValueError("from_email must be the email address of a PagerDuty user")
        self._base = _normalise_base(base_url)
        self._base_str = str(self._base)
        self._base_path = _path_of(self._base)
        self._tokens = tokens
        self._headers = {"Accept": ACCEPT, "User-Agent": _user_agent()}
        if from_email is not None:
            self._headers["From"] = from_email
        self._owns_http = http is None
        if http is None:
            # Our own client carries the fixed headers, so a request only adds Authorization.
            http = httpx.AsyncClient(
                transport=transport, timeout=timeout, follow_redirects=False, headers=self._headers
            )
            self._headers = {}
        self._http = http
        self._timeout = timeout
        self._deadline = deadline
        self._max_concurrency = max_concurrency
        self._pacer: Pacer = pacer or DEFAULT_PACER
        self._clock: Clock = clock or SystemClock()
        self._policy = retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries=retries)
        self._sleep: SleepFn = sleep or anyio.sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    @classmethod
    def from_token(
        cls,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        kind: Literal["bearer", "api_key"] = "bearer",
        **kw: Any,
    ) -> Self:
        """A client for a static OAuth access token (``kind="bearer"``) or a REST API key."""
        if kind == "bearer":
            source: TokenSource = StaticToken(token)
        elif kind == "api_key":
            source = ApiKeyToken(token)
        else:
            raise ValueError("kind must be 'bearer' or 'api_key'")
        return cls(base_url, source, **kw)

    @property
    def base_url(self) -> str:
        return str(self._base)

    def __repr__(self) -> str:
        return f"PagerDutyClient(base_url={str(self._base)!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the httpx client if this client created it."""
        if self._owns_http:
            await self._http.aclose()

    # -- the verbs -------------------------------------------------------------------------

    async def get(self, path: str, *, params: Params | None = None, **kw: Any) -> Any:
        """GET ``path`` and return the parsed JSON."""
        return await self.request("GET", path, params=params, **kw)

    async def post(self, path: str, *, json: Any = None, **kw: Any) -> Any:
        """POST a JSON body. Not retried after it may have reached PagerDuty unless
        ``idempotent=True``."""
        return await self.request("POST", path, json=json, **kw)

    async def put(self, path: str, *, json: Any = None, **kw: Any) -> Any:
        """PUT a JSON body and return the parsed JSON."""
        return await self.request("PUT", path, json=json, **kw)

    async def delete(self, path: str, **kw: Any) -> Any:
        """DELETE ``path``; returns the parsed JSON, or None for an empty answer."""
        return await self.request("DELETE", path, **kw)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        deadline: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - one attempt's network timeout (httpx)
    ) -> Any:
        """Send one call (with its waits and retries) and return the parsed JSON body.

        ``idempotent`` overrides the method's default for retries after the request may have
        been sent; ``deadline`` and ``timeout`` override the client's for this call.
        """
        method = method.upper()
        url = self._url(path)
        where = self._where(url)
        extra = self._check_headers(headers)
        budget = self._deadline if deadline is None else deadline
        attempt_timeout = self._timeout if timeout is None else timeout
        if not (budget > 0 and attempt_timeout > 0):
            raise ValueError("deadline and timeout must be positive")
        deadline_at = self._clock.monotonic() + budget
        key = self._tokens.pacing_key
        auth = await self._tokens.authorization()
        refreshed = False
        failures = 0
        throttled = 0
        while True:
            left = deadline_at - self._clock.monotonic()
            if left <= 0:
                raise DeadlineExceededError(f"{method} {where}: the call's deadline passed")
            outcome = await self._attempt(
                key, method, url, params, json, extra, auth, attempt_timeout, deadline_at
            )
            if isinstance(outcome, _Failure):
                if failures < self._policy.retries and should_retry(
                    method, outcome.kind, idempotent
                ):
                    await self._back_off(failures, deadline_at, outcome.error, method, where)
                    failures += 1
                    continue
                raise outcome.error
            response = outcome
            status = response.status_code
            if 200 <= status < 300:
                return self._parse_success(response, method, where)
            error = self._api_error(response, method, where)
            if status == 401 and not refreshed:
                refreshed = True
                try:
                    auth = await self._tokens.refresh(auth)
                except AuthenticationError:
                    raise error from None
                _log.info("%s %s: 401, retrying once with a refreshed token", method, where)
                continue
            if status == 429:
                delay = self._policy.throttle_delay(
                    parse_ratelimit_headers(_ratelimit_fields(response)),
                    parse_retry_after(response.headers.get("retry-after"), self._clock.now()),
                    throttled,
                    self._rng.random(),
                )
                throttled += 1
                if self._clock.monotonic() + delay >= deadline_at:
                    raise RateLimitedError(
                        429,
                        error.message,
                        error.code,
                        error.errors,
                        method,
                        where,
                        retry_after=delay,
                    )
                _log.info("%s %s: 429, waiting %.2fs", method, where, delay)
                observe_rate_limited(delay)
                await self._pacer.block(key, delay)
                continue
            if (
                status >= 500
                and failures < self._policy.retries
                and should_retry(method, "server_error", idempotent)
            ):
                await self._back_off(failures, deadline_at, error, method, where)
                failures += 1
                continue
            raise error

    async def _attempt(
        self,
        key: str,
        method: str,
        url: httpx.URL | str,
        params: Params | None,
        json: Any,
        headers: dict[str, str],
        auth: str,
        attempt_timeout: float,
        deadline_at: float,
    ) -> httpx.Response | _Failure:
        """One paced send: a pacer ticket (which is also a concurrency slot), the request,
        the feedback."""
        asked_at = self._clock.monotonic()
        ticket = await self._pacer.acquire(
            key, max_wait=deadline_at - asked_at, max_concurrency=self._max_concurrency
        )
        observe_pacing_delay(self._clock.monotonic() - asked_at)
        left = deadline_at - self._clock.monotonic()
        if left <= 0:
            await self._pacer.abandon(key, ticket)
            raise DeadlineExceededError(f"{method} {self._where(url)}: the deadline passed")
        attempt_timeout = min(attempt_timeout, left)
        fixed = {**self._headers, **headers}
        request = self._http.build_request(
            method, url, params=params, json=json, headers=fixed or None,
            timeout=attempt_timeout,
        )  # fmt: skip
        request.headers["Authorization"] = auth  # set last: nothing can override it
        try:
            # httpx times each network phase separately, and an in-process transport not at
            # all: this bounds the whole attempt, whatever the transport.
            with anyio.CancelScope(deadline=anyio.current_time() + attempt_timeout) as scope:
                response = await self._http.send(request, follow_redirects=False)
            if scope.cancelled_caught:
                raise TimeoutError
        except (httpx.TransportError, TimeoutError) as exc:
            observe_api(method, None)
            await self._pacer.abandon(key, ticket)
            return self._transport_failure(exc, method, self._where(url), attempt_timeout, left)
        except BaseException:
            await self._pacer.abandon(key, ticket)
            raise
        observe_api(method, response.status_code)
        await self._pacer.complete(
            key,
            ticket,
            status=response.status_code,
            headers=parse_ratelimit_headers(_ratelimit_fields(response)),
        )
        return response

    def _transport_failure(
        self,
        exc: httpx.TransportError | TimeoutError,
        method: str,
        where: str,
        attempt_timeout: float,
        left: float,
    ) -> _Failure:
        # Nothing was sent if the connection never came up (or no pooled one was free).
        kind: FailureKind = (
            "not_sent"
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
            else "unknown"
        )
        timed_out = isinstance(exc, httpx.TimeoutException | TimeoutError)
        what = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        error: TransportError
        if timed_out and attempt_timeout >= left:
            error = DeadlineExceededError(f"{method} {where}: the call's deadline passed ({what})")
        else:
            error = TransportError(f"{method} {where}: could not reach PagerDuty ({what})")
        error.__cause__ = exc
        return _Failure(kind, error)

    async def _back_off(
        self, failures: int, deadline_at: float, error: Exception, method: str, where: str
    ) -> None:
        delay = self._policy.backoff(failures, self._rng.random())
        if self._clock.monotonic() + delay >= deadline_at:
            raise error
        _log.info("%s %s: %s; retry in %.2fs", method, where, type(error).__name__, delay)
        await self._sleep(delay)

    # -- pagination ------------------------------------------------------------------------

    async def iter_all(
        self, path: str, params: Params | None = None, *, page_size: int = 100, **kw: Any
    ) -> AsyncGenerator[Any, None]:
        """Every entity of a list endpoint, page after page (``/users`` yields users).

        Chooses cursor pagination for the endpoints that use it (as PagerDuty's client does),
        classic offset pagination otherwise. Classic pagination cannot pass PagerDuty's
        ``offset + limit <= 10000``: rather than stop with a partial list, it raises
        :class:`~pdauth.errors.PaginationLimitError`; narrow the query (``since``/``until``
        windows for ``/incidents``). ``kw`` (deadline, timeout) applies to each page.
        """
        if uses_cursor(self._relative(path)):
            async for item in self.iter_cursor(path, params, page_size=page_size, **kw):
                yield item
            return
        key = entity_key(self._relative(path))
        query = dict(params or {})
        page = first_offset_page(int(query.pop("offset", 0)), int(query.pop("limit", page_size)))
        while True:
            body = await self.get(
                path, params={**query, "offset": page.offset, "limit": page.limit}, **kw
            )
            items = self._unwrap(body, key, path)
            for item in items:
                yield item
            if not (isinstance(body, Mapping) and body.get("more") is True):
                return
            if not items:
                raise PagerDutyAPIError(
                    200, "PagerDuty said more: true on an empty page", method="GET", path=path
                )
            page = next_offset_page(page, len(items), path=self._relative(path))

    async def iter_cursor(
        self, path: str, params: Params | None = None, *, page_size: int = 100, **kw: Any
    ) -> AsyncGenerator[Any, None]:
        """Every entity of a cursor-paginated endpoint, following ``next_cursor``."""
        key = entity_key(self._relative(path))
        query = dict(params or {})
        cursor = query.pop("cursor", None)
        limit = max(1, min(int(query.pop("limit", page_size)), 100))
        seen: set[str] = set()
        while True:
            page_query = {**query, "limit": limit}
            if cursor:
                page_query["cursor"] = cursor
            body = await self.get(path, params=page_query, **kw)
            for item in self._unwrap(body, key, path):
                yield item
            cursor = body.get("next_cursor") if isinstance(body, Mapping) else None
            if not cursor:
                return
            if not isinstance(cursor, str) or cursor in seen:
                raise PagerDutyAPIError(
                    200,
                    "PagerDuty returned a repeated or invalid next_cursor",
                    method="GET",
                    path=path,
                )
            seen.add(cursor)

    # -- python-pagerduty's conveniences, under the names its users know ----------------------

    async def rget(
        self, resource: str | Mapping[str, Any], *, params: Params | None = None, **kw: Any
    ) -> Any:
        """GET a resource and return its entity, unwrapped: ``/users/PABC123`` → the user,
        ``/users`` → the first page's users (see :func:`~pdauth.client.pagination.unwrap_entity`).
        ``resource`` may also be an entity that carries its ``self`` URL."""
        if isinstance(resource, Mapping):
            url = resource.get("self")
            if not isinstance(url, str):
                raise RequestRefusedError("an entity passed as the resource needs a 'self' URL")
            resource = url
        body = await self.get(resource, params=params, **kw)
        return unwrap_entity(body, self._relative(resource))

    async def find(
        self,
        resource: str,
        query: str,
        attribute: str = "name",
        params: Params | None = None,
        **kw: Any,
    ) -> Any | None:
        """The first entity of ``resource`` (``"users"``, ``"/services"``) whose ``attribute``
        equals ``query`` ignoring case, or None. The index is searched with ``query=``, so
        only candidates are fetched (an index that ignores it is read until a match)."""
        wanted = str(query).lower()
        entities = self.iter_all(resource, {**(params or {}), "query": query}, **kw)
        async with aclosing(entities):
            async for entity in entities:
                if (
                    isinstance(entity, Mapping)
                    and attribute in entity
                    and str(entity[attribute]).lower() == wanted
                ):
                    return entity
        return None

    async def list_all(self, path: str, params: Params | None = None, **kw: Any) -> list[Any]:
        """Every entity of a list endpoint, as a list (:meth:`iter_all`, collected)."""
        return [entity async for entity in self.iter_all(path, params, **kw)]

    @staticmethod
    def _unwrap(body: Any, key: str, path: str) -> list[Any]:
        try:
            return unwrap_page(body, key)
        except ValueError as exc:
            raise PagerDutyAPIError(200, str(exc), method="GET", path=path) from None

    # -- URLs, headers, bodies -------------------------------------------------------------

    def _url(self, path: str) -> httpx.URL | str:
        """The absolute URL for ``path``; refuses anything outside the base URL, so the
        credential never travels elsewhere."""
        if not isinstance(path, str) or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in path):
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
            return self._base_str + "/" + path.lstrip("/")
        try:
            url = httpx.URL(path)
        except httpx.InvalidURL:
            raise RequestRefusedError("the URL is malformed") from None
        if (
            url.scheme != self._base.scheme
            or url.host != self._base.host
            or url.port != self._base.port
            or url.userinfo
            or not (url.path == self._base_path or url.path.startswith(self._base_path + "/"))
        ):
            raise RequestRefusedError(
                "refusing to send the PagerDuty credential to a URL outside the API base URL"
            )
        return url

    def _where(self, url: httpx.URL | str) -> str:
        """The URL's path (no query: it may carry e-mail addresses) for messages and logs."""
        if isinstance(url, str):
            rest = url[len(self._base_str) + 1 :].split("?", 1)[0].split("#", 1)[0]
            return f"{self._base_path}/{rest}".rstrip("/") or "/"
        return _path_of(url) or "/"

    def _relative(self, path: str) -> str:
        """``path`` relative to the base URL (for pagination-style lookup)."""
        return self._where(self._url(path))[len(self._base_path) :] or "/"

    @staticmethod
    def _check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
        if not headers:
            return {}
        extra = dict(headers)
        if any(name.lower() in ("authorization", "host") for name in extra):
            raise RequestRefusedError("Authorization and Host are set by the client")
        return extra

    @staticmethod
    def _parse_success(response: httpx.Response, method: str, where: str) -> Any:
        if response.status_code == 204 or not response.content.strip():
            return None
        try:
            return response.json()
        except (ValueError, RecursionError):  # not JSON, or nested beyond reason
            raise PagerDutyAPIError(
                response.status_code,
                "PagerDuty answered with a body that is not JSON",
                method=method,
                path=where,
            ) from None

    @staticmethod
    def _api_error(response: httpx.Response, method: str, where: str) -> PagerDutyAPIError:
        """The typed error for a non-2xx answer, from PagerDuty's error envelope if any."""
        status = response.status_code
        message = response.reason_phrase or f"HTTP {status}"
        code: int | None = None
        errors: list[str] = []
        scopes: list[str] = []
        try:
            body = response.json() if response.content.strip() else None
        except (ValueError, RecursionError):
            body = None
        if isinstance(body, Mapping):
            envelope = body.get("error")
            if isinstance(envelope, Mapping):
                if isinstance(envelope.get("message"), str):
                    message = envelope["message"][:500]
                if isinstance(envelope.get("code"), int) and not isinstance(
                    envelope.get("code"), bool
                ):
                    code = envelope["code"]
                raw_errors = envelope.get("errors")
                if isinstance(raw_errors, list):
                    errors = [str(e)[:500] for e in raw_errors[:20]]
                scopes = _scopes(envelope.get("required_scopes"))
            elif isinstance(envelope, str):
                message = envelope[:500]
            scopes = scopes or _scopes(body.get("required_scopes"))
        if 300 <= status < 400:
            message = "PagerDuty answered with a redirect, which pdauth never follows"
        if status == 401:
            return AuthenticationError(status, message, code, errors, method, where)
        if status == 403:
            return ScopeError(status, message, code, errors, method, where, required_scopes=scopes)
        return PagerDutyAPIError(status, message, code, errors, method, where)


def _ratelimit_fields(response: httpx.Response) -> dict[str, str]:
    """The ``ratelimit-*`` headers in one pass (httpx's case-insensitive lookups cost more)."""
    found: dict[str, str] = {}
    for name, value in response.headers.raw:
        lowered = name.lower()
        if lowered.startswith(b"ratelimit-"):
            found[lowered.decode("latin-1")] = value.decode("latin-1")
    return found


def _scopes(value: Any) -> list[str]:
    """``required_scopes`` as PagerDuty sends it: a space- or comma-separated string, or a list."""
    if isinstance(value, str):
        return [s for s in value.replace(",", " ").split() if s][:50]
    if isinstance(value, list):
        return [s for s in value if isinstance(s, str)][:50]
    return []


class _Failure:
    """An attempt that got no HTTP answer."""

    __slots__ = ("error", "kind")

    def __init__(self, kind: FailureKind, error: TransportError) -> None:
        self.kind = kind
        self.error = error
