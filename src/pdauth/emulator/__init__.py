"""A local PagerDuty: identity service + REST subset + control API, as one ASGI app.

It shares no code with the client side of pdauth (it checks PKCE, signs id_tokens and keeps
tokens with its own code), so a client bug cannot pass its own test. ``create_app`` builds the
app for in-process use (``httpx.ASGITransport``); ``EmulatorServer`` serves it on a real socket
in a background thread; ``pdauth emulator`` serves it from the command line.
"""

from __future__ import annotations

from pdauth.emulator.app import create_app
from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.server import EmulatorServer
from pdauth.emulator.state import EmulatorState

__all__ = ["EmulatorConfig", "EmulatorServer", "EmulatorState", "create_app"]
