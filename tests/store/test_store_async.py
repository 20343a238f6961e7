"""AsyncStore: the same operations as coroutines, run in worker threads."""

from __future__ import annotations

import inspect

import anyio
import pytest

from pdauth.store import AsyncStore, ConnectionRow, NewEvent, Store
from pdauth.store.migrate import head_revision

from .store_helpers import T0, new_connection, new_pending


def _public_methods(cls: type) -> set[str]:
    return {
        name
        for name, member in vars(cls).items()
        if not name.startswith("_") and inspect.isfunction(member)
    }


def test_async_store_mirrors_every_store_method() -> None:
    store_methods = _public_methods(Store)
    async_methods = _public_methods(AsyncStore)
    assert store_methods <= async_methods
    for name in store_methods:
        assert inspect.iscoroutinefunction(getattr(AsyncStore, name)), name
        sync_params = list(inspect.signature(getattr(Store, name)).parameters)
        async_params = list(inspect.signature(getattr(AsyncStore, name)).parameters)
        assert sync_params == async_params, name


@pytest.mark.anyio
async def test_round_trip_through_worker_threads(store: Store) -> None:
    astore = AsyncStore(store, max_threads=4)
    assert await astore.is_up_to_date()
    row = await astore.upsert_connection(new_connection(), T0, NewEvent(type="connection.created"))
    assert await astore.get_connection(row.id) == row
    await astore.create_pending(new_pending("s"), T0)
    assert await astore.consume_pending(new_pending("s").state_hash) is not None
    assert [e.type for e in await astore.list_events()] == ["connection.created"]
    assert (await astore.count_by_status())["active"] == 1


@pytest.mark.anyio
async def test_concurrent_tasks_racing_for_the_lease_have_one_winner(store: Store) -> None:
    astore = AsyncStore(store, max_threads=8)
    row = await astore.upsert_connection(new_connection(), T0)
    results: list[ConnectionRow | None] = []

    async def contend(i: int) -> None:
        results.append(await astore.try_acquire_lease(row.id, f"task-{i}", T0, 60))

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(contend, i)
    assert sum(r is not None for r in results) == 1


@pytest.mark.anyio
async def test_errors_and_validation_pass_through(store: Store) -> None:
    astore = AsyncStore(store)
    with pytest.raises(ValueError, match="limit"):
        await astore.list_connections(limit=0)


@pytest.mark.anyio
async def test_open_and_close_from_a_url(store: Store) -> None:
    astore = AsyncStore.open(store.engine.url.render_as_string(hide_password=False))
    try:
        await astore.upgrade()
        assert await astore.current_revision() == head_revision()
        assert astore.dialect in ("sqlite", "postgresql")
    finally:
        await astore.aclose()


def test_max_threads_must_be_positive(store: Store) -> None:
    with pytest.raises(ValueError, match="max_threads"):
        AsyncStore(store, max_threads=0)
