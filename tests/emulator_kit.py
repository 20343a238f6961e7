"""Plain helpers behind the root emulator fixtures, for code that cannot take a fixture.

One RSA signing key for the whole run (generating 2048-bit keys would dominate setup), a fixed
emulator clock start (2027-01-15: seeded data and expiries stay stable), and
:func:`make_emulator_state`. Tests take the fixtures of tests/conftest.py (``emulator_config``,
``emulator_clock``, ``emulator_state``, ``emulator_app``, ``emulator_client``); harnesses,
module-scoped fixtures and benchmarks call these functions.
"""

from __future__ import annotations

import functools

from cryptography.hazmat.primitives.asymmetric import rsa

from pdauth.emulator.app import build_state
from pdauth.emulator.config import EmulatorConfig
from pdauth.emulator.state import EmulatorClock, EmulatorState, KeyRing

__all__ = ["EMULATOR_BASE", "EMULATOR_START", "emulator_signing_key", "make_emulator_state"]

EMULATOR_START = 1_800_000_000.0
EMULATOR_BASE = "http://emulator"


@functools.cache
def emulator_signing_key() -> rsa.RSAPrivateKey:
    """The emulator's id_token signing key, generated once per test run."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_emulator_state(
    config: EmulatorConfig | None = None,
    *,
    clock: EmulatorClock | None = None,
    start: float = EMULATOR_START,
) -> EmulatorState:
    """A fresh seeded emulator state on a frozen clock (only ``clock.advance`` moves it)."""
    return build_state(
        config or EmulatorConfig(),
        clock=clock or EmulatorClock(start=start),
        keys=KeyRing(key=emulator_signing_key()),
    )
