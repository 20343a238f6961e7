"""Every ``pdauth`` subcommand, one module each: ``serve``, ``demo``, ``emulator``, ``keeper``,
``keys``, ``db``, ``connections`` (with ``connections_refresh``), ``connect`` and ``doctor``.

Each module registers its subcommand on pdauth's parser (:mod:`pdauth.cli`) and runs it through
the public layers (Connector, TokenManager, Keeper, Store, the service and the emulator); the
library code a command calls lives outside this package (e.g. :mod:`pdauth.rotation` for
``keys rotate``). Shared pieces: parser registration, flag types and foreground serving in
:mod:`pdauth.commands._common`; tables, JSON, progress and exit codes in
:mod:`pdauth.commands._output`; the replaceable outside world (environment, clock, transport,
browser) in :mod:`pdauth.commands._runtime`; what a connection or event may show in
:mod:`pdauth.commands._views`.
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
