"""The vocabulary of the emulated REST API: PagerDuty's error envelope, the calling principal and
its scope rule, query and body parsing, classic pagination, and the enumerations the operations
accept. Pure helpers: no state, no routing (those are in :mod:`pdauth.emulator.rest`). Document
names (``09-Pagination.md``) are pages of PagerDuty's public PagerDuty/developer-docs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse

from pdauth.emulator.data import Account, Incident, User

__all__ = ["ApiError", "Principal", "json_response"]

CLASSIC_DEFAULT_LIMIT = 25
CLASSIC_MAX_LIMIT = 100  # 09-Pagination.md: "cannot exceed 100"
CLASSIC_WINDOW = 10_000  # 09-Pagination.md: offset + limit may not exceed 10000
CURSOR_DEFAULT_LIMIT = 25  # Assumption: PagerDuty documents no default/maximum for /audit/records
CURSOR_MAX_LIMIT = 100
INCIDENT_DEFAULT_RANGE = timedelta(days=30)  # schema: "default is 1 month"
INCIDENT_MAX_RANGE = timedelta(days=183)  # schema: "Maximum range is 6 months"
AUDIT_DEFAULT_RANGE = timedelta(hours=24)  # schema: since defaults to now() - 24 hours
AUDIT_MAX_RANGE = timedelta(days=31)  # schema: until may not be more than 31 days after since
MAX_BODY = 64 * 1024
_INT = re.compile(r"[0-9]{1,9}")
READ_ONLY_ROLES = frozenset({"observer", "read_only_user", "read_only_limited_user"})
ADMIN_ROLES = frozenset({"admin", "owner"})

# -- errors ---------------------------------------------------------------------------------


class ApiError(Exception):
    """A PagerDuty error response; raised by handlers, rendered by the dispatcher."""

    def __init__(
        self,
        status: int,
        message: str,
        code: int | None = None,
        errors: Iterable[str] = (),
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.errors = list(errors)
        self.extra = dict(extra or {})

    def body(self) -> dict[str, object]:
        error: dict[str, object] = {"message": self.message}
        if self.code is not None:
            error["code"] = self.code
        if self.errors:
            error["errors"] = self.errors
        error.update(self.extra)
        return {"error": error}


INTERNAL_ERROR = ApiError(
    500, "An internal error has occurred. PagerDuty team has been notified.", 2000
)


def invalid(*errors: str) -> ApiError:
    return ApiError(400, "Invalid Input Provided", 2001, errors)


def not_found() -> ApiError:
    return ApiError(404, "Not Found", 2100)


def auth_failed() -> ApiError:
    return ApiError(401, "Authentication failed", 2006)


def access_denied(reason: str) -> ApiError:
    return ApiError(403, "Access Denied", 2010, [reason])


def missing_scope(scope: str) -> ApiError:
    # Observed shape (terraform-provider-pagerduty #1027/#1078): no numeric code.
    return ApiError(403, "Token missing required scopes", extra={"required_scopes": scope})


# -- who is calling -------------------------------------------------------------------------


class _Owned(Protocol):
    @property
    def account_id(self) -> str: ...


Owned = TypeVar("Owned", bound=_Owned)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    kind: Literal["api_key", "oauth"]
    account: Account
    user: User | None
    scopes: frozenset[str]
    app_kind: Literal["classic", "scoped"] | None  # None for API keys
    read_only: bool = False
    client_id: str | None = None
    # The credential as presented ("bearer:<token>" / "token:<key>"), for the rate-limit bucket.
    credential: str = field(default="", repr=False)

    def require(self, scope: str | None, *, write: bool) -> None:
        """Enforce the operation's scope. ``scope`` is the schema's "Scoped OAuth requires"."""
        if self.kind == "api_key":
            if write and self.read_only:
                raise access_denied("This API key is read-only.")
            return
        if self.app_kind == "classic":
            # Assumption: a Classic `write` token may also read (PagerDuty's docs don't say).
            needed = "write" if write else "read"
            if needed not in self.scopes and not (needed == "read" and "write" in self.scopes):
                raise missing_scope(needed)
        elif scope is not None and scope not in self.scopes:
            raise missing_scope(scope)
        if write and self.user is not None and self.user.role in READ_ONLY_ROLES:
            raise access_denied("Your role does not allow this action.")

    def own(self, found: Owned | None) -> Owned:
        """``found`` if it belongs to the caller's account; else a 404 (another account's
        objects do not exist for this caller, as on PagerDuty)."""
        if found is None or found.account_id != self.account.id:
            raise not_found()
        return found


def is_classic(scopes: frozenset[str]) -> bool:
    # Classic apps carry only `read`/`write` (+ `openid`); a scoped token never has them.
    return bool(scopes & {"read", "write"})


# -- time and parameters --------------------------------------------------------------------


def iso(ts: float, *, millis: bool = False) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    if millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def time_param(params: QueryParams, name: str) -> float | None:
    """The time in query parameter ``name``, or None when it is absent."""
    raw = params.get(name)
    return None if raw is None else parse_time(name, raw)


def date_range(since: float, until: float, longest: timedelta, rule: str) -> tuple[float, float]:
    """``(since, until)`` when ``since`` is not after ``until`` and the range is at most
    ``longest``; else PagerDuty's 2005 "Invalid Query Date Range", explained by ``rule``."""
    if since > until or until - since > seconds(longest):
        raise ApiError(400, "Invalid Query Date Range", 2005, [rule])
    return since, until


def parse_time(name: str, raw: str) -> float:
    text = raw.strip()
    if not text or len(text) > 64:
        raise ApiError(400, "Invalid Input Provided", 2004, [f"{name} is not a valid date-time."])
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # Assumption: naive times are UTC
        return moment.timestamp()
    except (ValueError, OverflowError, OSError):
        raise ApiError(
            400, "Invalid Input Provided", 2004, [f"{name} is not a valid date-time."]
        ) from None


def parse_int(params: QueryParams, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not _INT.fullmatch(raw):
        raise invalid(f"{name.capitalize()} must be a non-negative integer.")
    return int(raw)


def parse_bool(params: QueryParams, name: str) -> bool:
    # PagerDuty documents lowercase `true`; anything else but `false` is refused (assumption).
    raw = params.get(name)
    if raw is None or raw == "false":
        return False
    if raw == "true":
        return True
    raise invalid(f"{name.capitalize()} must be true or false.")


def enum_list(params: QueryParams, name: str, allowed: Iterable[str]) -> list[str]:
    values = params.getlist(name)
    allowed_set = set(allowed)
    bad = [v for v in values if v not in allowed_set]
    if bad:
        raise invalid(f"{name} must be one of: {', '.join(sorted(allowed_set))}.")
    return list(dict.fromkeys(values))


def classic_page(params: QueryParams, items: list[Any]) -> tuple[list[Any], dict[str, object]]:
    limit = parse_int(params, "limit", CLASSIC_DEFAULT_LIMIT)
    offset = parse_int(params, "offset", 0)
    total = parse_bool(params, "total")
    if limit < 1:
        raise invalid("Limit must be at least 1.")  # Assumption: PagerDuty's answer is unknown
    # Assumption: like PagerDuty's "limit … cannot exceed 100", a bigger limit is clamped and
    # the clamped value echoed back.
    limit = min(limit, CLASSIC_MAX_LIMIT)
    if offset + limit > CLASSIC_WINDOW:
        raise invalid(f"Offset plus limit must not exceed {CLASSIC_WINDOW}.")
    page = items[offset : offset + limit]
    meta: dict[str, object] = {
        "limit": limit,
        "offset": offset,
        "more": offset + len(page) < len(items),
        "total": len(items) if total else None,
    }
    return page, meta


# -- request vocabularies and bodies --------------------------------------------------------

USER_INCLUDES = ("contact_methods", "notification_rules", "teams", "subdomains")
USER_INCLUDES_ME = (*USER_INCLUDES, "calendar_urls")
SERVICE_INCLUDES = (
    "escalation_policies",
    "teams",
    "integrations",
    "auto_pause_notifications_parameters",
)
INCIDENT_INCLUDES = (
    "acknowledgers",
    "agents",
    "assignees",
    "conference_bridge",
    "escalation_policies",
    "first_trigger_log_entries",
    "priorities",
    "services",
    "teams",
    "users",
)
AUDIT_RESOURCE_TYPES = {
    "users": "user",
    "teams": "team",
    "schedules": "schedule",
    "escalation_policies": "escalation_policy",
    "services": "service",
    "ip_allow_lists": "ip_allow_list",
}
AUDIT_PLURALS = {singular: plural for plural, singular in AUDIT_RESOURCE_TYPES.items()}
AUDIT_ACTOR_TYPES = ("user_reference", "api_key_reference", "app_reference")
AUDIT_METHODS = ("browser", "oauth", "api_token", "identity_provider", "other")
INCIDENT_SORTS: dict[str, Callable[[Incident], Any]] = {
    "incident_number": lambda i: i.incident_number,
    "created_at": lambda i: i.created_at,
    # Unresolved incidents sort after resolved ones when ascending (assumption).
    "resolved_at": lambda i: (i.resolved_at is None, i.resolved_at or 0.0),
    "urgency": lambda i: i.urgency,
}


def incident_sort(raw: list[str]) -> list[tuple[str, bool]]:
    """``sort_by=created_at:desc,urgency`` (comma-separated, at most two) → [(field, desc)]."""
    parts = [p.strip() for value in raw for p in value.split(",") if p.strip()]
    keys: list[tuple[str, bool]] = []
    for part in parts:
        field_name, _, direction = part.partition(":")
        if field_name not in INCIDENT_SORTS or direction not in ("", "asc", "desc"):
            raise invalid(
                "sort_by must be incident_number, created_at, resolved_at or urgency, "
                "optionally with :asc or :desc."
            )
        keys.append((field_name, direction == "desc"))
    if len(keys) > 2 or len({k for k, _ in keys}) != len(keys):
        raise invalid("sort_by takes at most two distinct fields.")
    return keys


def body_details(raw: object) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("type") != "incident_body":
        raise invalid("incident.body must be an object of type incident_body.")
    details = raw.get("details")
    if details is None:
        return None
    if not isinstance(details, str) or len(details) > 65_536:
        raise invalid("incident.body.details must be a string.")
    return details


async def read_json(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if "json" not in content_type.lower():
        raise invalid("Content-Type must be application/json.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, "Request Entity Too Large", 2001, ["The body is too large."])
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        raise invalid("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    return body


def json_response(status: int, body: Mapping[str, object]) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def seconds(delta: timedelta) -> float:
    return delta.total_seconds()
