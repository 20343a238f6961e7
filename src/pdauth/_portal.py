"""An event loop in a background *daemon* thread, reached through an anyio blocking portal:
the one engine under pdauth's blocking twins of async objects (the SyncConnector, the
SyncPagerDutyClient).

:class:`DaemonPortal` starts the thread and waits until its loop runs, builds the async object
on that loop (so every anyio primitive it creates belongs there), and closes it again: by the
owner's ``close()``, or — for an owner nobody closed — at garbage collection or interpreter
exit, with a ``ResourceWarning``. Closing waits at most :data:`CLOSE_TIMEOUT` for the object and
the thread, so a call stuck on the loop cannot hold up the interpreter's exit (the thread is a
daemon). anyio's own ``start_blocking_portal`` is a context manager: left open, its generator is
closed during interpreter finalization and waits there for a thread that no longer runs.
Beside it, the async side of the same contract: :class:`AsyncClosing`, the ``async with`` of
every pdauth object that closes with ``aclose()``.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

__all__ = ["CLOSE_TIMEOUT", "AsyncClosing", "BlockingTwin", "DaemonPortal"]

#: How long closing waits for the async object to close and for the loop's thread to end.
CLOSE_TIMEOUT = 5.0


class _Closable(Protocol):
    def aclose(self) -> Awaitable[None]: ...


C = TypeVar("C", bound=_Closable)


class DaemonPortal:
    """An event loop in a daemon thread that runs one async object for a blocking owner.

    ``label`` names the owner in messages ("a SyncConnector was not closed; …").
    """

    def __init__(self, label: str, thread_name: str) -> None:
        self.label = label
        self._ready = threading.Event()
        self._portal: BlockingPortal | None = None
        self._error: BaseException | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._aclose: Callable[[], Awaitable[None]] | None = None
        self.thread = threading.Thread(target=self._main, name=thread_name, daemon=True)
        self.thread.start()
        self._ready.wait()
        if self._portal is None:
            raise RuntimeError(f"the {label}'s event loop did not start") from self._error

    @property
    def portal(self) -> BlockingPortal:
        assert self._portal is not None
        return self._portal

    def build(self, owner: object, factory: Callable[..., Awaitable[C]], *args: Any) -> C:
        """``await factory(*args)`` on the loop; the result is closed when :meth:`close` runs or
        when ``owner`` is collected unclosed. If the factory fails the loop is stopped."""
        try:
            built = self.portal.call(factory, *args)
        except BaseException:
            self.stop()
            raise
        self._aclose = built.aclose
        self._finalizer = weakref.finalize(owner, _finalize, self, built.aclose)
        return built

    def check_caller(self) -> None:
        """Refuse a close from the loop's own thread (it would wait for itself)."""
        if threading.current_thread() is self.thread:
            raise RuntimeError(f"a {self.label} cannot be closed from its own event loop")

    def close(self) -> None:
        """Close the built object and stop the loop (the owner calls this once)."""
        if self._finalizer is not None:
            self._finalizer.detach()
        try:
            if self._aclose is not None:
                self.portal.call(self._aclose)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop the loop, cancelling what still runs, and wait (bounded) for the thread."""
        if self.thread.is_alive():
            with contextlib.suppress(RuntimeError):  # already stopping
                self.portal.call(self.portal.stop, True)
            self.thread.join(CLOSE_TIMEOUT)

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


class BlockingTwin:
    """Base of a blocking twin whose ``_loop`` runs its async object: a context manager, and
    :meth:`close` closes that object and stops the loop, once."""

    _loop: DaemonPortal
    _closed: bool

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
        """Close the async object underneath and stop the background event loop."""
        if self._closed:
            return
        self._loop.check_caller()
        self._closed = True
        self._loop.close()


class AsyncClosing:
    """Base of an async object that closes with :meth:`aclose`: ``async with`` gives the object
    itself and awaits :meth:`aclose` on the way out (an exception included)."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _shutdown(loop: DaemonPortal, aclose: Callable[[], Awaitable[None]]) -> None:
    if not loop.thread.is_alive():
        return
    try:
        loop.portal.start_task_soon(aclose).result(CLOSE_TIMEOUT)
    except (FutureTimeout, RuntimeError):  # stuck, or the loop is already stopping
        pass
    finally:
        loop.stop()


def _finalize(loop: DaemonPortal, aclose: Callable[[], Awaitable[None]]) -> None:
    """An owner nobody closed: garbage collection or interpreter exit."""
    try:
        warnings.warn(
            f"a {loop.label} was not closed; use it in a `with` block or call close()",
            ResourceWarning,
            stacklevel=1,
        )
    finally:
        if threading.current_thread() is loop.thread:
            # Collected on its own loop's thread, which must not wait for itself.
            threading.Thread(target=_shutdown, args=(loop, aclose), daemon=True).start()
        else:
            _shutdown(loop, aclose)
