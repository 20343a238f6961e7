"""``PagerDutyClient``: PagerDuty's REST API v2 over httpx, polite and hard to misuse.

The client's HTTP face (httpx held, never subclassed; :mod:`~pdauth.client.urls` and
:mod:`~pdauth.client.responses` are its helpers). One call is: wait for the pacer
(:mod:`pdauth.client.pacing`; it also keeps the per-credential concurrency limit), send with
``Authorization`` from the :class:`~pdauth.client.credentials.TokenSource` and
``Accept: application/vnd.pagerduty+json;version=2``, report the ``ratelimit-*`` headers back
to the pacer, then decide (:mod:`pdauth.client.retry`): return the JSON, retry, refresh once
after a 401, or raise a typed error from :mod:`pdauth.errors`. Every call has a deadline
covering all its waits. Redirects are never followed and the credential is never sent outside
the base URL. python-pagerduty's conveniences (``rget``, ``find``, ``list_all``) sit on top,
under the names its users know.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio
import httpx

from pdauth._portal import AsyncClosing
from pdauth.client.credentials import FromToken, TokenSource
from pdauth.client.http import http_client
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
from pdauth.client.responses import (
    Failure,
    api_error,
    parse_success,
    ratelimit_fields,
    transport_failure,
)
from pdauth.client.retry import RetryPolicy, parse_retry_after, should_retry
from pdauth.client.urls import DEFAULT_BASE_URL, ApiBase
from pdauth.clock import Clock, SystemClock
from pdauth.errors import (
    AuthenticationError,
    DeadlineExceededError,
    PagerDutyAPIError,
    RateLimitedError,
    RequestRefusedError,
)
from pdauth.metrics import observe_api, observe_pacing_delay, observe_rate_limited

__all__ = ["DEFAULT_BASE_URL", "PagerDutyClient"]

ACCEPT = "application/vnd.pagerduty+json;version=2"
DEFAULT_MAX_CONCURRENCY = 8

_log = logging.getLogger("pdauth.client")

Params = Mapping[str, Any]


def _user_agent() -> str:
    try:
        return f"pdauth/{version('pdauth')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "pdauth"


def _on_asyncio() -> bool:
    # No asyncio loop running in this thread: trio, through anyio.
    return asyncio._get_running_loop() is not None


class _Call:
    """What one call keeps across its attempts."""

    __slots__ = ("deadline_at", "failures", "idempotent", "method", "refreshed", "throttled")

    def __init__(self, method: str, idempotent: bool | None, deadline_at: float) -> None:
        self.method = method
        self.idempotent = idempotent
        self.deadline_at = deadline_at
        self.refreshed = False
        self.failures = 0
        self.throttled = 0


class PagerDutyClient(AsyncClosing, FromToken):
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
        self._base = ApiBase(base_url)
        self._tokens = tokens
        self._headers = {"Accept": ACCEPT, "User-Agent": _user_agent()}
        if from_email is not None:
            self._headers["From"] = from_email
        # Our own client carries the fixed headers, so a request only adds Authorization.
        self._http, self._owns_http = http_client(http, transport, timeout, headers=self._headers)
        if self._owns_http:
            self._headers = {}
        self._timeout = timeout
        self._deadline = deadline
        self._max_concurrency = max_concurrency
        self._pacer: Pacer = pacer or DEFAULT_PACER
        self._clock: Clock = clock or SystemClock()
        self._policy = retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries=retries)
        self._sleep: SleepFn = sleep or anyio.sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    @property
    def base_url(self) -> str:
        return self._base.text

    def __repr__(self) -> str:
        return f"PagerDutyClient(base_url={self._base.text!r})"

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
        url = self._base.resolve(path)
        extra = self._check_headers(headers)
        budget = self._deadline if deadline is None else deadline
        attempt_timeout = self._timeout if timeout is None else timeout
        if not (budget > 0 and attempt_timeout > 0):
            raise ValueError("deadline and timeout must be positive")
        call = _Call(method, idempotent, self._clock.monotonic() + budget)
        key = self._tokens.pacing_key
        auth = await self._tokens.authorization()
        while True:
            if call.deadline_at <= self._clock.monotonic():
                where = self._base.where(url)
                raise DeadlineExceededError(f"{method} {where}: the call's deadline passed")
            outcome = await self._attempt(
                key, call, url, params, json, extra, auth, attempt_timeout
            )
            if isinstance(outcome, Failure):
                if call.failures < self._policy.retries and should_retry(
                    method, outcome.kind, call.idempotent
                ):
                    await self._back_off(call, outcome.error, self._base.where(url))
                    continue
                raise outcome.error
            if 200 <= outcome.status_code < 300:
                return parse_success(outcome, method, self._base.where(url))
            auth = await self._after_error(outcome, call, key, auth, self._base.where(url))

    async def _after_error(
        self, response: httpx.Response, call: _Call, key: str, auth: str, where: str
    ) -> str:
        """Decide after a non-2xx answer: refresh once after a 401, wait after a 429, back off
        after a 5xx, or raise. Returns the Authorization value for the next attempt."""
        status, method = response.status_code, call.method
        error = api_error(response, method, where)
        if status == 401 and not call.refreshed:
            call.refreshed = True
            try:
                auth = await self._tokens.refresh(auth)
            except AuthenticationError:
                raise error from None
            _log.info("%s %s: 401, retrying once with a refreshed token", method, where)
            return auth
        if status == 429:
            delay = self._policy.throttle_delay(
                parse_ratelimit_headers(ratelimit_fields(response)),
                parse_retry_after(response.headers.get("retry-after"), self._clock.now()),
                call.throttled,
                self._rng.random(),
            )
            call.throttled += 1
            if self._clock.monotonic() + delay >= call.deadline_at:
                raise RateLimitedError(
                    429, error.message, error.code, error.errors, method, where, retry_after=delay
                )
            _log.info("%s %s: 429, waiting %.2fs", method, where, delay)
            observe_rate_limited(delay)
            await self._pacer.block(key, delay)
            return auth
        if (
            status >= 500
            and call.failures < self._policy.retries
            and should_retry(method, "server_error", call.idempotent)
        ):
            await self._back_off(call, error, where)
            return auth
        raise error

    async def _attempt(
        self,
        key: str,
        call: _Call,
        url: httpx.URL | str,
        params: Params | None,
        json: Any,
        headers: dict[str, str],
        auth: str,
        attempt_timeout: float,
    ) -> httpx.Response | Failure:
        """One paced send: a pacer ticket (which is also a concurrency slot), the request,
        the feedback."""
        method = call.method
        asked_at = self._clock.monotonic()
        ticket = await self._pacer.acquire(
            key, max_wait=call.deadline_at - asked_at, max_concurrency=self._max_concurrency
        )
        now = self._clock.monotonic()
        observe_pacing_delay(now - asked_at)
        left = call.deadline_at - now
        if left <= 0:
            await self._pacer.abandon(key, ticket)
            raise DeadlineExceededError(f"{method} {self._base.where(url)}: the deadline passed")
        attempt_timeout = min(attempt_timeout, left)
        request = self._http.build_request(
            method, url, params=params, json=json,
            headers={**self._headers, **headers} or None,
            # Our own httpx client already has this client's timeout: no new Timeout per call.
            timeout=(
                httpx.USE_CLIENT_DEFAULT
                if self._owns_http and attempt_timeout == self._timeout
                else attempt_timeout
            ),
        )  # fmt: skip
        request.headers["Authorization"] = auth  # set last: nothing can override it
        try:
            response = await self._send(request, attempt_timeout)
        except (httpx.TransportError, TimeoutError) as exc:
            observe_api(method, None)
            await self._pacer.abandon(key, ticket)
            return transport_failure(exc, method, self._base.where(url), attempt_timeout, left)
        except BaseException:
            await self._pacer.abandon(key, ticket)
            raise
        observe_api(method, response.status_code)
        await self._pacer.complete(
            key,
            ticket,
            status=response.status_code,
            headers=parse_ratelimit_headers(ratelimit_fields(response)),
        )
        return response

    async def _send(self, request: httpx.Request, seconds: float) -> httpx.Response:
        """Send, bounding the whole attempt: httpx times each network phase separately, and an
        in-process transport not at all. On asyncio its own timeout does it (a fraction of the
        cost of an anyio cancel scope, on every call); elsewhere anyio's. Both raise
        TimeoutError."""
        if _on_asyncio():
            async with asyncio.timeout(seconds):
                return await self._http.send(request, follow_redirects=False)
        with anyio.fail_after(seconds):
            return await self._http.send(request, follow_redirects=False)

    async def _back_off(self, call: _Call, error: Exception, where: str) -> None:
        delay = self._policy.backoff(call.failures, self._rng.random())
        if self._clock.monotonic() + delay >= call.deadline_at:
            raise error
        _log.info("%s %s: %s; retry in %.2fs", call.method, where, type(error).__name__, delay)
        call.failures += 1
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

    # -- URLs and headers ------------------------------------------------------------------

    def _url(self, path: str) -> httpx.URL | str:
        """The absolute URL for ``path`` (see :meth:`~pdauth.client.urls.ApiBase.resolve`)."""
        return self._base.resolve(path)

    def _relative(self, path: str) -> str:
        """``path`` relative to the base URL (for pagination-style lookup)."""
        return self._base.relative(path)

    @staticmethod
    def _check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
        if not headers:
            return {}
        extra = dict(headers)
        if any(name.lower() in ("authorization", "host") for name in extra):
            raise RequestRefusedError("Authorization and Host are set by the client")
        return extra
