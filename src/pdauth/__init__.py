"""pdauth: the auth flow of a public PagerDuty integration, done properly.

The public surface is small on purpose; everything else is reached through its module
(``pdauth.oauth``, ``pdauth.crypto``, ``pdauth.emulator``, ``pdauth.service``, …).
"""

from __future__ import annotations

from pdauth.errors import PdauthError

__version__ = "0.1.0"

__all__ = [
    "PdauthError",
    "__version__",
]
