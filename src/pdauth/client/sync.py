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

import contextlib
import threading
import warnings
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any, Literal, Self

import anyio
from anyio.from_thread import BlockingPortal

from pdauth.client.credentials import ApiKeyToken, StaticToken, TokenSource
from pdauth.client.rest import DEFAULT_BASE_URL, PagerDutyClient

__all__ = ["SyncPagerDutyClient"]

_END = object()

#: How long closing waits for the async client to close and for the loop's thread to end; a
#: call stuck past that cannot hold up the interpreter's exit (the thread is a daemon).
CLOSE_TIMEOUT = 5.0


class _Loop:
    """An event loop in a daemon thread, reached through a :class:`BlockingPortal`.

    anyio's ``start_blocking_portal`` is a context manager: left open, its generator is closed
    during interpreter finalization and waits there for a thread that no longer runs.
    """

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._portal: BlockingPortal | None = None
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="pdauth-sync-client", daemon=True)
        self.thread.start()
        self._ready.wait()
        if self._portal is None:
            raise RuntimeError("the client's event loop did not start") from self._error

    @property
    def portal(self) -> BlockingPortal:
        assert self._portal is not None
        return self._portal

    def _main(self) -> None:
        try:
            anyio.run(self._serve)
        except BaseException as exc:  # reported to the constructor waiting on _ready
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        async with BlockingPortal() as portal:
            self._portal = portal
            self._ready.set()
            await portal.sleep_until_stopped()

    def stop(self) -> None:
        """Stop the loop, cancelling what still runs, and wait (bounded) for the thread."""
        if self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # already stopping
                self.portal.call(self.portal.stop, True)
            self.thread.join(CLOSE_TIMEOUT)


def _shutdown(loop: _Loop, client: PagerDutyClient) -> None:
    if not loop.thread.is_alive():
        return
    try:
        loop.portal.start_task_soon(client.aclose).result(CLOSE_TIMEOUT)
    except (FutureTimeout, RuntimeError):  # stuck, or the loop is already stopping
        pass
    finally:
        loop.stop()


def _finalize(loop: _Loop, client: PagerDutyClient) -> None:
    """A client nobody closed: garbage collection or interpreter exit."""
    try:
        warnings.warn(
            "a SyncPagerDutyClient was not closed; use it in a `with` block or call close()",
            ResourceWarning,
            stacklevel=1,
        )
    finally:
        if threading.current_thread() is loop.thread:
            # Collected on its own loop's thread, which must not wait for itself.
            threading.Thread(target=_shutdown, args=(loop, client), daemon=True).start()
        else:
            _shutdown(loop, client)


class SyncPagerDutyClient:
    """Blocking twin of :class:`PagerDutyClient`: same constructor arguments, same methods.

    Use it as a context manager or call :meth:`close` (it owns a thread); one left open is
    closed at garbage collection or interpreter exit, with a ``ResourceWarning``.
    """

    def __init__(self, base_url: str, tokens: TokenSource, **kw: Any) -> None:
        self._loop = _Loop()
        self._portal: BlockingPortal = self._loop.portal
        try:
            self._client: PagerDutyClient = self._portal.call(_build, base_url, tokens, kw)
        except BaseException:
            self._loop.stop()
            raise
        self._closed = False
        self._finalizer = weakref.finalize(self, _finalize, self._loop, self._client)

    @classmethod
    def from_token(
        cls,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        kind: Literal["bearer", "api_key"] = "bearer",
        **kw: Any,
    ) -> Self:
        """A client for a static OAuth access token or a REST API key (``kind="api_key"``)."""
        if kind == "bearer":
            source: TokenSource = StaticToken(token)
        elif kind == "api_key":
            source = ApiKeyToken(token)
        else:
            raise ValueError("kind must be 'bearer' or 'api_key'")
        return cls(base_url, source, **kw)

    @property
    def base_url(self) -> str:
        return self._client.base_url

    def __repr__(self) -> str:
        return f"SyncPagerDutyClient(base_url={self.base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the async client and stop the background event loop."""
        if self._closed:
            return
        if threading.current_thread() is self._loop.thread:
            raise RuntimeError("a SyncPagerDutyClient cannot be closed from its own event loop")
        self._closed = True
        self._finalizer.detach()
        try:
            self._portal.call(self._client.aclose)
        finally:
            self._loop.stop()

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
