"""Key rotation: every row moves to the newest key, online (under refresh load), resumably."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator

import anyio
import anyio.to_thread
import pytest

from pdauth.cli import run
from pdauth.connections import Connector
from pdauth.crypto import KeyRing, format_key, generate_key
from pdauth.emulator import EmulatorConfig
from pdauth.errors import KeyNotFoundError
from pdauth.rotation import reencrypt_connections
from pdauth.store import ConnectionRow, Store
from pdauth.tokens import token_binding
from tests.workers.harness import EU_ADMIN, TEST_KEYS, Harness, harness, make_settings

pytestmark = pytest.mark.anyio

TTL = 1000
OLD = KeyRing.from_config(TEST_KEYS)
NEW_KEY = generate_key("k2")
BOTH = OLD.with_key(NEW_KEY)  # the new key first: it encrypts
OLD_FIRST = KeyRing.from_config(f"{TEST_KEYS},{format_key(NEW_KEY)}")  # deploy step 1
NEW_ONLY = KeyRing([NEW_KEY])


@pytest.fixture
async def h(tmp_path: os.PathLike[str]) -> AsyncIterator[Harness]:
    url = "sqlite:///" + os.path.join(os.fspath(tmp_path), "t.db")
    async with harness(url, config=EmulatorConfig(access_token_ttl=TTL)) as h:
        yield h


def users(h: Harness, n: int) -> list[str]:
    account = h.state.directory.account_by_subdomain("acme")
    assert account is not None
    return [u.email for u in h.state.directory.users_of(account.id)[:n]]


def decrypts_under(ring: KeyRing, row: ConnectionRow) -> bool:
    for column, ct in (
        ("access_token", row.access_token_ct),
        ("refresh_token", row.refresh_token_ct),
    ):
        if ct is not None:
            ring.decrypt(ct, token_binding(row, column))
    return True


def connector_with(h: Harness, ring: KeyRing) -> Connector:
    return h.another_connector(key_ring=ring)


async def test_rotation_under_concurrent_refreshes_loses_nothing(h: Harness) -> None:
    ids = [(await h.connect(f"owner-{i}", user=email)).id for i, email in enumerate(users(h, 12))]
    assert all(r.key_id == OLD.primary_key_id for r in await h.store.list_connections())
    # Mid-deploy: some processes encrypt with the new key, others still with the old one
    # (both rings hold both keys, as the documented procedure requires).
    new_process = connector_with(h, BOTH)
    old_process = connector_with(h, OLD_FIRST)
    rng = random.Random(7)
    done = anyio.Event()
    refreshed = 0

    async def refresh_load(connector: Connector) -> None:
        nonlocal refreshed
        while not done.is_set():
            await connector.tokens.force_refresh(rng.choice(ids))
            refreshed += 1
            await anyio.sleep(0)

    sync_store = h.store.store
    async with anyio.create_task_group() as tg:
        tg.start_soon(refresh_load, new_process)
        tg.start_soon(refresh_load, old_process)
        report = await anyio.to_thread.run_sync(
            lambda: reencrypt_connections(sync_store, BOTH, clock=h.clock, batch_size=5)
        )
        done.set()
    assert refreshed > 0
    assert report.examined >= 1
    # Old processes may have written under the old key meanwhile; a second run finishes.
    final = reencrypt_connections(sync_store, BOTH, clock=h.clock)
    assert final.remaining == 0
    rows = await h.store.list_connections()
    assert {r.key_id for r in rows} == {NEW_KEY.key_id}
    assert all(decrypts_under(NEW_ONLY, r) for r in rows)
    # Nothing lost: with ONLY the new key, every connection still refreshes, and PagerDuty
    # never saw a rotated refresh token twice.
    only_new = connector_with(h, NEW_ONLY)
    h.advance(TTL + 1)
    for conn_id in ids:
        await only_new.access_token(conn_id)
    assert h.stats()["refresh_reuse_detections"] == 0
    assert {r.status for r in await h.store.list_connections()} == {"active"}


class RacingStore(Store):
    """A refresh (by an old process) lands between the rotation's read and its write."""

    raced = 0

    def rows_needing_reencryption(
        self, *, primary_key_id: str, limit: int, after_id: str | None = None
    ) -> list[ConnectionRow]:
        rows = super().rows_needing_reencryption(
            primary_key_id=primary_key_id, limit=limit, after_id=after_id
        )
        if rows and not self.raced:
            self.raced += 1
            row = rows[0]
            leased = self.try_acquire_lease(row.id, "racer", 1.0, 30.0)
            assert leased is not None
            access = OLD.decrypt_text(row.access_token_ct or "", token_binding(row, "access_token"))
            stored = self.store_tokens(
                row.id,
                lease_owner="racer",
                expected_version=row.token_version,
                access_token_ct=OLD.encrypt(access, token_binding(row, "access_token")),
                refresh_token_ct=None,
                key_id=OLD.primary_key_id,
                access_expires_at=row.access_expires_at,
                refresh_expires_at=row.refresh_expires_at,
                now=2.0,
            )
            assert stored is not None
        return rows


async def test_a_row_changed_mid_rotation_is_reread_and_redone(h: Harness) -> None:
    await h.connect("owner-1")
    await h.connect("owner-2", user=EU_ADMIN)
    racing = RacingStore(h.settings.database_url)
    try:
        report = reencrypt_connections(racing, BOTH, clock=h.clock)
    finally:
        racing.dispose()
    assert racing.raced == 1
    assert report.retried == 1
    assert report.reencrypted == 2
    assert report.remaining == 0
    assert all(decrypts_under(NEW_ONLY, r) for r in await h.store.list_connections())


async def test_rotation_is_resumable_in_batches(h: Harness) -> None:
    for i, email in enumerate(users(h, 7)):
        await h.connect(f"owner-{i}", user=email)
    store = h.store.store
    seen: list[tuple[int, int]] = []
    partial = reencrypt_connections(
        store, BOTH, clock=h.clock, batch_size=3, max_batches=1, progress=lambda *a: seen.append(a)
    )
    assert (partial.examined, partial.reencrypted, partial.remaining) == (3, 3, 4)
    assert seen == [(3, 3)]
    rest = reencrypt_connections(store, BOTH, clock=h.clock, batch_size=3)
    assert (rest.examined, rest.reencrypted, rest.remaining) == (4, 4, 0)
    assert reencrypt_connections(store, BOTH, clock=h.clock).examined == 0  # nothing left


async def test_a_missing_old_key_fails_closed(h: Harness) -> None:
    await h.connect()
    with pytest.raises(KeyNotFoundError):
        reencrypt_connections(h.store.store, NEW_ONLY, clock=h.clock)
    row = (await h.store.list_connections())[0]
    assert row.key_id == OLD.primary_key_id  # untouched


async def test_wiped_rows_are_skipped(h: Harness) -> None:
    conn = await h.connect()
    await h.connector.disconnect(conn.id)
    report = reencrypt_connections(h.store.store, BOTH, clock=h.clock)
    assert report.examined == 0


# -- the commands ---------------------------------------------------------------------------


def test_keys_generate_prints_a_usable_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["keys", "generate", "--id", "k-new"]) == 0
    out = capsys.readouterr()
    ring = KeyRing.from_config(out.out.strip())
    assert ring.primary_key_id == "k-new"
    assert "PDAUTH_ENCRYPTION_KEYS" in out.err
    assert run(["keys", "generate", "--id", "bad id!"]) == 2


async def test_keys_rotate_and_db_upgrade_commands(
    h: Harness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    await h.connect()
    url = h.settings.database_url
    monkeypatch.delenv("PDAUTH_ENCRYPTION_KEYS", raising=False)
    assert run(["keys", "rotate", "--database-url", url]) == 2  # no keys configured
    assert "PDAUTH_ENCRYPTION_KEYS" in capsys.readouterr().err
    monkeypatch.setenv("PDAUTH_ENCRYPTION_KEYS", f"{format_key(NEW_KEY)},{TEST_KEYS}")
    assert run(["keys", "rotate", "--database-url", url, "--batch-size", "1"]) == 0
    out = capsys.readouterr().out
    assert "re-encrypted 1" in out
    assert "remaining 0" in out
    assert format_key(NEW_KEY).split(":")[1] not in out
    rows = await h.store.list_connections()
    assert all(decrypts_under(NEW_ONLY, r) for r in rows)

    fresh = url.replace("t.db", "fresh.db")
    assert run(["db", "upgrade", "--database-url", fresh]) == 0
    assert "revision" in capsys.readouterr().out
    store = Store(fresh)
    try:
        assert store.is_up_to_date()
    finally:
        store.dispose()


def test_settings_helper_matches_the_keys() -> None:
    assert make_settings().key_ring().primary_key_id == OLD.primary_key_id
