"""``manage.py pdauth_keeper``: pdauth's keeper as its own process, next to a Django app.

The same command as ``pdauth keeper`` (:mod:`pdauth.commands.keeper`, the same
:class:`~pdauth.keeper.Keeper`): due refreshes, revocation retries, signed webhooks and the purge
of stale flows, every ``PDAUTH_KEEPER_INTERVAL`` seconds until SIGTERM or Ctrl-C; ``--once``
runs one pass and prints its report. Configuration comes from the ``PDAUTH_*`` variables.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import (  # type: ignore[import-untyped]
    BaseCommand,
    CommandError,
    CommandParser,
)

from pdauth.commands.keeper import run_keeper


class Command(BaseCommand):  # type: ignore[misc]
    help = (
        "Run pdauth's keeper (due refreshes, revocation retries, webhooks) until SIGTERM; "
        "the same as `pdauth keeper`."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="run one pass, print its report")
        parser.add_argument("--json", action="store_true", help="print reports as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        code = run_keeper(argparse.Namespace(once=options["once"], json=options["json"]))
        if code != 0:
            raise CommandError(f"pdauth keeper exited with status {code}", returncode=code)
