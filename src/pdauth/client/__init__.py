"""The PagerDuty REST client: pacing by PagerDuty's rate-limit headers, bounded retries,
401 → one refresh, pagination, and a sync facade.

``PagerDutyClient`` (async) and ``SyncPagerDutyClient`` are the entry points; a
``TokenSource`` supplies the credential (``StaticToken``/``ApiKeyToken`` for scripts, the
Connector's adapter for connections). Pacing is shared per credential within a process
(``LocalPacer``) or across processes and machines (``RedisPacer``).
"""

from __future__ import annotations

from pdauth.client.credentials import ApiKeyToken, StaticToken, TokenSource
from pdauth.client.pacer import DEFAULT_PACER, LocalPacer, Pacer
from pdauth.client.redis_pacer import RedisPacer
from pdauth.client.rest import DEFAULT_BASE_URL, PagerDutyClient
from pdauth.client.retry import RetryPolicy
from pdauth.client.sync import SyncPagerDutyClient

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_PACER",
    "ApiKeyToken",
    "LocalPacer",
    "Pacer",
    "PagerDutyClient",
    "RedisPacer",
    "RetryPolicy",
    "StaticToken",
    "SyncPagerDutyClient",
    "TokenSource",
]
