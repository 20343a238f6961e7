"""``SyncPagerDutyClient``: the async client for scripts, Flask and Django, without a second
copy of its logic.

It runs one :class:`~pdauth.client.rest.PagerDutyClient` on an event loop in a background
*daemon* thread (an anyio blocking portal) and forwards each call there, so pacing, retries,
the 401 refresh and pagination are exactly the async client's. Pacing state is shared with
every other client of the process through the same pacer. Safe to call from several threads.
A client that is never closed does not keep the interpreter alive: the thread is a daemon, a
finalizer (at garbage collection or at interpreter exit, while the thread still runs) closes
the async client and stops the loop, and a ``ResourceWarning`` says it was not closed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from anyio.from_thread import BlockingPortal

from pdauth._portal import BlockingTwin, DaemonPortal
from pdauth.client.credentials import FromToken, TokenSource
from pdauth.client.rest import PagerDutyClient

__all__ = ["SyncPagerDutyClient"]

_END = object()


class SyncPagerDutyClient(BlockingTwin, FromToken):
    """Blocking twin of :class:`PagerDutyClient`: same constructor arguments, same methods.

    Use it as a context manager or call :meth:`close` (it owns a thread); one left open is
    closed at garbage collection or interpreter exit, with a ``ResourceWarning``.
    """

    def __init__(self, base_url: str, tokens: TokenSource, **kw: Any) -> None:
        self._loop = DaemonPortal("SyncPagerDutyClient", "pdauth-sync-client")
        self._portal: BlockingPortal = self._loop.portal
        self._client: PagerDutyClient = self._loop.build(self, _build, base_url, tokens, kw)
        self._closed = False

    @property
    def base_url(self) -> str:
        return self._client.base_url

    def __repr__(self) -> str:
        return f"SyncPagerDutyClient(base_url={self.base_url!r})"

    def request(self, method: str, path: str, **kw: Any) -> Any:
        """See :meth:`PagerDutyClient.request`."""
        return self._call(self._client.request, method, path, kw)

    def get(self, path: str, **kw: Any) -> Any:
        return self._call(self._client.request, "GET", path, kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self._call(self._client.request, "POST", path, kw)

    def put(self, path: str, **kw: Any) -> Any:
        return self._call(self._client.request, "PUT", path, kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self._call(self._client.request, "DELETE", path, kw)

    def iter_all(self, path: str, params: Any = None, **kw: Any) -> Iterator[Any]:
        """See :meth:`PagerDutyClient.iter_all`."""
        return self._iterate(lambda: self._client.iter_all(path, params, **kw))

    def iter_cursor(self, path: str, params: Any = None, **kw: Any) -> Iterator[Any]:
        """See :meth:`PagerDutyClient.iter_cursor`."""
        return self._iterate(lambda: self._client.iter_cursor(path, params, **kw))

    def rget(self, resource: str | Mapping[str, Any], **kw: Any) -> Any:
        """See :meth:`PagerDutyClient.rget`."""
        return self._run(self._client.rget, resource, **kw)

    def find(self, resource: str, query: str, attribute: str = "name", **kw: Any) -> Any | None:
        """See :meth:`PagerDutyClient.find`."""
        return self._run(self._client.find, resource, query, attribute, **kw)

    def list_all(self, path: str, params: Any = None, **kw: Any) -> list[Any]:
        """See :meth:`PagerDutyClient.list_all`."""
        result: list[Any] = self._run(self._client.list_all, path, params, **kw)
        return result

    def _call(self, func: Callable[..., Any], method: str, path: str, kw: dict[str, Any]) -> Any:
        return self._run(func, method, path, **kw)

    def _run(self, func: Callable[..., Awaitable[Any]], *args: Any, **kw: Any) -> Any:
        if self._closed:
            raise RuntimeError("the client is closed")
        return self._portal.call(lambda: func(*args, **kw))

    def _iterate(self, make: Callable[[], Any]) -> Iterator[Any]:
        if self._closed:
            raise RuntimeError("the client is closed")
        iterator = make()
        try:
            while True:
                item = self._portal.call(_next, iterator)
                if item is _END:
                    return
                yield item
        finally:
            if not self._closed:
                self._portal.call(iterator.aclose)


async def _build(base_url: str, tokens: TokenSource, kw: dict[str, Any]) -> PagerDutyClient:
    # Built inside the portal's loop, so every anyio primitive it creates belongs there.
    return PagerDutyClient(base_url, tokens, **kw)


async def _next(iterator: Any) -> Any:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return _END
