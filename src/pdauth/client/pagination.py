"""PagerDuty pagination, as pure helpers: which style an endpoint uses, which page to ask for
next, and how to take the entities out of a page or out of a single resource's answer.

Classic ("offset") pagination sends ``limit`` (at most 100) and ``offset`` and reads ``more``;
PagerDuty refuses ``offset + limit > 10000`` with a 400, so iteration past that point raises
:class:`~pdauth.errors.PaginationLimitError` instead of stopping quietly with a partial list
(PagerDuty's own client warns and stops). The fix is a narrower query, for instance
``since``/``until`` windows of a few days on ``/incidents`` or ``/log_entries``. Cursor
pagination sends ``limit`` and ``cursor`` and reads ``next_cursor``; which endpoints use it is
PagerDuty's list (python-pagerduty 7.x ``CURSOR_BASED_PAGINATION_PATHS``). Entities come
wrapped in a key named after the collection (``{"users": [...]}``), with a few exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pdauth.errors import PaginationLimitError

__all__ = [
    "CURSOR_PATHS",
    "MAX_OFFSET",
    "MAX_PAGE_SIZE",
    "OffsetPage",
    "canonical_path",
    "entity_key",
    "first_offset_page",
    "next_offset_page",
    "singular_name",
    "unwrap_entity",
    "unwrap_page",
    "uses_cursor",
]

MAX_OFFSET = 10_000
MAX_PAGE_SIZE = 100

#: Endpoints with cursor pagination (python-pagerduty 7.x, generated from PagerDuty's schema).
CURSOR_PATHS: tuple[str, ...] = (
    "/audit/records",
    "/automation_actions/actions",
    "/automation_actions/runners",
    "/escalation_policies/{id}/audit/records",
    "/incident_workflows/actions",
    "/incident_workflows/triggers",
    "/incidents/reviews",
    "/incidents/reviews/action_items",
    "/incidents/{id}/review/action_items",
    "/ip_allow_lists/{id}/audit/records",
    "/schedules/{id}/audit/records",
    "/services/{id}/audit/records",
    "/teams/{id}/audit/records",
    "/users/{id}/audit/records",
    "/users/{id}/oauth_delegations",
    "/v3/schedules/{id}/audit/records",
    "/workflows/integrations",
    "/workflows/integrations/connections",
    "/workflows/integrations/{integration_id}/connections",
    "/recommendations/event_orchestrations/rules",
)

#: List endpoints whose wrapper is not their last path segment (python-pagerduty's config).
_WRAPPER_EXCEPTIONS: dict[str, str] = {
    "/incidents/reviews": "incident_reviews",
    "/recommendations/event_orchestrations/rules": "recommended_rules",
    "/paused_incident_reports/alerts": "paused_incident_reporting_counts",
    "/paused_incident_reports/counts": "paused_incident_reporting_counts",
    "/business_services/impacts": "services",
    "/business_services/{id}/supporting_services/impacts": "services",
    "/incidents/{id}/related_change_events": "change_events",
    "/incidents/{id}/business_services/impacts": "services",
    "/incidents/types": "incident_types",
    "/status_dashboards/{id}/service_impacts": "services",
    "/teams/{id}/notification_subscriptions": "subscriptions",
    "/users/{id}/notification_subscriptions": "subscriptions",
    "/users/{id}/sessions": "user_sessions",
}

_PAGINATION_KEYS = frozenset({"limit", "offset", "more", "total", "next_cursor"})


def _strip(path: str) -> list[str]:
    return [part for part in path.split("?", 1)[0].split("/") if part]


def _matches(parts: list[str], pattern: str) -> bool:
    nodes = _strip(pattern)
    return len(nodes) == len(parts) and all(
        node == part or (node.startswith("{") and node.endswith("}"))
        for node, part in zip(nodes, parts, strict=True)
    )


def canonical_path(path: str, patterns: tuple[str, ...] | None = None) -> str | None:
    """The documented path pattern ``path`` matches (``/users/PABC123/audit/records`` →
    ``/users/{id}/audit/records``), preferring a literal match; None if none matches."""
    parts = _strip(path)
    candidates = patterns if patterns is not None else CURSOR_PATHS + tuple(_WRAPPER_EXCEPTIONS)
    found = [p for p in candidates if _matches(parts, p)]
    if not found:
        return None
    literal = "/" + "/".join(parts)
    return literal if literal in found else found[0]


def uses_cursor(path: str) -> bool:
    """Whether ``path`` (relative to the API base, query ignored) has cursor pagination."""
    return canonical_path(path, CURSOR_PATHS) is not None


def entity_key(path: str) -> str:
    """The key a list endpoint wraps its entities in: ``/users`` → ``users``."""
    pattern = canonical_path(path, tuple(_WRAPPER_EXCEPTIONS))
    if pattern is not None:
        return _WRAPPER_EXCEPTIONS[pattern]
    parts = _strip(path)
    return parts[-1] if parts else ""


def unwrap_page(body: Any, key: str) -> list[Any]:
    """The entity list of one page: ``body[key]``, or the page's only list besides the
    pagination fields. Raises ``ValueError`` if the page has no such list."""
    if not isinstance(body, Mapping):
        raise ValueError("a page must be a JSON object")
    value = body.get(key)
    if isinstance(value, list):
        return value
    lists = [v for k, v in body.items() if k not in _PAGINATION_KEYS and isinstance(v, list)]
    if len(lists) == 1:
        return lists[0]
    raise ValueError(f"the page has no {key!r} list")


def singular_name(name: str) -> str:
    """A collection's entity name: ``escalation_policies`` → ``escalation_policy``."""
    if name.endswith("ies"):
        return name[:-3] + "y"
    return name[:-1] if name.endswith("s") else name


def unwrap_entity(body: Any, path: str) -> Any:
    """The entity of an answer, as python-pagerduty's ``rget`` returns it.

    ``/users/PABC123`` (or ``/users/me``) → ``body["user"]``; a list endpoint such as
    ``/users`` → ``body["users"]`` (the first page); the documented exceptions by their own
    key. An answer with one content key besides the pagination fields gives that key's value;
    an answer that is not wrapped (several content keys, not an object, empty) is returned as
    it came, like python-pagerduty does for the endpoints whose wrapping it disables.
    """
    if not isinstance(body, Mapping):
        return body
    parts = _strip(path)
    pattern = canonical_path(path, tuple(_WRAPPER_EXCEPTIONS))
    candidates = [_WRAPPER_EXCEPTIONS[pattern]] if pattern is not None else []
    if parts:
        candidates.append(parts[-1])
        if len(parts) > 1:
            candidates.append(singular_name(parts[-2]))
        candidates.append(singular_name(parts[-1]))
    for key in candidates:
        if key in body:
            return body[key]
    content = [k for k in body if k not in _PAGINATION_KEYS]
    return body[content[0]] if len(content) == 1 else body


@dataclass(frozen=True)
class OffsetPage:
    """The ``offset`` and ``limit`` to request next."""

    offset: int
    limit: int


def first_offset_page(offset: int, page_size: int) -> OffsetPage:
    """The first page: ``page_size`` clamped to 1..100 and to what the 10 000 cap allows."""
    if offset < 0:
        raise ValueError("offset must be >= 0")
    size = max(1, min(page_size, MAX_PAGE_SIZE))
    return _bounded(offset, size, path=None)


def next_offset_page(current: OffsetPage, received: int, *, path: str) -> OffsetPage:
    """The page after one that returned ``received`` entities with ``more: true``.

    The offset advances by what actually came back (a server may return fewer than asked);
    asking past ``offset + limit = 10000`` raises :class:`PaginationLimitError`.
    """
    if received <= 0:
        raise ValueError("a page with more: true must not be empty")
    return _bounded(current.offset + received, current.limit, path=path)


def _bounded(offset: int, size: int, *, path: str | None) -> OffsetPage:
    room = MAX_OFFSET - offset
    if room <= 0:
        raise PaginationLimitError(
            400,
            f"classic pagination stops at offset+limit={MAX_OFFSET}; {offset} results were "
            "read and PagerDuty has more. Narrow the query (for /incidents or /log_entries: "
            "since/until windows) and iterate each part.",
            method="GET",
            path=path,
        )
    return OffsetPage(offset=offset, limit=min(size, room))
