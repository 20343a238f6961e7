"""The refresh lease and the fenced token writes: exactly one winner, across threads and processes.

See ARCHITECTURE.md "Refresh": the lease is one compare-and-set UPDATE; store_tokens is fenced
by the lease owner and token_version; mark_needs_reauth changes the status exactly once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pdauth.store import ConnectionRow, NewEvent, Store

from .store_helpers import T0, new_connection, race

WORKER = Path(__file__).with_name("store_lease_worker.py")


@pytest.fixture
def conn(store: Store) -> ConnectionRow:
    return store.upsert_connection(new_connection(), T0)


def _fresh(store: Store, connection_id: str) -> ConnectionRow:
    row = store.get_connection(connection_id)
    assert row is not None
    return row


def test_lease_is_granted_with_the_row_as_of_now(store: Store, conn: ConnectionRow) -> None:
    row = store.try_acquire_lease(conn.id, "worker-a", T0, 30)
    assert row is not None
    assert row.lease_owner == "worker-a"
    assert row.lease_until == T0 + 30
    assert row.lease_held(T0 + 29)
    assert not row.lease_held(T0 + 30)
    assert row.refresh_token_ct == conn.refresh_token_ct
    assert store.try_acquire_lease(conn.id, "worker-b", T0 + 29, 30) is None
    assert store.try_acquire_lease(conn.id, "worker-a", T0 + 29, 30) is None  # not re-entrant


def test_threads_racing_for_the_lease_have_exactly_one_winner(
    store: Store, conn: ConnectionRow
) -> None:
    results = race(8, lambda i: store.try_acquire_lease(conn.id, f"worker-{i}", T0, 60))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert _fresh(store, conn.id).lease_owner == winners[0].lease_owner


def test_processes_racing_for_the_lease_have_exactly_one_winner(
    store: Store, conn: ConnectionRow
) -> None:
    db_url = store.engine.url.render_as_string(hide_password=False)
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), db_url, conn.id, f"process-{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outcomes = sorted(proc.communicate(timeout=60)[0].strip() for proc in procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert [proc.returncode for proc in procs] == [0, 0]
    assert outcomes == ["lost", "won"]
    assert (_fresh(store, conn.id).lease_owner or "").startswith("process-")


def test_an_expired_lease_can_be_taken_over(store: Store, conn: ConnectionRow) -> None:
    assert store.try_acquire_lease(conn.id, "worker-a", T0, 30) is not None
    assert store.try_acquire_lease(conn.id, "worker-b", T0 + 29.5, 30) is None
    taken = store.try_acquire_lease(conn.id, "worker-b", T0 + 30, 30)
    assert taken is not None
    assert taken.lease_owner == "worker-b"


def test_release_only_by_the_holder(store: Store, conn: ConnectionRow) -> None:
    assert store.try_acquire_lease(conn.id, "worker-a", T0, 30) is not None
    store.release_lease(conn.id, "worker-b")
    assert _fresh(store, conn.id).lease_owner == "worker-a"
    store.release_lease(conn.id, "worker-a")
    released = _fresh(store, conn.id)
    assert released.lease_owner is None
    assert released.lease_until is None
    assert store.try_acquire_lease(conn.id, "worker-b", T0 + 1, 30) is not None


def test_no_lease_on_a_dead_or_missing_connection(store: Store, conn: ConnectionRow) -> None:
    assert store.try_acquire_lease("pdc_missing", "w", T0, 30) is None
    store.mark_needs_reauth(conn.id, code="invalid_grant", message="", now=T0)
    assert store.try_acquire_lease(conn.id, "w", T0, 30) is None


@pytest.mark.parametrize(("owner", "ttl"), [("", 30.0), ("w" * 256, 30.0), ("w", 0.0)])
def test_lease_arguments_are_validated(
    store: Store, conn: ConnectionRow, owner: str, ttl: float
) -> None:
    with pytest.raises(ValueError, match=r"lease_owner|ttl"):
        store.try_acquire_lease(conn.id, owner, T0, ttl)


def _store(
    store: Store, connection_id: str, *, owner: str, version: int, **kw: object
) -> ConnectionRow | None:
    values: dict[str, object] = {
        "access_token_ct": "v1.k2.access-2",
        "refresh_token_ct": "v1.k2.refresh-2",
        "key_id": "k2",
        "access_expires_at": T0 + 7200,
        "refresh_expires_at": T0 + 60 * 86400,
        "now": T0 + 5,
    }
    values.update(kw)
    return store.store_tokens(
        connection_id,
        lease_owner=owner,
        expected_version=version,
        **values,  # type: ignore[arg-type]
    )


def test_store_tokens_under_the_lease(store: Store, conn: ConnectionRow) -> None:
    store.record_error(conn.id, code="transport", message="reset", now=T0)
    leased = store.try_acquire_lease(conn.id, "worker-a", T0, 30)
    assert leased is not None
    row = _store(
        store,
        conn.id,
        owner="worker-a",
        version=leased.token_version,
        event=NewEvent(type="connection.refreshed"),
    )
    assert row is not None
    assert row.token_version == conn.token_version + 1
    assert (row.access_token_ct, row.refresh_token_ct, row.key_id) == (
        "v1.k2.access-2",
        "v1.k2.refresh-2",
        "k2",
    )
    assert row.access_expires_at == T0 + 7200
    assert row.refresh_expires_at == T0 + 60 * 86400
    assert row.lease_owner is None
    assert row.lease_until is None
    assert row.last_refreshed_at == T0 + 5
    assert row.updated_at == T0 + 5
    assert row.last_error_code is None
    assert _fresh(store, conn.id) == row
    assert [(e.type, e.connection_id) for e in store.list_events()] == [
        ("connection.refreshed", conn.id)
    ]


def test_store_tokens_after_the_lease_expired_but_nobody_took_it(
    store: Store, conn: ConnectionRow
) -> None:
    assert store.try_acquire_lease(conn.id, "worker-a", T0, 30) is not None
    # The newest rotated tokens must not be dropped just because the call was slow.
    assert _store(store, conn.id, owner="worker-a", version=1, now=T0 + 100) is not None


def test_store_tokens_without_a_new_refresh_token_keeps_the_old_one(
    store: Store, conn: ConnectionRow
) -> None:
    assert store.try_acquire_lease(conn.id, "worker-a", T0, 30) is not None
    row = _store(store, conn.id, owner="worker-a", version=1, refresh_token_ct=None)
    assert row is not None
    assert row.refresh_token_ct == conn.refresh_token_ct
    assert row.access_token_ct == "v1.k2.access-2"


@pytest.mark.parametrize(
    "scenario", ["wrong-owner", "stale-version", "no-lease", "lease-taken-over", "not-active"]
)
def test_store_tokens_fence_failures_change_nothing(
    store: Store, conn: ConnectionRow, scenario: str
) -> None:
    assert store.try_acquire_lease(conn.id, "worker-a", T0, 30) is not None
    owner, version = "worker-a", conn.token_version
    if scenario == "wrong-owner":
        owner = "worker-b"
    elif scenario == "stale-version":
        version = conn.token_version - 1
    elif scenario == "no-lease":
        store.release_lease(conn.id, "worker-a")
    elif scenario == "lease-taken-over":
        assert store.try_acquire_lease(conn.id, "worker-b", T0 + 31, 30) is not None
    elif scenario == "not-active":
        assert store.mark_revoked(conn.id, now=T0 + 1)
    before = _fresh(store, conn.id)
    result = _store(
        store, conn.id, owner=owner, version=version, event=NewEvent(type="connection.refreshed")
    )
    assert result is None
    assert _fresh(store, conn.id) == before
    assert store.list_events(type="connection.refreshed") == []


def test_after_one_refresh_the_old_version_is_fenced_out(store: Store, conn: ConnectionRow) -> None:
    assert store.try_acquire_lease(conn.id, "worker-a", T0, 30) is not None
    assert _store(store, conn.id, owner="worker-a", version=1) is not None
    assert store.try_acquire_lease(conn.id, "worker-b", T0 + 1, 30) is not None
    # worker-b read version 1 before worker-a's write: its write must not land.
    assert _store(store, conn.id, owner="worker-b", version=1) is None
    assert _store(store, conn.id, owner="worker-b", version=2) is not None


def test_mark_needs_reauth_wipes_tokens_and_is_true_once(store: Store, conn: ConnectionRow) -> None:
    assert store.try_acquire_lease(conn.id, "worker-a", T0, 30) is not None
    event = NewEvent(type="connection.needs_reauth", data={"error": "invalid_grant"})
    assert store.mark_needs_reauth(
        conn.id, code="invalid_grant", message="grant revoked", now=T0 + 1, event=event
    )
    row = _fresh(store, conn.id)
    assert row.status == "needs_reauth"
    assert row.access_token_ct is None
    assert row.refresh_token_ct is None
    assert row.key_id is None
    assert row.lease_owner is None
    assert row.lease_until is None
    assert row.token_version == conn.token_version + 1
    assert (row.last_error_code, row.last_error_message, row.last_error_at) == (
        "invalid_grant",
        "grant revoked",
        T0 + 1,
    )
    assert not store.mark_needs_reauth(
        conn.id, code="invalid_grant", message="again", now=T0 + 2, event=event
    )
    assert len(store.list_events(type="connection.needs_reauth")) == 1


def test_mark_needs_reauth_with_a_stale_version_is_a_race_not_a_death(
    store: Store, conn: ConnectionRow
) -> None:
    assert store.try_acquire_lease(conn.id, "worker-a", T0, 30) is not None
    assert _store(store, conn.id, owner="worker-a", version=1) is not None
    assert not store.mark_needs_reauth(
        conn.id, code="invalid_grant", message="", now=T0 + 2, expected_version=1
    )
    assert _fresh(store, conn.id).status == "active"
    assert store.mark_needs_reauth(
        conn.id, code="invalid_grant", message="", now=T0 + 2, expected_version=2
    )


def test_concurrent_mark_needs_reauth_writes_one_event(store: Store, conn: ConnectionRow) -> None:
    results = race(
        8,
        lambda i: store.mark_needs_reauth(
            conn.id,
            code="invalid_grant",
            message=f"worker {i}",
            now=T0 + 1,
            event=NewEvent(type="connection.needs_reauth"),
        ),
    )
    assert sorted(results) == [False] * 7 + [True]
    assert len(store.list_events(type="connection.needs_reauth")) == 1
    assert _fresh(store, conn.id).token_version == conn.token_version + 1


def test_mark_revoked_from_active_or_needs_reauth(store: Store, conn: ConnectionRow) -> None:
    other = store.upsert_connection(new_connection(pd_user_id="PUSER02"), T0)
    store.mark_needs_reauth(other.id, code="invalid_grant", message="", now=T0)
    event = NewEvent(type="connection.revoked")
    assert store.mark_revoked(conn.id, now=T0 + 1, event=event)
    assert store.mark_revoked(other.id, now=T0 + 1, event=event)
    assert not store.mark_revoked(conn.id, now=T0 + 2, event=event)
    for connection_id in (conn.id, other.id):
        row = _fresh(store, connection_id)
        assert row.status == "revoked"
        assert row.access_token_ct is None
        assert row.refresh_token_ct is None
    assert len(store.list_events(type="connection.revoked")) == 2
    assert not store.mark_needs_reauth(conn.id, code="invalid_grant", message="", now=T0 + 3)
    assert _fresh(store, conn.id).status == "revoked"


def test_mark_revoked_fenced_by_version_for_an_outbox_snapshot(
    store: Store, conn: ConnectionRow
) -> None:
    assert not store.mark_revoked(conn.id, now=T0, expected_version=conn.token_version + 1)
    snapshot = NewEvent(type="revocation.pending", data={"refresh_token_ct": conn.refresh_token_ct})
    assert store.mark_revoked(conn.id, now=T0, expected_version=conn.token_version, event=snapshot)
    [event] = store.list_events(type="revocation.pending")
    assert event.data["refresh_token_ct"] == conn.refresh_token_ct


def test_reencryption_listing_and_fenced_replacement(store: Store) -> None:
    old = [store.upsert_connection(new_connection(pd_user_id=f"PU{i}"), T0) for i in range(3)]
    store.upsert_connection(new_connection(pd_user_id="PNEW", key_id="k2"), T0)
    wiped = store.upsert_connection(new_connection(pd_user_id="PWIPED"), T0)
    store.mark_revoked(wiped.id, now=T0)

    first = store.rows_needing_reencryption(primary_key_id="k2", limit=2)
    rest = store.rows_needing_reencryption(primary_key_id="k2", limit=2, after_id=first[-1].id)
    assert [r.id for r in first + rest] == sorted(r.id for r in old)

    target = old[0]
    assert store.replace_ciphertexts(
        target.id,
        expected_version=target.token_version,
        access_token_ct="v1.k2.access-re",
        refresh_token_ct="v1.k2.refresh-re",
        key_id="k2",
        now=T0 + 1,
    )
    row = _fresh(store, target.id)
    assert row.token_version == target.token_version  # plaintext unchanged: no bump
    assert (row.access_token_ct, row.refresh_token_ct, row.key_id) == (
        "v1.k2.access-re",
        "v1.k2.refresh-re",
        "k2",
    )
    # A refresh in between wins; the rotator's stale write is refused.
    racing = old[1]
    assert store.try_acquire_lease(racing.id, "worker-a", T0, 30) is not None
    assert _store(store, racing.id, owner="worker-a", version=racing.token_version) is not None
    assert not store.replace_ciphertexts(
        racing.id,
        expected_version=racing.token_version,
        access_token_ct="stale",
        refresh_token_ct="stale",
        key_id="k2",
        now=T0 + 1,
    )
    assert _fresh(store, racing.id).access_token_ct == "v1.k2.access-2"
    remaining = store.rows_needing_reencryption(primary_key_id="k2", limit=10)
    assert [r.id for r in remaining] == [old[2].id]
