"""``pdauth connections list|show|refresh|revoke``: see and operate stored PagerDuty connections.

Everything goes through the layers a host application uses: :class:`~pdauth.connections.Connector`
for reading and disconnecting, its :class:`~pdauth.tokens.TokenManager` for refreshing (single
flight in the process, the row lease across processes — a refresh started here never races the
service or the keeper). Output is built from an allowlist of non-secret columns
(:func:`connection_view`): never a token, a ciphertext or a lease owner; event data loses its
``*_ct`` members. ``revoke`` wipes the tokens at once; when no RFC 7009 revocation endpoint is
configured — PagerDuty's case (PAGERDUTY.md §4) — it prints how to revoke the grant inside
PagerDuty instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pdauth.commands._output import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    Progress,
    clean,
    epilog,
    format_time,
    iso_time,
    print_fields,
    print_json,
    print_table,
    report_error,
)
from pdauth.commands._runtime import (
    Runtime,
    command_logging,
    current_runtime,
    fail,
    run_async,
)
from pdauth.config import Settings
from pdauth.connections import Connector
from pdauth.errors import (
    ConfigurationError,
    ConnectionNotFoundError,
    CryptoError,
    InvalidClientError,
    LeaseUnavailableError,
    NeedsReauthError,
    OAuthError,
    PdauthError,
    StoreError,
    TransportError,
)
from pdauth.store import AsyncStore, ConnectionRow, EventRow
from pdauth.tokens import REFRESH_DUE_FRACTION, REFRESH_LIFETIME

__all__ = [
    "add_connections_command",
    "connection_view",
    "event_view",
    "pagerduty_revocation_help",
    "recent_events",
    "run_list",
    "run_refresh",
    "run_revoke",
    "run_show",
]

DAY = 86_400.0
STATUSES = ("active", "needs_reauth", "revoked")
MAX_DUE_LIMIT = 1000  # the store's page size
_EVENT_PAGE = 1000
_LIST_PAGE = 1000

Body = Callable[[Connector, Settings], Awaitable[int]]


# -- views: the allowlist of what may be shown -------------------------------------------------


def connection_view(row: ConnectionRow, api_base_urls: Mapping[str, str]) -> dict[str, Any]:
    """Every non-secret field of a connection, JSON-ready (times as RFC 3339 UTC)."""
    error = None
    if row.last_error_code is not None:
        error = {
            "code": row.last_error_code,
            "message": row.last_error_message,
            "at": iso_time(row.last_error_at),
        }
    return {
        "id": row.id,
        "owner": row.owner,
        "kind": row.kind,
        "status": row.status,
        "region": row.region,
        "account_id": row.account_id,
        "subdomain": row.subdomain,
        "pd_user_id": row.pd_user_id,
        "pd_user_name": row.pd_user_name,
        "pd_user_email": row.pd_user_email,
        "delegation_id": row.delegation_id,
        "scopes": sorted(s for s in row.scopes.split(" ") if s),
        "api_base_url": api_base_urls.get(row.region),
        "created_at": iso_time(row.created_at),
        "updated_at": iso_time(row.updated_at),
        "last_refreshed_at": iso_time(row.last_refreshed_at),
        "last_used_at": iso_time(row.last_used_at),
        "access_expires_at": iso_time(row.access_expires_at),
        "refresh_expires_at": iso_time(row.refresh_expires_at),
        "token_version": row.token_version,
        "key_id": row.key_id,
        "refresh_lease_until": iso_time(row.lease_until),
        "last_error": error,
    }


def _without_ciphertext(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: _without_ciphertext(v)
            for k, v in value.items()
            if not (isinstance(k, str) and k.endswith("_ct"))
        }
    if isinstance(value, list | tuple):
        return [_without_ciphertext(v) for v in value]
    return value


def event_view(event: EventRow) -> dict[str, Any]:
    """An audit/outbox event without its ciphertext members (``token_ct`` of a queued revoke)."""
    return {
        "id": event.id,
        "type": event.type,
        "created_at": iso_time(event.created_at),
        "delivered_at": iso_time(event.delivered_at),
        "attempts": event.attempts,
        "last_error": event.last_error,
        "data": _without_ciphertext(event.data),
    }


async def recent_events(store: AsyncStore, row: ConnectionRow, limit: int) -> list[EventRow]:
    """The last ``limit`` events of one connection, oldest first.

    The store filters events by owner, not by connection, so the owner's events are paged
    through and filtered here (an owner has few connections).
    """
    kept: deque[EventRow] = deque(maxlen=limit)
    after = 0
    while True:
        page = await store.list_events(after_id=after, limit=_EVENT_PAGE, owner=row.owner)
        kept.extend(e for e in page if e.connection_id == row.id)
        if len(page) < _EVENT_PAGE:
            return list(kept)
        after = page[-1].id


def pagerduty_revocation_help(view: Mapping[str, Any], client_id: str) -> list[str]:
    """How to revoke a grant inside PagerDuty, which has no revocation API (PAGERDUTY.md §4)."""
    lines = [
        "PagerDuty offers no API to revoke a single grant, so it may still be valid on "
        "PagerDuty's side. To revoke it there:"
    ]
    if view["kind"] == "user":
        who = view["pd_user_email"] or view["pd_user_name"] or view["pd_user_id"] or "the user"
        lines.append(
            f"  - {clean(who)} removes the app in PagerDuty under My Profile -> Authorized Apps;"
        )
        if view["pd_user_id"]:
            lines.append(
                "  - or an account admin deletes the user's OAuth delegations: "
                f"DELETE {clean(view['api_base_url'])}/oauth_delegations"
                f"?user_id={clean(view['pd_user_id'])} (REST API, scope "
                "oauth_delegations.write; PagerDuty documents it as signing the user out of "
                "its web and mobile apps as well);"
            )
    lines.append(
        f'  - or the app\'s owner uses "Revoke All Tokens" on the OAuth client screen of app '
        f"{clean(client_id)}: that revokes EVERY connection of the app (each must reconnect)."
    )
    return lines


# -- parser ------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("expected a positive integer")
    return value


def _due_limit(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_DUE_LIMIT:
        raise argparse.ArgumentTypeError(f"at most {MAX_DUE_LIMIT} per run")
    return value


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number of days") from None
    if not 0 < value <= 3650:
        raise argparse.ArgumentTypeError("expected a number of days between 0 and 3650")
    return value


def _parser(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    *notes: str,
) -> argparse.ArgumentParser:
    return actions.add_parser(
        name,
        help=help_text,
        description=help_text[:1].upper() + help_text[1:] + ".",
        epilog=epilog(*notes),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_connections_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pdauth connections list|show|refresh|revoke``."""
    group = sub.add_parser(
        "connections",
        help="list, inspect, refresh and revoke stored PagerDuty connections",
        description="Operate the PagerDuty connections stored in PDAUTH_DATABASE_URL "
        "(settings come from PDAUTH_* variables).",
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = group.add_subparsers(dest="connections_command", metavar="ACTION", required=True)

    listing = _parser(
        actions,
        "list",
        "list connections: status, account, user, scopes, refresh and expiry times",
        "Never shows a token or a ciphertext.",
    )
    listing.add_argument("--owner", help="only this owner's connections")
    listing.add_argument("--status", choices=STATUSES, help="only connections in this status")
    listing.add_argument(
        "--limit",
        type=_positive_int,
        default=100,
        metavar="N",
        help="at most N connections (100)",
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=run_list)

    show = _parser(
        actions,
        "show",
        "show every non-secret field of one connection and its last events",
    )
    show.add_argument("connection_id", metavar="ID")
    show.add_argument(
        "--events", type=_positive_int, default=10, metavar="N", help="last N events (10)"
    )
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=run_show)

    refresh = _parser(
        actions,
        "refresh",
        "refresh one connection's tokens now, or every connection that is due",
        "`refresh ID` forces a refresh through the token manager (one refresher at a time "
        "across every pdauth process). `refresh --due` refreshes the connections whose "
        "refresh token would otherwise expire unused (PagerDuty: 30 days idle for Scoped "
        "apps, 210 for Classic), soonest first; run it daily if nothing else does. Exit code "
        "1 if any refresh failed or a connection needs re-authorization.",
    )
    refresh.add_argument("connection_id", metavar="ID", nargs="?")
    refresh.add_argument("--due", action="store_true", help="refresh every connection that is due")
    refresh.add_argument(
        "--horizon",
        type=_days,
        metavar="DAYS",
        help="with --due: refresh tokens expiring within DAYS (default: a quarter of the idle "
        "lifetime, 7.5 days Scoped / 52.5 days Classic)",
    )
    refresh.add_argument(
        "--limit",
        type=_due_limit,
        default=100,
        metavar="N",
        help=f"with --due: at most N connections (100, max {MAX_DUE_LIMIT})",
    )
    refresh.add_argument("--json", action="store_true", help="print JSON")
    refresh.set_defaults(handler=run_refresh)

    revoke = _parser(
        actions,
        "revoke",
        "disconnect a connection: its tokens are deleted at once",
        "With PDAUTH_REVOKE_URL set, the grant is also revoked at the authorization server "
        "(retried through the outbox if that fails). PagerDuty has no revocation API: then "
        "the command prints how to revoke the grant inside PagerDuty. Asks for confirmation "
        "unless --yes is given (required when stdin is not a terminal).",
    )
    revoke.add_argument("connection_id", metavar="ID")
    revoke.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    revoke.add_argument("--json", action="store_true", help="print JSON")
    revoke.set_defaults(handler=run_revoke)


# -- running -----------------------------------------------------------------------------------


def _execute(command: str, runtime: Runtime | None, body: Body) -> int:
    """Settings, logging, a Connector on a current schema, then ``body``; errors → exit codes."""
    rt = current_runtime(runtime)
    try:
        settings = rt.settings()
    except ConfigurationError as exc:
        return fail(command, exc)
    with command_logging(settings, rt.environ()):

        async def main() -> int:
            async with rt.connector(settings) as connector:
                if not await connector.store.is_up_to_date():
                    raise ConfigurationError(
                        "the database schema is not current; run `pdauth db upgrade`"
                    )
                return await body(connector, settings)

        try:
            return run_async(main)
        except PdauthError as exc:
            return fail(command, exc)


async def _row(connector: Connector, connection_id: str) -> ConnectionRow:
    row = await connector.store.get_connection(connection_id)
    if row is None:
        raise ConnectionNotFoundError(f"no connection {clean(connection_id)}")
    return row


async def _list_rows(
    store: AsyncStore, owner: str | None, status: str | None, limit: int
) -> list[ConnectionRow]:
    found: list[ConnectionRow] = []
    after: str | None = None
    while len(found) < limit:
        page = min(_LIST_PAGE, limit - len(found))
        rows = await store.list_connections(owner=owner, status=status, limit=page, after_id=after)
        found.extend(rows)
        if len(rows) < page:
            break
        after = rows[-1].id
    return found


def _account(view: Mapping[str, Any]) -> str:
    return f"{view['subdomain'] or view['account_id']} ({view['region']})"


def _user(view: Mapping[str, Any]) -> str:
    if view["kind"] == "app":
        return "(app token)"
    return str(view["pd_user_email"] or view["pd_user_name"] or view["pd_user_id"] or "-")


def run_list(args: argparse.Namespace, runtime: Runtime | None = None) -> int:
    """``pdauth connections list``."""

    async def body(connector: Connector, settings: Settings) -> int:
        rows = await _list_rows(connector.store, args.owner, args.status, args.limit)
        views = [connection_view(row, settings.api_base_urls) for row in rows]
        if args.json:
            print_json({"connections": views, "count": len(views)})
            return EXIT_OK
        if not views:
            print("no connections", file=sys.stderr)
            return EXIT_OK
        print_table(
            (
                "ID",
                "OWNER",
                "STATUS",
                "ACCOUNT",
                "PAGERDUTY USER",
                "SCOPES",
                "LAST REFRESH",
                "ACCESS EXPIRES",
                "LAST ERROR",
            ),
            [
                (
                    v["id"],
                    v["owner"],
                    v["status"],
                    _account(v),
                    _user(v),
                    " ".join(v["scopes"]),
                    _cell_time(v["last_refreshed_at"]),
                    _cell_time(v["access_expires_at"]),
                    v["last_error"]["code"] if v["last_error"] else "-",
                )
                for v in views
            ],
        )
        if len(views) == args.limit:
            print(f"(first {args.limit}; use --limit for more)", file=sys.stderr)
        return EXIT_OK

    return _execute("connections list", runtime, body)


def _cell_time(iso: str | None) -> str:
    # Views hold RFC 3339 strings; tables want them shorter.
    if iso is None:
        return "-"
    return iso[:16].replace("T", " ") + "Z"


def run_show(args: argparse.Namespace, runtime: Runtime | None = None) -> int:
    """``pdauth connections show ID``."""

    async def body(connector: Connector, settings: Settings) -> int:
        row = await _row(connector, args.connection_id)
        view = connection_view(row, settings.api_base_urls)
        events = [event_view(e) for e in await recent_events(connector.store, row, args.events)]
        if args.json:
            print_json({"connection": view, "events": events})
            return EXIT_OK
        fields = {k: v for k, v in view.items() if k != "last_error"}
        fields["scopes"] = " ".join(view["scopes"])
        error = view["last_error"]
        fields["last_error"] = (
            f"{error['code']} at {error['at']}: {error['message'] or ''}" if error else None
        )
        print_fields(fields)
        print()
        print(f"last {len(events)} event(s):" if events else "no events")
        if events:
            print_table(
                ("EVENT", "AT", "TYPE", "DATA"),
                [
                    (
                        e["id"],
                        _cell_time(e["created_at"]),
                        e["type"],
                        json.dumps(e["data"], sort_keys=True, separators=(",", ":")),
                    )
                    for e in events
                ],
            )
        return EXIT_OK

    return _execute("connections show", runtime, body)


def run_refresh(args: argparse.Namespace, runtime: Runtime | None = None) -> int:
    """``pdauth connections refresh ID`` or ``pdauth connections refresh --due``."""
    command = "connections refresh"
    if args.due == (args.connection_id is not None):
        report_error(command, "give either a connection ID or --due")
        return EXIT_USAGE
    if not args.due and args.horizon is not None:
        report_error(command, "--horizon goes with --due")
        return EXIT_USAGE
    rt = current_runtime(runtime)
    if args.due:
        return _execute(command, rt, lambda c, s: _refresh_due(args, rt, c, s))
    return _execute(command, rt, lambda c, s: _refresh_one(args, c, s))


async def _refresh_one(args: argparse.Namespace, connector: Connector, settings: Settings) -> int:
    before = await _row(connector, args.connection_id)
    problem: str | None = None
    try:
        await connector.tokens.force_refresh(before.id)
    except NeedsReauthError as exc:
        problem = exc.reason
    after = await _row(connector, before.id)
    view = connection_view(after, settings.api_base_urls)
    refreshed = problem is None and after.token_version != before.token_version
    if problem is None and not refreshed:
        # The token endpoint failed transiently; the manager kept the still-valid old token.
        code = after.last_error_code or "unknown"
        problem = f"the refresh failed ({code}); the current access token stays in use"
    if args.json:
        print_json({"connection": view, "refreshed": refreshed, "problem": problem})
    elif refreshed:
        print(
            f"refreshed {clean(after.id)}: access token valid until "
            f"{format_time(after.access_expires_at)}, refresh token until about "
            f"{format_time(after.refresh_expires_at)}"
        )
    if problem is not None:
        report_error("connections refresh", f"connection {after.id}: {problem}")
        return EXIT_FAILURE
    return EXIT_OK


async def _refresh_due(
    args: argparse.Namespace, rt: Runtime, connector: Connector, settings: Settings
) -> int:
    lifetime = REFRESH_LIFETIME[settings.app_kind]
    horizon = args.horizon * DAY if args.horizon is not None else REFRESH_DUE_FRACTION * lifetime
    now = rt.now()
    due = await connector.store.due_for_refresh(
        now=now, refresh_expires_before=now + horizon, limit=args.limit
    )
    counts = dict.fromkeys(("refreshed", "needs_reauth", "failed", "skipped"), 0)
    results: list[dict[str, Any]] = []
    with Progress("refreshing", len(due)) as progress:
        for done, row in enumerate(due, start=1):
            outcome, detail = await _refresh_if_still_due(connector, row)
            counts[outcome] += 1
            results.append({"id": row.id, "owner": row.owner, "outcome": outcome, "error": detail})
            progress.update(done, f"{counts['refreshed']} refreshed")
    summary = {"examined": len(due), **counts, "horizon_days": round(horizon / DAY, 3)}
    if args.json:
        print_json({**summary, "results": results})
    else:
        print(
            f"examined {len(due)}: refreshed {counts['refreshed']}, needs re-authorization "
            f"{counts['needs_reauth']}, failed {counts['failed']}, already refreshed "
            f"elsewhere {counts['skipped']}"
        )
        for result in results:
            if result["outcome"] in ("needs_reauth", "failed"):
                report_error(
                    "connections refresh",
                    f"{result['id']} (owner {result['owner']}): {result['outcome']}"
                    + (f" ({result['error']})" if result["error"] else ""),
                )
    return EXIT_FAILURE if counts["needs_reauth"] or counts["failed"] else EXIT_OK


async def _refresh_if_still_due(connector: Connector, row: ConnectionRow) -> tuple[str, str | None]:
    """Refresh one due row, as ``TokenManager.refresh_due`` does, reporting the outcome.

    A row whose tokens moved since it was listed was refreshed by another process (the
    keeper, the service): it is skipped rather than refreshed twice.
    """
    current = await connector.store.get_connection(row.id)
    if current is None or current.status != "active" or current.token_version != row.token_version:
        return "skipped", None
    try:
        await connector.tokens.force_refresh(row.id)
    except NeedsReauthError:
        return "needs_reauth", "invalid_grant"
    except InvalidClientError:
        raise  # configuration: every other connection would fail the same way
    except (TransportError, OAuthError, LeaseUnavailableError, CryptoError, StoreError) as exc:
        return "failed", type(exc).__name__
    after = await connector.store.get_connection(row.id)
    if after is None or after.token_version == row.token_version:
        return "failed", (after.last_error_code if after is not None else None)
    return "refreshed", None


def _confirm(prompt: str) -> bool | None:
    """Ask on the terminal; None when there is no terminal to ask on."""
    if not sys.stdin.isatty():
        return None
    print(prompt + " [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def run_revoke(args: argparse.Namespace, runtime: Runtime | None = None) -> int:
    """``pdauth connections revoke ID``."""
    command = "connections revoke"

    async def body(connector: Connector, settings: Settings) -> int:
        row = await _row(connector, args.connection_id)
        was_revoked = row.status == "revoked"
        if not was_revoked and not args.yes:
            view = connection_view(row, settings.api_base_urls)
            answer = _confirm(
                f"Disconnect {clean(row.id)} (owner {clean(row.owner)}, {clean(_account(view))},"
                f" {clean(_user(view))})? Its tokens are deleted at once."
            )
            if answer is None:
                report_error(command, "stdin is not a terminal: pass --yes to disconnect")
                return EXIT_USAGE
            if not answer:
                report_error(command, "not disconnected")
                return EXIT_FAILURE
        await connector.disconnect(row.id)
        after = await _row(connector, row.id)
        view = connection_view(after, settings.api_base_urls)
        remote: str
        help_lines: list[str] = []
        if settings.revocation_endpoint is None:
            remote = "unsupported"
            help_lines = pagerduty_revocation_help(view, settings.client_id)
        elif was_revoked:
            remote = "unchanged"
        else:
            remote = await _remote_outcome(connector, after)
        if args.json:
            print_json(
                {
                    "connection": view,
                    "already_revoked": was_revoked,
                    "remote_revocation": remote,
                    "how_to_revoke_in_pagerduty": help_lines,
                }
            )
        else:
            if was_revoked:
                print(f"{clean(after.id)} was already disconnected; no tokens are stored")
            else:
                print(f"disconnected {clean(after.id)}: its tokens are deleted")
            if remote == "revoked":
                print("the grant was revoked at the authorization server")
            elif remote == "queued":
                print(
                    "revoking the grant at the authorization server failed; it is queued and "
                    "retried by the keeper (pdauth serve)"
                )
            for line in help_lines:
                print(line)
        return EXIT_OK

    return _execute(command, runtime, body)


async def _remote_outcome(connector: Connector, row: ConnectionRow) -> str:
    """What the disconnect did remotely, from the event it just wrote for this connection."""
    for event in reversed(await recent_events(connector.store, row, 5)):
        if event.type == "revocation.pending":
            return "queued"
        if event.type == "connection.revoked":
            return "revoked" if event.data.get("revoked_at_pagerduty") else "not_revoked"
    return "not_revoked"
