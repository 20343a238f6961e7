"""The ``pdauth`` command line: ``run(argv) -> int`` parses arguments and dispatches.

Every subcommand lives in :mod:`pdauth.commands` (one module each) and registers itself on the
parser built here; this module only parses and maps what escapes a command to an exit code:
0 success, 1 a failure the command reports, 2 a usage or configuration error, 3 not found,
130 Ctrl-C (the table in :mod:`pdauth.commands._output`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pdauth import __version__
from pdauth.commands._output import EXIT_OK, EXIT_USAGE
from pdauth.commands._runtime import exit_code_for
from pdauth.commands.connect import add_connect_command
from pdauth.commands.connections import add_connections_command
from pdauth.commands.db import add_db_command
from pdauth.commands.demo import add_demo_command
from pdauth.commands.doctor import add_doctor_command
from pdauth.commands.emulator import add_emulator_command
from pdauth.commands.keeper import add_keeper_command
from pdauth.commands.keys import add_keys_command
from pdauth.commands.serve import add_serve_command
from pdauth.errors import PdauthError

__all__ = ["build_parser", "main", "run"]

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pdauth",
        description="Connect PagerDuty accounts safely: OAuth flow, token keeping, REST client, "
        "service and a local PagerDuty emulator.",
    )
    parser.add_argument("--version", action="version", version=f"pdauth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in (
        add_emulator_command,
        add_keys_command,
        add_db_command,
        add_serve_command,
        add_demo_command,
        add_connections_command,
        add_connect_command,
        add_doctor_command,
        add_keeper_command,
    ):
        register(sub)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_OK
    try:
        return handler(args)
    except PdauthError as exc:  # a command let it escape: still the documented exit code
        print(f"pdauth: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return 130


def main() -> int:
    return run(sys.argv[1:])
