"""``create_app``: the emulator as one Starlette ASGI app (identity + control + REST US/EU).

Routing (one host, as the emulator serves it): the identity paths at the root, the control
API under ``/_emulator``, the EU REST API under ``/eu`` and the US REST API at the root (mounted
last, so it only sees what nothing else claimed). With the emulator on
``http://127.0.0.1:9000``: identity and US API base ``http://127.0.0.1:9000``, EU API base
``http://127.0.0.1:9000/eu``. The state is exposed as ``app.state.emulator``.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount

from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.control import control_routes, demo_app
from pdauth.emulator.data import build_directory
from pdauth.emulator.identity import identity_routes
from pdauth.emulator.rest import rest_routes
from pdauth.emulator.state import EmulatorClock, EmulatorState, KeyRing
from pdauth.emulator.webhook_control import webhook_control_routes

__all__ = ["build_state", "create_app"]


def build_state(
    config: EmulatorConfig | None = None,
    *,
    clock: EmulatorClock | None = None,
    keys: KeyRing | None = None,
) -> EmulatorState:
    """A fresh state: the seeded directory (built at the clock's now) and, unless
    ``config.demo_app`` is off, the demo app. Pass ``keys`` to reuse an RSA key (fast tests)."""
    config = config or EmulatorConfig()
    clock = clock or EmulatorClock()
    directory = build_directory(config.seed, config.users_per_account, now=clock.now())
    state = EmulatorState(config, directory, clock=clock, keys=keys)
    if config.demo_app:
        state.register_app(demo_app())
    return state


def create_app(
    config: EmulatorConfig | None = None, *, state: EmulatorState | None = None
) -> Starlette:
    """The emulator app. Give a ``config`` (a fresh state is built) or a ready ``state``."""
    if state is None:
        state = build_state(config)
    elif config is not None and config != state.config:
        raise ValueError("pass either a config or a state (whose config is used), not both")
    routes: list[BaseRoute] = [
        *identity_routes(state),
        Mount("/_emulator", routes=[*control_routes(state), *webhook_control_routes(state)]),
        Mount("/eu", routes=rest_routes(state, "eu")),
        Mount("", routes=rest_routes(state, "us")),
    ]
    app = Starlette(routes=routes)
    app.state.emulator = state
    return app
