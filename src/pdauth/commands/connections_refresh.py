"""``pdauth connections refresh``: refresh one connection now, or every connection that is due.

``refresh ID`` forces a refresh through the connection's
:class:`~pdauth.tokens.TokenManager` (single flight in the process, the row lease across
processes: it never races the service or the keeper). ``refresh --due`` refreshes the
connections whose refresh token would otherwise expire unused, soonest first, skipping any that
another process refreshed since they were listed.
"""

from __future__ import annotations

import argparse
from typing import Any

from pdauth.commands._common import Subcommands, add_command, number_flag, positive_int
from pdauth.commands._output import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    Progress,
    clean,
    format_time,
    print_json,
    report_error,
)
from pdauth.commands._runtime import Runtime, current_runtime, require_row, with_connector
from pdauth.commands._views import connection_json, operator_details
from pdauth.config import Settings
from pdauth.connections import Connector
from pdauth.errors import (
    CryptoError,
    InvalidClientError,
    LeaseUnavailableError,
    NeedsReauthError,
    OAuthError,
    StoreError,
    TransportError,
)
from pdauth.store import ConnectionRow
from pdauth.tokens import REFRESH_DUE_FRACTION, REFRESH_LIFETIME

__all__ = ["add_refresh_action", "run_refresh"]

DAY = 86_400.0
MAX_DUE_LIMIT = 1000  # the store's page size


def _due_limit(text: str) -> int:
    value = positive_int(text)
    if value > MAX_DUE_LIMIT:
        raise argparse.ArgumentTypeError(f"at most {MAX_DUE_LIMIT} per run")
    return value


_days = number_flag(
    float,
    lambda value: 0 < value <= 3650,
    "expected a number of days",
    "expected a number of days between 0 and 3650",
)


def add_refresh_action(actions: Subcommands) -> None:
    """Register ``pdauth connections refresh``."""
    refresh = add_command(
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
        return with_connector(command, rt, lambda c, s: _refresh_due(args, rt, c, s))
    return with_connector(command, rt, lambda c, s: _refresh_one(args, c, s))


async def _refresh_one(args: argparse.Namespace, connector: Connector, settings: Settings) -> int:
    before = await require_row(connector, args.connection_id)
    problem: str | None = None
    try:
        await connector.tokens.force_refresh(before.id)
    except NeedsReauthError as exc:
        problem = exc.reason
    after = await require_row(connector, before.id)
    view = connection_json(after, settings.api_base_urls, settings.scopes)
    refreshed = problem is None and after.token_version != before.token_version
    if problem is None and not refreshed:
        # The token endpoint failed transiently; the manager kept the still-valid old token.
        code = after.last_error_code or "unknown"
        problem = f"the refresh failed ({code}); the current access token stays in use"
    if args.json:
        print_json(
            {
                "connection": view,
                "operator_details": operator_details(after),
                "refreshed": refreshed,
                "problem": problem,
            }
        )
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
