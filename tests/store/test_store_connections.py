"""Connections: upsert per PagerDuty grant, reads, listing, and ciphertext kept out of repr."""

from __future__ import annotations

import pytest

from pdauth.store import NewConnection, NewEvent, Store

from .store_helpers import T0, new_connection


def test_insert_creates_an_active_row_with_an_unguessable_id(store: Store) -> None:
    row = store.upsert_connection(new_connection(), T0)
    assert row.id.startswith("pdc_")
    assert len(row.id) >= 4 + 22
    assert row.status == "active"
    assert row.is_active
    assert row.token_version == 1
    assert row.created_at == row.updated_at == T0
    assert isinstance(row.created_at, float)
    assert row.access_token_ct == "v1.k1.access-ciphertext-1"
    assert row.refresh_token_ct == "v1.k1.refresh-ciphertext-1"
    assert store.get_connection(row.id) == row


def test_ids_differ_between_connections(store: Store) -> None:
    ids = {store.upsert_connection(new_connection(pd_user_id=f"PU{i}"), T0).id for i in range(5)}
    assert len(ids) == 5


def test_reconnecting_the_same_user_updates_that_row(store: Store) -> None:
    first = store.upsert_connection(new_connection(), T0)
    store.record_error(first.id, code="transport", message="timeout", now=T0 + 1)
    assert store.try_acquire_lease(first.id, "worker-a", T0 + 2, 30) is not None
    again = store.upsert_connection(
        new_connection(
            access_token_ct="v1.k2.access-2",
            refresh_token_ct="v1.k2.refresh-2",
            key_id="k2",
            scopes="incidents.read",
            region="eu",
        ),
        T0 + 10,
    )
    assert again.id == first.id
    assert again.token_version == 2
    assert (again.access_token_ct, again.refresh_token_ct, again.key_id) == (
        "v1.k2.access-2",
        "v1.k2.refresh-2",
        "k2",
    )
    assert again.scopes == "incidents.read"
    assert again.region == "eu"
    assert again.created_at == T0
    assert again.updated_at == T0 + 10
    assert again.lease_owner is None
    assert again.lease_until is None
    assert again.last_error_code is None
    assert again.last_error_at is None
    assert len(store.list_connections()) == 1


def test_reconnect_reactivates_a_dead_connection(store: Store) -> None:
    first = store.upsert_connection(new_connection(), T0)
    assert store.mark_needs_reauth(first.id, code="invalid_grant", message="x", now=T0 + 1)
    again = store.upsert_connection(new_connection(), T0 + 2)
    assert again.id == first.id
    assert again.status == "active"
    assert again.refresh_token_ct == "v1.k1.refresh-ciphertext-1"


@pytest.mark.parametrize(
    "change",
    [{"pd_user_id": "PUSER02"}, {"owner": "owner-2"}, {"account_id": "PACCT02"}],
    ids=["other-user", "other-owner", "other-account"],
)
def test_another_user_owner_or_account_creates_a_new_row(
    store: Store, change: dict[str, str]
) -> None:
    first = store.upsert_connection(new_connection(), T0)
    second = store.upsert_connection(new_connection(**change), T0)
    assert second.id != first.id
    assert second.token_version == 1
    assert store.get_connection(first.id) == first


def test_app_connections_have_no_user_and_reconnect_to_the_same_row(store: Store) -> None:
    app = new_connection(kind="app", pd_user_id=None, pd_user_name=None, pd_user_email=None)
    first = store.upsert_connection(app, T0)
    second = store.upsert_connection(app, T0 + 1)
    user = store.upsert_connection(new_connection(), T0 + 2)
    assert first.pd_user_id is None
    assert second.id == first.id
    assert second.token_version == 2
    assert user.id != first.id


def test_upsert_writes_its_event_in_the_same_transaction(store: Store) -> None:
    row = store.upsert_connection(
        new_connection(), T0, NewEvent(type="connection.created", data={"region": "us"})
    )
    [event] = store.list_events()
    assert event.type == "connection.created"
    assert event.connection_id == row.id
    assert event.owner == row.owner
    assert dict(event.data) == {"region": "us"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"owner": ""}, "owner"),
        ({"owner": "o" * 256}, "owner"),
        ({"kind": "robot"}, "kind"),
        ({"region": "ap"}, "region"),
        ({"account_id": ""}, "account_id"),
        ({"pd_user_id": None}, "pd_user_id"),
        ({"kind": "app"}, "app connection"),
        ({"access_token_ct": ""}, "access_token_ct"),
        ({"key_id": ""}, "key_id"),
    ],
)
def test_invalid_connections_are_refused_before_the_database(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        new_connection(**change)


def test_repr_of_records_and_rows_shows_no_ciphertext(store: Store) -> None:
    rec = new_connection()
    row = store.upsert_connection(rec, T0)
    for value in (rec, row):
        text = repr(value)
        assert "ciphertext" not in text
        assert "pd_user_id='PUSER01'" in text


def test_get_missing_connection_is_none(store: Store) -> None:
    assert store.get_connection("pdc_missing") is None


def test_list_filters_and_pages_by_id(store: Store) -> None:
    rows = [
        store.upsert_connection(new_connection(owner=f"owner-{i % 2}", pd_user_id=f"PU{i}"), T0)
        for i in range(7)
    ]
    assert store.mark_revoked(rows[0].id, now=T0 + 1)
    all_ids = sorted(r.id for r in rows)
    assert [r.id for r in store.list_connections()] == all_ids
    page1 = store.list_connections(limit=3)
    page2 = store.list_connections(limit=3, after_id=page1[-1].id)
    page3 = store.list_connections(limit=3, after_id=page2[-1].id)
    assert [r.id for r in page1 + page2 + page3] == all_ids
    owner0 = store.list_connections(owner="owner-0")
    assert {r.id for r in owner0} == {r.id for r in rows[0::2]}
    revoked = store.list_connections(status="revoked")
    assert [r.id for r in revoked] == [rows[0].id]
    assert store.list_connections(owner="owner-0", status="active", limit=100) == [
        r for r in owner0 if r.id != rows[0].id
    ]


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_list_refuses_unbounded_or_empty_pages(store: Store, limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.list_connections(limit=limit)


def test_list_refuses_an_unknown_status(store: Store) -> None:
    with pytest.raises(ValueError, match="status"):
        store.list_connections(status="zombie")


def test_count_by_status_includes_every_status(store: Store) -> None:
    assert store.count_by_status() == {"active": 0, "needs_reauth": 0, "revoked": 0}
    ids = [store.upsert_connection(new_connection(pd_user_id=f"PU{i}"), T0).id for i in range(4)]
    store.mark_needs_reauth(ids[0], code="invalid_grant", message="dead", now=T0)
    store.mark_revoked(ids[1], now=T0)
    assert store.count_by_status() == {"active": 2, "needs_reauth": 1, "revoked": 1}


def test_delete_connection_keeps_the_audit_trail(store: Store) -> None:
    row = store.upsert_connection(new_connection(), T0, NewEvent(type="connection.created"))
    assert store.delete_connection(row.id)
    assert not store.delete_connection(row.id)
    assert store.get_connection(row.id) is None
    assert [e.connection_id for e in store.list_events()] == [row.id]


def test_touch_used_is_throttled(store: Store) -> None:
    row = store.upsert_connection(new_connection(), T0)
    store.touch_used(row.id, T0 + 1)
    store.touch_used(row.id, T0 + 30)
    after = store.get_connection(row.id)
    assert after is not None
    assert after.last_used_at == T0 + 1
    store.touch_used(row.id, T0 + 61)
    after = store.get_connection(row.id)
    assert after is not None
    assert after.last_used_at == T0 + 61


def test_record_error_keeps_the_connection_and_truncates(store: Store) -> None:
    row = store.upsert_connection(new_connection(), T0)
    store.record_error(row.id, code="server_error", message="m" * 5000, now=T0 + 5)
    after = store.get_connection(row.id)
    assert after is not None
    assert after.status == "active"
    assert after.token_version == row.token_version
    assert after.access_token_ct == row.access_token_ct
    assert after.last_error_code == "server_error"
    assert after.last_error_at == T0 + 5
    assert after.last_error_message is not None
    assert len(after.last_error_message) == 1000
    with pytest.raises(ValueError, match="error code"):
        store.record_error(row.id, code="c" * 65, message="", now=T0)


def test_due_for_refresh_lists_active_rows_nearing_idle_expiry(store: Store) -> None:
    soon = store.upsert_connection(new_connection(pd_user_id="P1", refresh_expires_at=T0 + 10), T0)
    sooner = store.upsert_connection(new_connection(pd_user_id="P2", refresh_expires_at=T0 + 5), T0)
    store.upsert_connection(new_connection(pd_user_id="P3", refresh_expires_at=T0 + 1000), T0)
    store.upsert_connection(new_connection(pd_user_id="P4", refresh_expires_at=None), T0)
    dead = store.upsert_connection(new_connection(pd_user_id="P5", refresh_expires_at=T0 + 1), T0)
    leased = store.upsert_connection(new_connection(pd_user_id="P6", refresh_expires_at=T0 + 2), T0)
    store.mark_needs_reauth(dead.id, code="invalid_grant", message="", now=T0)
    assert store.try_acquire_lease(leased.id, "w", T0, 60) is not None

    due = store.due_for_refresh(now=T0, refresh_expires_before=T0 + 100, limit=10)
    assert [r.id for r in due] == [sooner.id, soon.id]
    later = store.due_for_refresh(now=T0 + 61, refresh_expires_before=T0 + 100, limit=10)
    assert [r.id for r in later] == [leased.id, sooner.id, soon.id]
    assert len(store.due_for_refresh(now=T0, refresh_expires_before=T0 + 100, limit=1)) == 1


def test_new_connection_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        NewConnection("owner", "user")  # type: ignore[call-arg]
