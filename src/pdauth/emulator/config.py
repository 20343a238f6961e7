"""The emulator's knobs: one frozen value describing how the local PagerDuty behaves.

Defaults follow PagerDuty's documented behaviour (its public PagerDuty/developer-docs repository:
app-integration-development 06-OAuth-Functionality.md, 02-Private-Apps.md, REST-API
04-Rate-Limits.md); where PagerDuty is
silent (refresh-token reuse, a revocation endpoint, error status codes) the default is our
assumption and the knob exists so tests can pick the other behaviour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["AppKind", "EmulatorConfig"]

AppKind = Literal["classic", "scoped"]

DAY = 86_400
# Lifetimes by app kind (06-OAuth-Functionality.md; PR #84 made them apply to every Classic app).
CLASSIC_ACCESS_TTL = 30 * DAY
CLASSIC_REFRESH_TTL = 210 * DAY
CLASSIC_ROLLING_WINDOW = 3 * 365 * DAY
SCOPED_ACCESS_TTL = 1 * DAY
SCOPED_REFRESH_TTL = 30 * DAY
SCOPED_ROLLING_WINDOW = 365 * DAY


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulator behaves. Invalid values raise ``ValueError`` at construction.

    - ``refresh_reuse``: what presenting an already-rotated refresh token does. PagerDuty does
      not document it (assumption): ``strict`` revokes the whole grant (OAuth 2.0 Security BCP
      §4.14.2 reuse detection), ``lenient`` only refuses with ``invalid_grant``.
    - ``revocation_endpoint``: serve ``POST /oauth/revoke`` (RFC 7009). PagerDuty documents no
      such endpoint; it is off by default.
    - ``drop_ratelimit_headers``: the fraction of 429s served without headers or body, as
      PagerDuty warns can happen in "exceptional scenarios".
    - ``public_url``: the base URL clients use (behind a proxy, or for the id_token ``aud``);
      ``None`` takes it from each request.
    - ``issuer``: the id_token ``iss`` and discovery ``issuer``; the default is what PagerDuty's
      production sample token carries (its prose says ``identity.pagerduty.com``).
    - ``webhook_*``: v3 webhook delivery (PagerDuty/developer-docs webhooks 02-Behavior.md):
      a 5 s timeout, retries "for up to 48 hours" (``webhook_retry_window``), disablement for
      24 hours after 3 consecutive dropped webhooks. PagerDuty documents neither the backoff
      schedule nor a queue limit: ``webhook_retry_delays`` (30 s doubling up to 1 hour, then
      hourly) and ``webhook_queue_limit`` (4000 per subscription and incident, the figure of
      PagerDuty's older extension docs) are our assumptions; ``webhook_max_attempts`` caps the
      attempts (``None``: the window alone decides; the older docs said 5). Delays and the
      window are multiplied by ``webhook_retry_scale`` (e.g. 0.001 on a real socket, where the
      emulator clock runs in real time). The ``User-Agent`` is our assumption too;
      ``webhook_bad_signatures`` signs every delivery with a wrong key (negative tests).
    """

    seed: int = 1
    rate_limit: int = 960
    rate_window: float = 60.0
    access_token_ttl: int | None = None
    refresh_token_ttl: int | None = None
    code_ttl: float = 30.0
    refresh_reuse: Literal["strict", "lenient"] = "strict"
    revocation_endpoint: bool = False
    drop_ratelimit_headers: float = 0.0
    public_url: str | None = None
    issuer: str = "https://app.pagerduty.com/global/oauth/anonymous"
    users_per_account: int = 250
    id_token_ttl: int = 3600
    demo_app: bool = True
    webhook_timeout: float = 5.0
    webhook_max_attempts: int | None = None
    webhook_retry_delays: tuple[float, ...] = (
        30.0,
        60.0,
        120.0,
        240.0,
        480.0,
        960.0,
        1920.0,
        3600.0,
    )
    webhook_retry_window: float = 48 * 3600.0
    webhook_retry_scale: float = 1.0
    webhook_disable_after: int = 3
    webhook_disable_for: float = 86_400.0
    webhook_queue_limit: int = 4000
    webhook_user_agent: str = "PagerDuty-Webhook/V3.0"
    webhook_bad_signatures: bool = False

    def __post_init__(self) -> None:
        if self.rate_limit < 1:
            raise ValueError("rate_limit must be at least 1")
        if not (math.isfinite(self.rate_window) and self.rate_window > 0):
            raise ValueError("rate_window must be a positive number of seconds")
        for name in ("access_token_ttl", "refresh_token_ttl"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 second")
        if not (math.isfinite(self.code_ttl) and self.code_ttl > 0):
            raise ValueError("code_ttl must be a positive number of seconds")
        if self.refresh_reuse not in ("strict", "lenient"):
            raise ValueError("refresh_reuse must be 'strict' or 'lenient'")
        if not (0.0 <= self.drop_ratelimit_headers <= 1.0):
            raise ValueError("drop_ratelimit_headers must be a fraction in [0, 1]")
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            raise ValueError("public_url must be an absolute http(s) URL")
        if self.users_per_account < 1:
            raise ValueError("users_per_account must be at least 1")
        if self.id_token_ttl < 1:
            raise ValueError("id_token_ttl must be at least 1 second")
        self._check_webhooks()

    def _check_webhooks(self) -> None:
        if not (math.isfinite(self.webhook_timeout) and self.webhook_timeout > 0):
            raise ValueError("webhook_timeout must be a positive number of seconds")
        if self.webhook_max_attempts is not None and self.webhook_max_attempts < 1:
            raise ValueError("webhook_max_attempts must be at least 1 (or None)")
        if not (math.isfinite(self.webhook_retry_window) and self.webhook_retry_window >= 0):
            raise ValueError("webhook_retry_window must be a non-negative number of seconds")
        delays = self.webhook_retry_delays
        if not delays or not all(math.isfinite(d) and d >= 0 for d in delays):
            raise ValueError("webhook_retry_delays must be non-negative seconds (at least one)")
        if not (math.isfinite(self.webhook_retry_scale) and self.webhook_retry_scale >= 0):
            raise ValueError("webhook_retry_scale must be a non-negative number")
        if self.webhook_disable_after < 1:
            raise ValueError("webhook_disable_after must be at least 1")
        if not (math.isfinite(self.webhook_disable_for) and self.webhook_disable_for >= 0):
            raise ValueError("webhook_disable_for must be a non-negative number of seconds")
        if self.webhook_queue_limit < 1:
            raise ValueError("webhook_queue_limit must be at least 1")

    def access_ttl(self, kind: AppKind) -> int:
        """Access-token lifetime in seconds for an app of ``kind`` (override wins)."""
        if self.access_token_ttl is not None:
            return self.access_token_ttl
        return CLASSIC_ACCESS_TTL if kind == "classic" else SCOPED_ACCESS_TTL

    def refresh_ttl(self, kind: AppKind) -> int:
        """Refresh-token lifetime in seconds for an app of ``kind`` (override wins)."""
        if self.refresh_token_ttl is not None:
            return self.refresh_token_ttl
        return CLASSIC_REFRESH_TTL if kind == "classic" else SCOPED_REFRESH_TTL

    def rolling_window(self, kind: AppKind) -> int:
        """How long a grant can be kept alive by refreshing (3 years Classic, 1 year Scoped)."""
        return CLASSIC_ROLLING_WINDOW if kind == "classic" else SCOPED_ROLLING_WINDOW
