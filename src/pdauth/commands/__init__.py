"""pdauth's operations commands: ``connections``, ``connect`` and ``doctor``.

Each module registers its subcommands on pdauth's parser (:mod:`pdauth.cli`) and runs them
through the public layers (Connector, TokenManager, Store). Shared output — tables, JSON,
progress, exit codes — lives in :mod:`pdauth.commands._output`; the replaceable outside world
(environment, clock, transport, browser) in :mod:`pdauth.commands._runtime`. ``Progress``,
``epilog`` and ``print_json`` are re-exported for the other commands (``keys``, ``db``).
"""

from __future__ import annotations

from pdauth.commands._output import (
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    Progress,
    epilog,
    print_json,
)
from pdauth.commands._runtime import Runtime, use_runtime

__all__ = [
    "EXIT_FAILURE",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "Progress",
    "Runtime",
    "epilog",
    "print_json",
    "use_runtime",
]
