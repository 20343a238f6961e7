"""The store side of PagerDuty's events, on SQLite and PostgreSQL: a delivery id is recorded
once and its event appended with it (a racing repeat appends nothing), subscriptions due for
work are found, needs_reauth marks, delivery ids are purged; plus the settings variable and the
sealing of the signing secret and of a queued deletion's token."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pdauth.config import Settings
from pdauth.crypto import KeyRing, format_key, generate_key
from pdauth.errors import ConfigurationError, CryptoError
from pdauth.rotation import reencrypt_connections
from pdauth.sealing import Sealer
from pdauth.store import NewEvent, PagerDutyEventStore, Store, SubscriptionRow
from tests.store.store_helpers import T0, new_connection


def subscription(connection_id: str, state: str = "active", **extra: object) -> SubscriptionRow:
    values: dict[str, object] = {
        "connection_id": connection_id,
        "key": "k-" + connection_id,
        "state": state,
        "pd_subscription_id": "PSUB1",
        "secret_ct": "v1.k1.secret",
        "events": "incident.triggered",
        "attempts": 0,
        "next_attempt_at": None,
        "last_error": None,
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(extra)
    return SubscriptionRow(**values)  # type: ignore[arg-type]


def event(connection_id: str) -> NewEvent:
    return NewEvent(
        type="pagerduty.incident.triggered",
        connection_id=connection_id,
        owner="owner-1",
        data={"pagerduty_event_id": "E1"},
    )


def test_a_delivery_is_recorded_once_with_its_event(store: Store) -> None:
    row = store.upsert_connection(new_connection(), T0)
    pd = PagerDutyEventStore(store)
    sub = subscription(row.id)
    pd.save_subscription(sub)
    assert pd.subscription_by_key(sub.key) == sub
    assert pd.subscription_by_key("nope") is None
    first = pd.record_delivery("wh-1", sub, event(row.id), T0)
    assert first is not None
    assert pd.record_delivery("wh-1", sub, event(row.id), T0 + 1) is None
    types = [e.type for e in store.list_events(limit=100)]
    assert types.count("pagerduty.incident.triggered") == 1


def test_racing_repeats_of_one_delivery_append_one_event(store: Store) -> None:
    row = store.upsert_connection(new_connection(), T0)
    pd = PagerDutyEventStore(store)
    sub = subscription(row.id)
    pd.save_subscription(sub)
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(
            pool.map(lambda i: pd.record_delivery("wh-race", sub, event(row.id), T0 + i), range(12))
        )
    assert sum(r is not None for r in results) == 1
    found = store.list_events(limit=100, type="pagerduty.incident.triggered")
    assert len(found) == 1


def test_work_due_and_needs_reauth(store: Store) -> None:
    pd = PagerDutyEventStore(store)
    fresh = store.upsert_connection(new_connection(owner="a"), T0)
    done = store.upsert_connection(new_connection(owner="b"), T0)
    retry_due = store.upsert_connection(new_connection(owner="c"), T0)
    retry_later = store.upsert_connection(new_connection(owner="d"), T0)
    dead = store.upsert_connection(new_connection(owner="e"), T0)
    pd.save_subscription(subscription(done.id))
    pd.save_subscription(subscription(retry_due.id, "failed", next_attempt_at=T0 + 10))
    pd.save_subscription(subscription(retry_later.id, "failed", next_attempt_at=T0 + 999))
    pd.save_subscription(subscription(dead.id))
    assert store.mark_needs_reauth(dead.id, code="invalid_grant", message="gone", now=T0)
    due = pd.subscriptions_due(now=T0 + 60)
    assert sorted(due) == sorted([fresh.id, retry_due.id])
    assert pd.mark_needs_reauth(now=T0 + 60) == 1
    marked = pd.get_subscription(dead.id)
    assert marked is not None
    assert marked.state == "needs_reauth"
    assert pd.mark_needs_reauth(now=T0 + 61) == 0


def test_a_deleted_subscription_is_due_again_only_after_a_reconnect(store: Store) -> None:
    """A disconnect deletes the subscription, then revokes at PagerDuty, then marks the
    connection revoked: in that window the connection is still active, and a keeper pass must
    not create a new subscription (it would be orphaned at PagerDuty)."""
    pd = PagerDutyEventStore(store)
    row = store.upsert_connection(new_connection(), T0)
    pd.save_subscription(subscription(row.id, "deleted", updated_at=T0 + 5))
    assert pd.subscriptions_due(now=T0 + 6) == []
    store.upsert_connection(new_connection(), T0 + 10)  # the same grant approved again
    assert pd.subscriptions_due(now=T0 + 11) == [row.id]


def test_one_claim_of_a_subscription_wins(store: Store) -> None:
    pd = PagerDutyEventStore(store)
    row = store.upsert_connection(new_connection(), T0)
    first = subscription(row.id, "pending", key="k-first", next_attempt_at=T0 + 60)
    assert pd.claim_subscription(first, None)
    assert not pd.claim_subscription(subscription(row.id, "pending", key="k-second"), None)
    assert pd.get_subscription(row.id) == first
    # Both read `first`; only one claim over it wins, the other sees a changed row.
    retry = dataclasses.replace(first, updated_at=T0 + 61, next_attempt_at=T0 + 121)
    assert pd.claim_subscription(retry, first)
    assert not pd.claim_subscription(dataclasses.replace(retry, updated_at=T0 + 62), first)
    # The claimed work's result is written only over its own key.
    assert not pd.update_subscription(row.id, if_key="k-other", state="active")
    assert pd.update_subscription(row.id, if_key="k-first", state="active")


def test_old_delivery_ids_are_purged(store: Store) -> None:
    row = store.upsert_connection(new_connection(), T0)
    pd = PagerDutyEventStore(store)
    sub = subscription(row.id)
    pd.save_subscription(sub)
    pd.record_delivery("old", sub, event(row.id), T0)
    pd.record_delivery("new", sub, event(row.id), T0 + 100)
    assert pd.purge_deliveries(before=T0 + 50) == 1
    assert pd.record_delivery("old", sub, event(row.id), T0 + 200) is not None  # forgotten
    assert pd.record_delivery("new", sub, event(row.id), T0 + 200) is None


def test_the_events_setting() -> None:
    from tests.workers.harness import make_settings

    assert make_settings().pagerduty_events == ()
    s = Settings.from_env(
        {
            "PDAUTH_CLIENT_ID": "c",
            "PDAUTH_REDIRECT_URI": "http://127.0.0.1:8000/callback",
            "PDAUTH_ENCRYPTION_KEYS": format_key(generate_key("k1")),
            "PDAUTH_PAGERDUTY_EVENTS": "incident.triggered, incident.resolved,incident.triggered",
        }
    )
    assert s.pagerduty_events == ("incident.triggered", "incident.resolved")
    with pytest.raises(ConfigurationError, match="PDAUTH_PAGERDUTY_EVENTS"):
        Settings.from_env(
            {
                "PDAUTH_CLIENT_ID": "c",
                "PDAUTH_REDIRECT_URI": "http://127.0.0.1:8000/callback",
                "PDAUTH_ENCRYPTION_KEYS": format_key(generate_key("k1")),
                "PDAUTH_PAGERDUTY_EVENTS": "Incident Triggered",
            }
        )


def test_secrets_are_sealed_to_their_place() -> None:
    seal = Sealer(KeyRing.from_config(format_key(generate_key("k1"))))
    ct = seal.seal_subscription_secret("pdc_1", "key-1", "whsec")
    assert "whsec" not in ct
    assert seal.open_subscription_secret("pdc_1", "key-1", ct) == "whsec"
    for cid, key in (("pdc_2", "key-1"), ("pdc_1", "key-2")):
        with pytest.raises(CryptoError):
            seal.open_subscription_secret(cid, key, ct)
    token_ct = seal.seal_unsubscribe("pdc_1", "PSUB1", "access")
    assert seal.open_unsubscribe("pdc_1", "PSUB1", token_ct) == "access"
    with pytest.raises(CryptoError):
        seal.open_unsubscribe("pdc_1", "PSUB2", token_ct)
    with pytest.raises(CryptoError):
        seal.open_revocation("pdc_1", "access_token", token_ct)


def test_key_rotation_reseals_the_signing_secrets(store: Store) -> None:
    old = KeyRing([generate_key("k1")])
    new_key = generate_key("k2")
    both = old.with_key(new_key)  # the new key first: it encrypts
    new_only = KeyRing([new_key])
    pd = PagerDutyEventStore(store)
    rows = []
    for i in range(3):
        base = new_connection(pd_user_id=f"PU{i}")
        sealed_tokens = dataclasses.replace(
            base,
            access_token_ct=Sealer(old).seal_token(base, "access_token", f"access-{i}"),
            refresh_token_ct=Sealer(old).seal_token(base, "refresh_token", f"refresh-{i}"),
        )
        rows.append(store.upsert_connection(sealed_tokens, T0))
    for row in rows:
        sealed = Sealer(old).seal_subscription_secret(row.id, "k-" + row.id, "whsec-" + row.id)
        pd.save_subscription(subscription(row.id, secret_ct=sealed))
    first = pd.get_subscription(rows[0].id)
    assert first is not None
    assert first.secret_ct is not None
    with pytest.raises(CryptoError):  # negative control: the new key alone cannot open them
        Sealer(new_only).open_subscription_secret(rows[0].id, first.key, first.secret_ct)

    report = reencrypt_connections(store, both)

    assert report.subscription_secrets == 3
    assert report.reencrypted == 3  # the connections' tokens moved in the same run
    for row in rows:
        after = pd.get_subscription(row.id)
        assert after is not None
        assert after.secret_ct is not None
        assert after.secret_ct.startswith("v1.k2.")
        opened = Sealer(new_only).open_subscription_secret(row.id, after.key, after.secret_ct)
        assert opened == "whsec-" + row.id
    assert reencrypt_connections(store, both).subscription_secrets == 0  # nothing left to do


def test_the_async_event_store_runs_behind_the_stores_schema_gate(tmp_path: Path) -> None:
    """A delivery arriving first on a new database (Connector(migrate=True)) finds the schema
    migrated, as every other store call would, instead of "no such table"."""
    import anyio

    from pdauth.store import AsyncPagerDutyEventStore, AsyncStore

    async def first_call() -> None:
        store = AsyncStore(Store(f"sqlite:///{tmp_path}/new.db"))
        store.require_schema(upgrade=True)
        try:
            assert await AsyncPagerDutyEventStore(store).subscription_by_key("k") is None
            assert await store.is_up_to_date()
        finally:
            await store.aclose()

    anyio.run(first_call)
