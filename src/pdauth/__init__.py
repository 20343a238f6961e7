"""pdauth: the auth flow of a public PagerDuty integration, done properly.

The public surface is small on purpose: the settings, the Connector facade and its blocking
twin (SyncConnector, for Django, Flask and scripts), the REST clients, the connection value
and the root of the error tree. Everything else is reached through its module
(``pdauth.oauth``, ``pdauth.crypto``, ``pdauth.emulator``, ``pdauth.service``,
``pdauth.integrations``, …). Names are imported lazily so that ``import pdauth.oauth`` or
``import pdauth.emulator`` does not drag in the database and HTTP layers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pdauth.errors import PdauthError

if TYPE_CHECKING:
    from pdauth.client import PagerDutyClient, SyncPagerDutyClient
    from pdauth.config import Settings
    from pdauth.connections import Connection, Connector
    from pdauth.sync_connector import SyncConnector

__version__ = "0.1.0"

__all__ = [
    "Connection",
    "Connector",
    "PagerDutyClient",
    "PdauthError",
    "Settings",
    "SyncConnector",
    "SyncPagerDutyClient",
    "__version__",
]

_LAZY = {
    "Connection": "pdauth.connections",
    "Connector": "pdauth.connections",
    "PagerDutyClient": "pdauth.client",
    "SyncPagerDutyClient": "pdauth.client",
    "Settings": "pdauth.config",
    "SyncConnector": "pdauth.sync_connector",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pdauth' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
