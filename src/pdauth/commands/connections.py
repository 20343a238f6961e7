"""``pdauth connections list|show|refresh|revoke``: see and operate stored PagerDuty connections.

Everything goes through the layers a host application uses: :class:`~pdauth.connections.Connector`
for reading and disconnecting, its :class:`~pdauth.tokens.TokenManager` for refreshing
(:mod:`pdauth.commands.connections_refresh`). A connection is printed in the JSON API's shape
(:mod:`pdauth.commands._views`): never a token, a ciphertext or a lease owner; event data loses
its ``*_ct`` members. ``revoke`` wipes the tokens at once; when no RFC 7009 revocation endpoint
is configured — PagerDuty's case: its OAuth documentation names none — it prints how to revoke
the grant inside PagerDuty instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from pdauth.commands._common import Subcommands, add_command, positive_int
from pdauth.commands._output import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    clean,
    print_fields,
    print_json,
    print_table,
    report_error,
)
from pdauth.commands._runtime import Runtime, require_row, with_connector
from pdauth.commands._views import (
    account_label,
    cell_time,
    connection_json,
    event_view,
    operator_details,
    pagerduty_revocation_help,
    recent_events,
    subscription_label,
    user_label,
)
from pdauth.commands.connections_refresh import add_refresh_action, run_refresh
from pdauth.config import Settings
from pdauth.connections import Connector
from pdauth.store import AsyncStore, ConnectionRow
from pdauth.subscriptions import events_of

__all__ = [
    "add_connections_command",
    "event_view",
    "run_list",
    "run_refresh",
    "run_revoke",
    "run_show",
]

STATUSES = ("active", "needs_reauth", "revoked")
_LIST_PAGE = 1000


# -- parser ------------------------------------------------------------------------------------


def add_connections_command(sub: Subcommands) -> None:
    """Register ``pdauth connections list|show|refresh|revoke``."""
    group = add_command(
        sub,
        "connections",
        "list, inspect, refresh and revoke stored PagerDuty connections",
        description="Operate the PagerDuty connections stored in PDAUTH_DATABASE_URL "
        "(settings come from PDAUTH_* variables).",
    )
    actions = group.add_subparsers(dest="connections_command", metavar="ACTION", required=True)

    listing = add_command(
        actions,
        "list",
        "list connections: status, account, user, scopes, refresh and expiry times",
        "Never shows a token or a ciphertext.",
    )
    listing.add_argument("--owner", help="only this owner's connections")
    listing.add_argument("--status", choices=STATUSES, help="only connections in this status")
    listing.add_argument(
        "--limit",
        type=positive_int,
        default=100,
        metavar="N",
        help="at most N connections (100)",
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=run_list)

    show = add_command(
        actions,
        "show",
        "show every non-secret field of one connection and its last events",
    )
    show.add_argument("connection_id", metavar="ID")
    show.add_argument(
        "--events", type=positive_int, default=10, metavar="N", help="last N events (10)"
    )
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=run_show)

    add_refresh_action(actions)

    revoke = add_command(
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


def run_list(args: argparse.Namespace, runtime: Runtime | None = None) -> int:
    """``pdauth connections list``."""

    async def body(connector: Connector, settings: Settings) -> int:
        rows = await _list_rows(connector.store, args.owner, args.status, args.limit)
        views = [connection_json(row, settings.api_base_urls, settings.scopes) for row in rows]
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
                    v["status"] + (" (needs scopes)" if v.get("missing_scopes") else ""),
                    account_label(v),
                    user_label(v),
                    " ".join(v["scopes"]),
                    cell_time(v["last_refreshed_at"]),
                    cell_time(v["access_expires_at"]),
                    v["last_error"]["code"] if v["last_error"] else "-",
                )
                for v in views
            ],
        )
        if len(views) == args.limit:
            print(f"(first {args.limit}; use --limit for more)", file=sys.stderr)
        return EXIT_OK

    return with_connector("connections list", runtime, body)


def _show_fields(view: Mapping[str, Any], details: Mapping[str, Any]) -> dict[str, Any]:
    """One ``name: value`` line per field: the API's fields (the user flattened), then the
    operator's."""
    fields = {k: v for k, v in view.items() if k not in ("user", "last_error")}
    user = view["user"] or {}
    fields.update({f"user_{k}": user.get(k) for k in ("id", "name", "email")})
    fields["scopes"] = " ".join(view["scopes"])
    fields.update(details)
    error = view["last_error"]
    fields["last_error"] = (
        f"{error['code']} at {error['at']}: {error['message'] or ''}" if error else None
    )
    return fields


def run_show(args: argparse.Namespace, runtime: Runtime | None = None) -> int:
    """``pdauth connections show ID``."""

    async def body(connector: Connector, settings: Settings) -> int:
        row = await require_row(connector, args.connection_id)
        view = connection_json(row, settings.api_base_urls, settings.scopes)
        events = [event_view(e) for e in await recent_events(connector.store, row, args.events)]
        details = operator_details(row)
        # Asks PagerDuty (live) only when there is an active subscription to look at.
        sub = await events_of(connector).status(row.id, live=row.status == "active")
        if args.json:
            print_json(
                {
                    "connection": view,
                    "operator_details": details,
                    "pagerduty_subscription": sub.to_json(),
                    "events": events,
                }
            )
            return EXIT_OK
        print_fields({**_show_fields(view, details), "pagerduty_events": subscription_label(sub)})
        print()
        print(f"last {len(events)} event(s):" if events else "no events")
        if events:
            print_table(
                ("EVENT", "AT", "TYPE", "DATA"),
                [
                    (
                        e["id"],
                        cell_time(e["created_at"]),
                        e["type"],
                        json.dumps(e["data"], sort_keys=True, separators=(",", ":")),
                    )
                    for e in events
                ],
            )
        return EXIT_OK

    return with_connector("connections show", runtime, body)


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
        row = await require_row(connector, args.connection_id)
        was_revoked = row.status == "revoked"
        if not was_revoked and not args.yes:
            view = connection_json(row, settings.api_base_urls, settings.scopes)
            answer = _confirm(
                f"Disconnect {clean(row.id)} (owner {clean(row.owner)}, "
                f"{clean(account_label(view))}, {clean(user_label(view))})? Its tokens are "
                "deleted at once."
            )
            if answer is None:
                report_error(command, "stdin is not a terminal: pass --yes to disconnect")
                return EXIT_USAGE
            if not answer:
                report_error(command, "not disconnected")
                return EXIT_FAILURE
        await connector.disconnect(row.id)
        after = await require_row(connector, row.id)
        view = connection_json(after, settings.api_base_urls, settings.scopes)
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

    return with_connector(command, runtime, body)


async def _remote_outcome(connector: Connector, row: ConnectionRow) -> str:
    """What the disconnect did remotely, from the event it just wrote for this connection."""
    for event in reversed(await recent_events(connector.store, row, 5)):
        if event.type == "revocation.pending":
            return "queued"
        if event.type == "connection.revoked":
            return "revoked" if event.data.get("revoked_at_pagerduty") else "not_revoked"
    return "not_revoked"
