"""The ``pdauth`` command line: ``run(argv) -> int`` parses arguments and dispatches.

Each subcommand lives in a small function that calls the layers below (the emulator,
the service, the Connector); this module only parses, prints and maps errors to exit
codes: 0 success, 1 a failure the command reports, 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pdauth import __version__
from pdauth.errors import PdauthError

__all__ = ["build_parser", "main", "run"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pdauth",
        description="Connect PagerDuty accounts safely: OAuth flow, token keeping, REST client, "
        "service and a local PagerDuty emulator.",
    )
    parser.add_argument("--version", action="version", version=f"pdauth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _register_subcommands(sub)
    return parser


def _register_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Subcommands register themselves here as the layers they call are built."""
    from pdauth.commands.connect import add_connect_command
    from pdauth.commands.connections import add_connections_command
    from pdauth.commands.doctor import add_doctor_command
    from pdauth.demo import add_demo_command
    from pdauth.emulator.cli import add_emulator_command
    from pdauth.rotation import add_db_command, add_keys_command
    from pdauth.service.cli import add_serve_command

    add_emulator_command(sub)
    add_keys_command(sub)
    add_db_command(sub)
    add_serve_command(sub)
    add_demo_command(sub)
    add_connections_command(sub)
    add_connect_command(sub)
    add_doctor_command(sub)


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
    except PdauthError as exc:
        print(f"pdauth: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def main() -> int:
    return run(sys.argv[1:])
