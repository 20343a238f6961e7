"""Events: an append-only log whose id is the cursor, and an outbox with claims and retries."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from pdauth.errors import StoreError
from pdauth.store import NewEvent, Store

from .store_helpers import T0, new_connection, race


def test_ids_increase_and_the_cursor_pages_in_order(store: Store) -> None:
    ids = [store.add_event(NewEvent(type="test.happened", data={"n": i}), T0 + i) for i in range(7)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 7
    seen = []
    cursor = 0
    while page := store.list_events(after_id=cursor, limit=3):
        seen.extend(page)
        cursor = page[-1].id
    assert [e.id for e in seen] == ids
    assert [e.data["n"] for e in seen] == list(range(7))
    assert [e.created_at for e in seen] == [T0 + i for i in range(7)]


def test_concurrent_appends_are_all_listed_in_id_order(store: Store) -> None:
    ids = race(8, lambda i: store.add_event(NewEvent(type="test.happened", data={"n": i}), T0))
    listed = store.list_events(limit=100)
    assert [e.id for e in listed] == sorted(ids)


def test_filters_by_owner_and_type(store: Store) -> None:
    store.add_event(NewEvent(type="connection.created", owner="a"), T0)
    store.add_event(NewEvent(type="connection.revoked", owner="a"), T0)
    store.add_event(NewEvent(type="connection.created", owner="b"), T0)
    assert [e.type for e in store.list_events(owner="a")] == [
        "connection.created",
        "connection.revoked",
    ]
    assert [e.owner for e in store.list_events(type="connection.created")] == ["a", "b"]
    assert [(e.owner, e.type) for e in store.list_events(owner="b", type="connection.created")] == [
        ("b", "connection.created")
    ]


def test_the_event_rolls_back_with_its_connection_change(db_url: str) -> None:
    with Store(db_url) as store:
        store.upgrade()
        with store.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE events"))
        with pytest.raises(StoreError, match="upsert_connection"):
            store.upsert_connection(new_connection(), T0, NewEvent(type="connection.created"))
        assert store.list_connections() == []


def test_outbox_delivery_and_retries(store: Store) -> None:
    first = store.add_event(NewEvent(type="revocation.pending"), T0)
    second = store.add_event(NewEvent(type="connection.revoked"), T0 + 1)
    audit_only = store.add_event(NewEvent(type="connection.refreshed", outbox=False), T0)
    assert [e.id for e in store.due_events(now=T0, limit=10)] == [first]
    assert [e.id for e in store.due_events(now=T0 + 1, limit=10)] == [first, second]

    store.mark_delivered(first, T0 + 2)
    store.mark_delivered(first, T0 + 9)
    store.schedule_retry(second, next_attempt_at=T0 + 60, error="503 from PagerDuty")
    assert store.due_events(now=T0 + 59, limit=10) == []
    [retry] = store.due_events(now=T0 + 60, limit=10)
    assert (retry.id, retry.attempts, retry.last_error) == (second, 1, "503 from PagerDuty")

    store.schedule_retry(second, next_attempt_at=None, error="gave up")
    assert store.due_events(now=T0 + 10**6, limit=10) == []
    by_id = {e.id: e for e in store.list_events()}
    assert by_id[first].delivered_at == T0 + 2
    assert by_id[second].attempts == 2
    assert by_id[second].delivered_at is None
    assert by_id[audit_only].next_attempt_at is None


def test_claiming_due_events_hides_them_from_other_workers(store: Store) -> None:
    ids = [store.add_event(NewEvent(type="revocation.pending"), T0) for _ in range(4)]
    claims = race(4, lambda _: store.claim_due_events(now=T0, limit=2, hold_for=30))
    claimed = [e.id for batch in claims for e in batch]
    assert sorted(claimed) == ids  # every event claimed by exactly one worker
    assert store.claim_due_events(now=T0 + 29, limit=10, hold_for=30) == []
    # A worker that died releases its claim by time.
    assert [e.id for e in store.claim_due_events(now=T0 + 30, limit=10, hold_for=30)] == ids


def test_event_data_must_not_carry_secrets() -> None:
    for key in ("access_token", "refresh_token", "code", "state", "client_secret", "Token"):
        with pytest.raises(ValueError, match="secrets"):
            NewEvent(type="connection.created", data={key: "x"})
    with pytest.raises(ValueError, match="secrets"):
        NewEvent(type="connection.created", data={"nested": [{"code_verifier": "x"}]})
    NewEvent(type="revocation.pending", data={"refresh_token_ct": "ciphertext"})


@pytest.mark.parametrize("bad_type", ["", "created", "Connection.Created", "a." + "b" * 70])
def test_event_types_are_dotted_names(bad_type: str) -> None:
    with pytest.raises(ValueError, match="event type"):
        NewEvent(type=bad_type)


def test_event_data_must_be_json() -> None:
    with pytest.raises(ValueError, match="JSON"):
        NewEvent(type="connection.created", data={"when": object()})
    with pytest.raises(ValueError, match="JSON"):
        NewEvent(type="connection.created", data={"n": float("nan")})


def test_event_data_cannot_be_changed_after_creation() -> None:
    source = {"n": 1}
    event = NewEvent(type="connection.created", data=source)
    source["n"] = 2
    assert event.data["n"] == 1
    with pytest.raises(TypeError):
        event.data["n"] = 3  # type: ignore[index]
