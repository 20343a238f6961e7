"""``pdauth keeper``: run pdauth's background work as its own process.

The keeper (:class:`pdauth.keeper.Keeper`) refreshes connections whose refresh token nears its
idle expiry, retries queued revocations, delivers outbox events to the webhook and purges
expired pending authorizations. ``pdauth serve`` runs it inside the service; a host that embeds
pdauth in Django, Flask or any app whose lifespan does not run it starts this command next to
the app instead (several keepers may run at once: each refresh and each event is claimed by
one). It runs a pass every ``PDAUTH_KEEPER_INTERVAL`` seconds (±10 % jitter, so instances
drift apart) until SIGTERM or Ctrl-C, which end it cleanly (exit 0) after the current pass;
each pass that did something prints one line (one JSON document per line with ``--json``).
``--once`` runs a single pass, prints its report and exits 1 if the pass had problems.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus

from pdauth.commands._common import Subcommands, add_command
from pdauth.commands._output import EXIT_FAILURE, EXIT_OK, print_json
from pdauth.commands._runtime import Runtime, current_runtime, with_connector
from pdauth.config import Settings
from pdauth.connections import Connector
from pdauth.keeper import Keeper, KeeperReport

__all__ = ["add_keeper_command", "report_json", "run_keeper"]

COMMAND = "keeper"


def add_keeper_command(sub: Subcommands) -> None:
    """Register ``pdauth keeper``."""
    parser = add_command(
        sub,
        "keeper",
        "run the keeper: due refreshes, revocation retries, webhooks, purge of stale flows",
        "Runs a pass every PDAUTH_KEEPER_INTERVAL seconds until SIGTERM or Ctrl-C (exit 0). "
        "Run it as its own process when pdauth is embedded in an app that does not run the "
        "keeper itself (Django, Flask, WSGI); `pdauth serve` already runs one. Several "
        "keepers may run at once. With --once, exit code 1 means the pass had problems.",
    )
    parser.add_argument("--once", action="store_true", help="run one pass, print its report")
    parser.add_argument("--json", action="store_true", help="print reports as JSON")
    parser.set_defaults(handler=run_keeper)


def report_json(report: KeeperReport) -> dict[str, Any]:
    """A pass's report as JSON (counts and the names of problems; never a secret)."""
    refresh = report.refresh
    return {
        "refresh": None
        if refresh is None
        else {
            "examined": refresh.examined,
            "refreshed": refresh.refreshed,
            "needs_reauth": refresh.needs_reauth,
            "failed": refresh.failed,
        },
        "revoked": report.revoked,
        "revocations_retrying": report.revocations_retrying,
        "revocations_abandoned": report.revocations_abandoned,
        "webhooks_delivered": report.webhooks_delivered,
        "webhooks_retrying": report.webhooks_retrying,
        "webhooks_abandoned": report.webhooks_abandoned,
        "skipped": report.skipped,
        "pending_purged": report.pending_purged,
        "problems": list(report.problems),
    }


def _summary(report: KeeperReport) -> str:
    refresh = report.refresh
    parts = [
        f"refreshed {refresh.refreshed}/{refresh.examined} due, needs re-authorization "
        f"{refresh.needs_reauth}, failed {refresh.failed}"
        if refresh is not None
        else "refresh not run",
        f"revoked {report.revoked} (retrying {report.revocations_retrying}, abandoned "
        f"{report.revocations_abandoned})",
        f"webhooks delivered {report.webhooks_delivered} (retrying {report.webhooks_retrying}, "
        f"abandoned {report.webhooks_abandoned})",
        f"events closed without webhook {report.skipped}",
        f"stale flows purged {report.pending_purged}",
    ]
    if report.problems:
        parts.append("problems: " + "; ".join(report.problems))
    return "; ".join(parts)


def _eventful(report: KeeperReport) -> bool:
    counts = report_json(report)
    refresh = counts.pop("refresh")
    return bool(report.problems) or any(
        isinstance(v, int) and v for v in [*counts.values(), *(refresh or {}).values()]
    )


def _emit(report: KeeperReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report_json(report), sort_keys=True), flush=True)
    else:
        print(f"keeper pass: {_summary(report)}", flush=True)


def run_keeper(args: argparse.Namespace, runtime: Runtime | None = None) -> int:
    """``pdauth keeper``. Exit codes: 0 stopped (or a clean --once pass), 1 the --once pass had
    problems, 2 bad configuration or a schema that is behind."""
    rt = current_runtime(runtime)
    return with_connector(
        COMMAND, rt, lambda connector, settings: _keep(args, rt, connector, settings)
    )


async def _keep(
    args: argparse.Namespace, rt: Runtime, connector: Connector, settings: Settings
) -> int:
    async with Keeper(connector, settings, clock=rt.clock, transport=rt.transport) as keeper:
        if args.once:
            report = await keeper.run_once()
            if args.json:
                print_json(report_json(report))
            else:
                print(_summary(report))
            return EXIT_FAILURE if report.problems else EXIT_OK
        await _forever(keeper, settings.keeper_interval, lambda r: _emit(r, args.json))
    return EXIT_OK


async def _forever(keeper: Keeper, interval: float, emit: Callable[[KeeperReport], None]) -> None:
    """Passes every ``interval`` seconds (jittered) until SIGTERM/SIGINT; the pass under way
    finishes first (claimed work is never left half done on a clean stop)."""
    stop = anyio.Event()
    rng = random.Random()  # noqa: S311 - jitter, not security
    async with anyio.create_task_group() as tg:
        if threading.current_thread() is threading.main_thread():
            await tg.start(_stop_on_signal, stop)  # handlers in place before we say we run
        print(
            f"pdauth keeper: a pass every {interval:g} s; SIGTERM or Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )
        while not stop.is_set():
            try:
                report = await keeper.run_once()
            except Exception as exc:  # a long-running loop must outlive any one bad pass
                print(f"pdauth keeper: the pass failed ({type(exc).__name__})", file=sys.stderr)
            else:
                if _eventful(report):
                    emit(report)
            with anyio.move_on_after(interval * (0.9 + 0.2 * rng.random())):
                await stop.wait()
        tg.cancel_scope.cancel()
    print("pdauth keeper: stopped", file=sys.stderr, flush=True)


async def _stop_on_signal(
    stop: anyio.Event, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            stop.set()
            return
