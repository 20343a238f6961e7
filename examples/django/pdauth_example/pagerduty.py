"""The project's one SyncConnector (a background event loop shared by every request)."""

from __future__ import annotations

import atexit

from pdauth import Settings, SyncConnector

connector = SyncConnector(Settings.from_env())
atexit.register(connector.close)
