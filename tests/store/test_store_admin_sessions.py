"""Admin sessions in the store: live, touched at most once a minute, ended by idleness,
lifetime, sign-out or another password; and missing scopes recorded once."""

from __future__ import annotations

import pytest

from pdauth.store import NewEvent, Store

from .store_helpers import T0, new_connection

H1 = "a" * 64
H2 = "b" * 64
FP = "f" * 64
OTHER_FP = "e" * 64


def _open(store: Store, id_hash: str = H1, fingerprint: str = FP) -> None:
    store.create_admin_session(
        id_hash, password_fingerprint=fingerprint, now=T0, expires_at=T0 + 3600
    )


def _check(store: Store, now: float, id_hash: str = H1, fingerprint: str = FP) -> bool:
    return store.check_admin_session(
        id_hash, password_fingerprint=fingerprint, now=now, idle_timeout=1800
    )


def test_a_session_lives_while_used_and_ends_on_sign_out(store: Store) -> None:
    _open(store)
    assert _check(store, T0 + 10)
    assert _check(store, T0 + 1700)  # touched: idle counts from here
    assert _check(store, T0 + 3000)
    assert store.delete_admin_session(H1)
    assert not _check(store, T0 + 3001)
    assert not store.delete_admin_session(H1)


def test_idle_and_absolute_lifetime_end_a_session(store: Store) -> None:
    _open(store)
    assert not _check(store, T0 + 1800)  # idle 30 minutes
    _open(store, H2)
    for minute in range(1, 60):
        assert _check(store, T0 + 60 * minute, H2)
    assert not _check(store, T0 + 3600, H2)  # the hour is over, however active
    assert not _check(store, T0 + 10, H2)  # and it was deleted, not just refused


def test_touch_is_at_most_once_a_minute(store: Store) -> None:
    _open(store)
    assert _check(store, T0 + 30)  # not recorded: under a minute
    assert not _check(store, T0 + 1800)  # idle measured from T0, so the 30 s touch did not count


def test_another_password_ends_every_session(store: Store) -> None:
    _open(store)
    _open(store, H2)
    assert not _check(store, T0 + 5, fingerprint=OTHER_FP)
    assert not _check(store, T0 + 6)  # deleted: even the old password does not revive it
    assert _check(store, T0 + 7, H2)  # negative control: the other one lives until checked
    assert store.delete_admin_sessions() == 1


def test_unknown_ids_and_bad_arguments(store: Store) -> None:
    assert not _check(store, T0, "c" * 64)
    with pytest.raises(ValueError, match="id_hash"):
        store.create_admin_session("x", password_fingerprint=FP, now=T0, expires_at=T0 + 1)


def test_missing_scopes_are_recorded_once_and_cleared_by_a_new_grant(store: Store) -> None:
    row = store.upsert_connection(new_connection(), T0)
    assert row.missing_scopes is None
    event = NewEvent(type="connection.needs_scopes", data={"missing_scopes": ["users.write"]})
    assert store.mark_missing_scopes(row.id, "users.write", now=T0 + 1, event=event)
    assert not store.mark_missing_scopes(row.id, "users.write", now=T0 + 2, event=event)
    assert not store.mark_missing_scopes("pdc_nope", "users.write", now=T0 + 2)
    found = store.get_connection(row.id)
    assert found is not None
    assert found.missing_scopes == "users.write"
    types = [e.type for e in store.list_events(limit=100)]
    assert types.count("connection.needs_scopes") == 1
    again = store.upsert_connection(new_connection(), T0 + 3)
    assert again.id == row.id
    assert again.missing_scopes is None
