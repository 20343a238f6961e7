"""Pending authorizations: stored by state hash, consumed exactly once, capped, purged."""

from __future__ import annotations

import pytest

from pdauth.store import NewPending, Store

from .store_helpers import T0, new_pending, race, state_hash


def _url(store: Store) -> str:
    """The unmasked URL of the fixture's (already migrated, emptied) database."""
    return store.engine.url.render_as_string(hide_password=False)


def test_create_then_consume_returns_the_row_once(store: Store) -> None:
    rec = new_pending("state-a")
    store.create_pending(rec, T0)
    row = store.consume_pending(rec.state_hash)
    assert row is not None
    assert row.state_hash == rec.state_hash
    assert row.owner == rec.owner
    assert row.binding_hash == rec.binding_hash
    assert row.verifier_ct == rec.verifier_ct
    assert (row.redirect_uri, row.scopes, row.return_to) == (
        rec.redirect_uri,
        rec.scopes,
        rec.return_to,
    )
    assert row.created_at == T0
    assert row.expires_at == T0 + 600
    assert store.consume_pending(rec.state_hash) is None


def test_unknown_state_consumes_nothing(store: Store) -> None:
    store.create_pending(new_pending("state-a"), T0)
    assert store.consume_pending(state_hash("state-b")) is None
    assert store.consume_pending("not-a-hash") is None
    assert store.consume_pending(state_hash("state-a")) is not None


def test_eight_racing_consumers_exactly_one_gets_the_row(store: Store) -> None:
    rec = new_pending("state-race")
    store.create_pending(rec, T0)
    results = race(8, lambda _: store.consume_pending(rec.state_hash))
    assert sum(r is not None for r in results) == 1


def test_an_expired_row_is_still_consumed_and_reported_expired(store: Store) -> None:
    rec = new_pending("state-old", expires_at=T0 + 600)
    store.create_pending(rec, T0)
    row = store.consume_pending(rec.state_hash)
    assert row is not None
    assert not row.is_expired(T0 + 599)
    assert row.is_expired(T0 + 600)
    assert store.consume_pending(rec.state_hash) is None


def test_purge_removes_only_expired_rows(store: Store) -> None:
    store.create_pending(new_pending("s1", owner="o1", expires_at=T0 + 10), T0)
    store.create_pending(new_pending("s2", owner="o2", expires_at=T0 + 20), T0)
    store.create_pending(new_pending("s3", owner="o3", expires_at=T0 + 30), T0)
    assert store.purge_expired_pending(T0 + 5) == 0
    assert store.purge_expired_pending(T0 + 20) == 2
    assert store.consume_pending(state_hash("s2")) is None
    assert store.consume_pending(state_hash("s3")) is not None


def test_pending_rows_are_capped_per_owner_oldest_evicted(store: Store) -> None:
    with Store(_url(store), max_pending_per_owner=3) as capped:
        for i in range(5):
            capped.create_pending(new_pending(f"s{i}", binding_hash=f"{i:064d}"), T0 + i)
        kept = [capped.consume_pending(state_hash(f"s{i}")) is not None for i in range(5)]
        assert kept == [False, False, True, True, True]


def test_pending_rows_are_capped_per_browser_binding(store: Store) -> None:
    with Store(_url(store), max_pending_per_owner=2) as capped:
        for i in range(4):
            capped.create_pending(new_pending(f"s{i}", owner=f"owner-{i}"), T0 + i)
        kept = [capped.consume_pending(state_hash(f"s{i}")) is not None for i in range(4)]
        assert kept == [False, False, True, True]


def test_the_newest_row_survives_the_cap_even_at_the_same_instant(store: Store) -> None:
    with Store(_url(store), max_pending_per_owner=2) as capped:
        for i in range(6):
            capped.create_pending(new_pending(f"s{i}"), T0)
            assert capped.consume_pending(state_hash(f"s{i}")) is not None
            capped.create_pending(new_pending(f"s{i}"), T0)


def test_other_owners_are_untouched_by_the_cap(store: Store) -> None:
    with Store(_url(store), max_pending_per_owner=1) as capped:
        capped.create_pending(new_pending("mine", owner="a", binding_hash="1" * 64), T0)
        capped.create_pending(new_pending("theirs", owner="b", binding_hash="2" * 64), T0 + 1)
        assert capped.consume_pending(state_hash("mine")) is not None
        assert capped.consume_pending(state_hash("theirs")) is not None


def test_max_pending_must_be_positive(store: Store) -> None:
    with pytest.raises(ValueError, match="max_pending"):
        Store(_url(store), max_pending_per_owner=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"state_hash": "ABC"}, "state_hash"),
        ({"state_hash": "A" * 64}, "state_hash"),
        ({"owner": ""}, "owner"),
        ({"binding_hash": ""}, "binding_hash"),
        ({"verifier_ct": ""}, "verifier_ct"),
        ({"redirect_uri": ""}, "redirect_uri"),
    ],
)
def test_invalid_pending_records_are_refused(change: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        new_pending(**change)


def test_repr_of_pending_shows_no_verifier_state_hash_or_binding(store: Store) -> None:
    rec = new_pending("state-x")
    store.create_pending(rec, T0)
    row = store.consume_pending(rec.state_hash)
    for value in (rec, row):
        text = repr(value)
        assert "verifier-ciphertext" not in text
        assert rec.state_hash not in text
        assert rec.binding_hash not in text


def test_new_pending_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        NewPending("h", "o")  # type: ignore[call-arg]


def test_expectations_and_reconsent_target_round_trip(store: Store) -> None:
    store.create_pending(
        new_pending(
            "state-x",
            expected_account="acme",
            expected_user="ann@example.com",
            connection_id="pdc_abc",
        ),
        T0,
    )
    row = store.consume_pending(state_hash("state-x"))
    assert row is not None
    assert (row.expected_account, row.expected_user, row.connection_id) == (
        "acme",
        "ann@example.com",
        "pdc_abc",
    )
    store.create_pending(new_pending("state-y"), T0)
    plain = store.consume_pending(state_hash("state-y"))
    assert plain is not None
    assert (plain.expected_account, plain.expected_user, plain.connection_id) == (None,) * 3
