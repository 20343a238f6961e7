"""Pagination helpers: style by path, entity unwrapping, the 10 000 offset cap."""

from __future__ import annotations

import pytest

from pdauth.client.pagination import (
    MAX_OFFSET,
    OffsetPage,
    canonical_path,
    entity_key,
    first_offset_page,
    next_offset_page,
    unwrap_page,
    uses_cursor,
)
from pdauth.errors import PaginationLimitError


@pytest.mark.parametrize(
    "path",
    [
        "/audit/records",
        "audit/records",
        "/audit/records?since=2026-01-01",
        "/users/PABC123/audit/records",
        "/users/PABC123/oauth_delegations",
        "/workflows/integrations/PX/connections",
        "/incidents/reviews",
    ],
)
def test_cursor_endpoints(path: str) -> None:
    assert uses_cursor(path)


@pytest.mark.parametrize(
    "path", ["/users", "/incidents", "/users/PABC123", "/audit", "/users/P1/contact_methods", "/"]
)
def test_classic_endpoints(path: str) -> None:
    assert not uses_cursor(path)


def test_a_literal_pattern_wins_over_a_parameter() -> None:
    # /incidents/reviews is literal; /incidents/{id}/... would also have matched shorter paths.
    assert canonical_path("/incidents/reviews") == "/incidents/reviews"
    assert canonical_path("/users/PX/sessions") == "/users/{id}/sessions"


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/users", "users"),
        ("/incidents?statuses[]=triggered", "incidents"),
        ("/users/PX/contact_methods", "contact_methods"),
        ("/audit/records", "records"),
        ("/users/PX/audit/records", "records"),
        ("/incidents/reviews", "incident_reviews"),
        ("/users/PX/sessions", "user_sessions"),
        ("/incidents/types", "incident_types"),
    ],
)
def test_entity_key(path: str, key: str) -> None:
    assert entity_key(path) == key


def test_unwrap_takes_the_named_list() -> None:
    body = {"users": [{"id": "P1"}], "limit": 1, "offset": 0, "more": False, "total": None}
    assert unwrap_page(body, "users") == [{"id": "P1"}]


def test_unwrap_falls_back_to_the_only_list() -> None:
    body = {"things": [1, 2], "limit": 2, "more": False}
    assert unwrap_page(body, "users") == [1, 2]


@pytest.mark.parametrize("body", [[], {"a": [1], "b": [2]}, {"users": "x", "more": False}, "x"])
def test_unwrap_refuses_pages_without_one_list(body: object) -> None:
    with pytest.raises(ValueError, match="page"):
        unwrap_page(body, "users")


def test_first_page_clamps_the_size() -> None:
    assert first_offset_page(0, 500) == OffsetPage(0, 100)
    assert first_offset_page(0, 0) == OffsetPage(0, 1)
    assert first_offset_page(9_950, 100) == OffsetPage(9_950, 50)


def test_next_page_advances_by_what_came_back() -> None:
    assert next_offset_page(OffsetPage(0, 100), 80, path="/users") == OffsetPage(80, 100)


def test_the_last_page_shrinks_to_fit_the_cap() -> None:
    assert next_offset_page(OffsetPage(9_800, 100), 100, path="/users") == OffsetPage(9_900, 100)
    assert next_offset_page(OffsetPage(9_850, 100), 100, path="/users") == OffsetPage(9_950, 50)


def test_passing_the_cap_raises_instead_of_truncating() -> None:
    with pytest.raises(PaginationLimitError) as caught:
        next_offset_page(OffsetPage(9_900, 100), 100, path="/incidents")
    assert caught.value.status == 400
    assert caught.value.path == "/incidents"
    assert "since/until" in str(caught.value)
    assert str(MAX_OFFSET) in str(caught.value)


def test_an_offset_at_the_cap_is_refused_at_once() -> None:
    with pytest.raises(PaginationLimitError):
        first_offset_page(MAX_OFFSET, 100)


def test_bad_offsets() -> None:
    with pytest.raises(ValueError, match="offset"):
        first_offset_page(-1, 100)
    with pytest.raises(ValueError, match="empty"):
        next_offset_page(OffsetPage(0, 100), 0, path="/users")
