"""Settings: pdauth's configuration, read from ``PDAUTH_*`` environment variables.

:class:`Settings` is a frozen pydantic-settings model. :meth:`Settings.from_env` is the
documented way to build one: it reads a mapping (``os.environ`` by default, never a ``.env``
file) and turns every problem into one :class:`~pdauth.errors.ConfigurationError` that names
the variables to fix and never repeats a value. Endpoints must be absolute ``https`` URLs;
``http`` is allowed only on a loopback host (RFC 6749 §3.1.2.1 and §10.9, RFC 9700 §2.6,
docs/SECURITY.md item 40). Secrets are ``SecretStr`` and credentials inside the database and
Redis URLs are masked, so ``repr``, ``str`` and ``model_dump`` show none of them. Typos are
caught at start-up: scopes outside PagerDuty's grammar and a database URL the store cannot
serve are configuration errors, and a ``PDAUTH_*`` variable that is no setting is logged as a
warning with the closest setting's name (:func:`unknown_variables`).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Annotated, Any, Literal, Self, cast
from urllib.parse import urlsplit

from pydantic import (
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from pdauth._config_rules import (
    ENV_PREFIX,
    check_scope,
    check_url,
    describe,
    env_name as _env,
    mask_credentials,
    unknown_names,
)
from pdauth.crypto import KeyRing
from pdauth.errors import ConfigurationError
from pdauth.store.engine import normalize_url

__all__ = ["Settings", "unknown_variables"]

log = logging.getLogger("pdauth.config")

# Endpoint suffixes under identity_url, as PagerDuty publishes them.
_AUTHORIZE_PATH = "/oauth/authorize"
_TOKEN_PATH = "/oauth/token"  # noqa: S105 - a URL path, not a password
_JWKS_PATH = "/global/oauth/anonymous/jwks"
_DISCOVERY_PATH = "/global/oauth/anonymous/.well-known/openid-configuration"

# Base URLs (the service's public URL too) get paths appended, so a trailing slash is
# dropped and a query refused.
_BASE_URL_FIELDS = ("identity_url", "api_url", "api_url_eu", "public_url")
# Complete endpoint URLs (and the issuer, compared byte for byte): kept exactly as given.
_ENDPOINT_FIELDS = (
    "authorize_url",
    "token_url",
    "revoke_url",
    "jwks_url",
    "discovery_url",
    "issuer",
)
# URLs used as given, query included: the redirect URI must equal the registered one byte for
# byte (RFC 6749 §3.1.2, §4.1.3), and the webhook URL is the host application's to shape.
_QUERY_URL_FIELDS = ("redirect_uri", "webhook_url")
# Optional fields where an empty variable means "not set".
_EMPTY_IS_UNSET = (
    *_ENDPOINT_FIELDS,
    "session_secret",
    "api_keys",
    "redis_url",
    "public_url",
    "admin_password",
    "webhook_url",
    "webhook_secret",
    "refresh_horizon",
    "metrics_token",
)

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_MAX_HTTP_TIMEOUT = 25.0  # PagerDuty authorization codes live 30 s; leave room to spare.
_MIN_SESSION_SECRET = 32
_REDIS_PREFIX = re.compile(r"[\x21-\x7e]{1,64}")
_PD_EVENT_TYPE = re.compile(r"[a-z][a-z_]*(\.[a-z][a-z_]*){1,4}")

# Set by from_env so that only the mapping it was given is read (not os.environ).
_INIT_ONLY: ContextVar[bool] = ContextVar("pdauth_settings_init_only", default=False)


class Settings(BaseSettings):
    """Everything pdauth needs to know, from ``PDAUTH_*`` variables; frozen once built."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        env_file=None,
        secrets_dir=None,
        str_strip_whitespace=True,
        # pydantic's default messages repeat the input (input_value=…), which may be a secret.
        hide_input_in_errors=True,
    )

    client_id: str
    client_secret: SecretStr | None = None
    redirect_uri: str
    scopes: Annotated[tuple[str, ...], NoDecode] = ("read",)
    app_kind: Literal["classic", "scoped"] = "classic"
    database_url: str = "sqlite:///./pdauth.db"
    encryption_keys: SecretStr
    session_secret: SecretStr | None = None
    identity_url: str = "https://identity.pagerduty.com"
    authorize_url: str | None = None
    token_url: str | None = None
    revoke_url: str | None = None
    jwks_url: str | None = None
    discovery_url: str | None = None
    # How the client authenticates at the token and revocation endpoints (RFC 6749 §2.3.1):
    # PagerDuty documents client_secret_post; every compliant server supports client_secret_basic.
    token_auth_method: Literal["client_secret_post", "client_secret_basic"] = "client_secret_post"  # noqa: S105 - a method name, not a password
    issuer: str | None = None
    api_url: str = "https://api.pagerduty.com"
    api_url_eu: str = "https://api.eu.pagerduty.com"
    api_keys: SecretStr | None = None
    redis_url: str | None = None
    # Prepended to every Redis key pdauth writes, so several deployments can share one Redis.
    redis_prefix: str = "pdauth:"
    http_timeout: float = 10.0
    lease_seconds: float = 30.0
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    # The service (pdauth.service): its public base URL (default: redirect_uri minus
    # "/callback"), the reverse proxies whose X-Forwarded-For is believed, the per-client limit
    # on /connect and the callback (per minute; 0 = off), and the admin view's password.
    public_url: str | None = None
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    connect_rate_limit: int = 30
    admin_password: SecretStr | None = None
    # The bearer token /metrics requires from a scraper; None: the service decides (loopback).
    metrics_token: SecretStr | None = None
    # The keeper (pdauth.keeper): seconds between runs, how close to its idle expiry a refresh
    # token is refreshed (None: a quarter of its lifetime), and the optional webhook that
    # learns of every outbox event (HMAC-SHA256 signed with webhook_secret; see pdauth.webhooks).
    keeper_interval: float = 60.0
    refresh_horizon: float | None = None
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_timeout: float = 5.0
    # PagerDuty's own events per connection (pdauth.subscriptions): the v3 event types each
    # active connection subscribes to, comma-separated (e.g. incident.triggered,
    # incident.resolved); empty (the default) turns the feature off.
    pagerduty_events: Annotated[tuple[str, ...], NoDecode] = ()

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Never a .env file or a secrets directory: configuration comes from the environment
        # (or, in from_env, from exactly the mapping given) and from nothing implicit.
        if _INIT_ONLY.get():
            return (init_settings,)
        return (init_settings, env_settings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Build settings from ``env`` (default ``os.environ``); ``overrides`` win over it.

        Raises :class:`~pdauth.errors.ConfigurationError` listing every problem by its
        variable name (``PDAUTH_CLIENT_ID is required``; …), never with a value. Logs a
        warning for each ``PDAUTH_*`` variable that is not a setting (:func:`unknown_variables`).
        """
        source = os.environ if env is None else env
        _warn_unknown(source)
        values: dict[str, Any] = _values_from(cls, source)
        values.update(overrides)
        token = _INIT_ONLY.set(True)
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = describe(exc)
        finally:
            _INIT_ONLY.reset(token)
        # Raised outside the except block so the ValidationError (which holds the inputs,
        # secrets included) is not attached as __context__.
        raise ConfigurationError("invalid pdauth configuration: " + "; ".join(problems))

    @property
    def service_base_url(self) -> str:
        """The service's public base URL, without a trailing slash: ``PDAUTH_PUBLIC_URL``;
        without it, what precedes ``/callback`` in the redirect URI, or the redirect URI's
        origin when its path ends otherwise (never a Host header, which a client controls).

        The one rule for where the service lives: its routes (the callback's path is the
        redirect URI's path below it) and the URLs it hands out, such as PagerDuty's webhook
        receiver, are all built from it.
        """
        if self.public_url:
            return self.public_url.rstrip("/")
        redirect = urlsplit(self.redirect_uri)
        path = redirect.path[: -len("/callback")] if redirect.path.endswith("/callback") else ""
        return f"{redirect.scheme}://{redirect.netloc}{path}".rstrip("/")

    # -- validation -----------------------------------------------------------------------

    @field_validator(*_EMPTY_IS_UNSET, mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("client_id", "database_url")
    @classmethod
    def _not_empty(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            raise ValueError(f"{_env(_field(info))} must not be empty")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        # The store's own rule, applied at start-up so a bad URL is a configuration error (exit
        # 2) naming PDAUTH_DATABASE_URL rather than a failure at the first query.
        if value:
            _apply_rule(normalize_url, value)
        return value

    @field_validator("client_secret")
    @classmethod
    def _client_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty secret must not silently turn a confidential client into a public one.
        # (Surrounding whitespace is already gone: str_strip_whitespace applies to SecretStr.)
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("PDAUTH_CLIENT_SECRET is set but empty (unset it for a public client)")
        return value

    @field_validator("session_secret", "webhook_secret", "metrics_token")
    @classmethod
    def _long_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < _MIN_SESSION_SECRET:
            raise ValueError(
                f"{_env(_field(info))} must be at least {_MIN_SESSION_SECRET} characters "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _encryption_keys(cls, value: SecretStr) -> SecretStr:
        # The key ring's message names PDAUTH_ENCRYPTION_KEYS and never the value.
        _apply_rule(KeyRing.from_config, value.get_secret_value())
        return value

    @field_validator("api_keys")
    @classmethod
    def _api_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _split_api_keys(value):
            return None
        return value

    @field_validator("scopes", "pagerduty_events", "trusted_proxies", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        # The variables are "a b" or "a,b", not JSON (hence NoDecode above).
        if isinstance(value, str):
            return tuple(part for part in re.split(r"[\s,]+", value) if part)
        return value

    @field_validator("scopes")
    @classmethod
    def _check_scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("PDAUTH_SCOPES must name at least one scope")
        for scope in value:
            check_scope(scope)
        return tuple(dict.fromkeys(value))

    @field_validator("pagerduty_events")
    @classmethod
    def _check_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for event in value:
            if not _PD_EVENT_TYPE.fullmatch(event):
                raise ValueError(
                    "PDAUTH_PAGERDUTY_EVENTS must be v3 event types separated by commas "
                    "(e.g. incident.triggered,incident.resolved)"
                )
        return tuple(dict.fromkeys(value))

    @field_validator("app_kind", "log_format", "token_auth_method", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in _LOG_LEVELS:
            raise ValueError("PDAUTH_LOG_LEVEL must be one of " + ", ".join(_LOG_LEVELS))
        return level

    @field_validator(*_BASE_URL_FIELDS)
    @classmethod
    def _base_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        return check_url(value, _env(_field(info)), allow_query=False).rstrip("/")

    @field_validator(*_ENDPOINT_FIELDS, *_QUERY_URL_FIELDS)
    @classmethod
    def _exact_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        name = _field(info)
        return check_url(value, _env(name), allow_query=name in _QUERY_URL_FIELDS)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme.lower() not in ("redis", "rediss", "unix"):
            raise ValueError("PDAUTH_REDIS_URL must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("redis_prefix")
    @classmethod
    def _redis_prefix(cls, value: str) -> str:
        if not _REDIS_PREFIX.fullmatch(value):
            raise ValueError(
                "PDAUTH_REDIS_PREFIX must be 1 to 64 printable ASCII characters without spaces "
                "(e.g. pdauth:)"
            )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    "PDAUTH_TRUSTED_PROXIES must list IP addresses or networks (e.g. 10.0.0.0/8)"
                ) from None
        return value

    @field_validator("connect_rate_limit")
    @classmethod
    def _connect_rate_limit(cls, value: int) -> int:
        if value < 0:
            raise ValueError("PDAUTH_CONNECT_RATE_LIMIT must be 0 (off) or a positive number")
        return value

    @field_validator("admin_password")
    @classmethod
    def _admin_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 12:
            raise ValueError("PDAUTH_ADMIN_PASSWORD must be at least 12 characters")
        return value

    @field_validator("http_timeout", "webhook_timeout")
    @classmethod
    def _timeout(cls, value: float, info: ValidationInfo) -> float:
        # Short: a token exchange must finish while its code lives, and the keeper must not
        # hang on a slow webhook receiver (a retry comes soon enough).
        if not (0 < value <= _MAX_HTTP_TIMEOUT):
            name = _field(info)
            why = " (PagerDuty authorization codes live 30 s)" if name == "http_timeout" else ""
            raise ValueError(
                f"{_env(name)} must be more than 0 and at most {_MAX_HTTP_TIMEOUT:g} seconds{why}"
            )
        return value

    @model_validator(mode="after")
    def _lease_outlives_request(self) -> Settings:
        # A refresh lease that expires mid-request would let a second worker refresh with the
        # same (rotating) refresh token.
        if self.lease_seconds <= self.http_timeout:
            raise ValueError(
                f"PDAUTH_LEASE_SECONDS ({self.lease_seconds:g}) must be greater than "
                f"PDAUTH_HTTP_TIMEOUT ({self.http_timeout:g})"
            )
        return self

    @model_validator(mode="after")
    def _basic_needs_a_secret(self) -> Settings:
        # HTTP Basic authenticates with the client secret; a public client has none to send.
        basic = self.token_auth_method == "client_secret_basic"  # noqa: S105 - not a password
        if basic and self.client_secret is None:
            raise ValueError(
                "PDAUTH_TOKEN_AUTH_METHOD=client_secret_basic needs PDAUTH_CLIENT_SECRET "
                "(a public client sends only its client id)"
            )
        return self

    @field_validator("lease_seconds", "keeper_interval", "refresh_horizon")
    @classmethod
    def _positive_seconds(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{_env(_field(info))} must be a positive number of seconds")
        return value

    @model_validator(mode="after")
    def _webhook_is_signed(self) -> Settings:
        # An unsigned webhook would let anyone who can reach the host app forge events.
        if self.webhook_url is not None and self.webhook_secret is None:
            raise ValueError("PDAUTH_WEBHOOK_URL is set: PDAUTH_WEBHOOK_SECRET is required too")
        return self

    # -- derived values -------------------------------------------------------------------

    def key_ring(self) -> KeyRing:
        """The key ring parsed from PDAUTH_ENCRYPTION_KEYS (first key encrypts)."""
        return KeyRing.from_config(self.encryption_keys.get_secret_value())

    def api_key_list(self) -> tuple[SecretStr, ...]:
        """The JSON API keys from PDAUTH_API_KEYS (comma-separated), still masked."""
        if self.api_keys is None:
            return ()
        return tuple(SecretStr(key) for key in _split_api_keys(self.api_keys))

    @property
    def authorize_endpoint(self) -> str:
        """Where the browser is sent to consent (RFC 6749 §3.1)."""
        return self.authorize_url or self.identity_url + _AUTHORIZE_PATH

    @property
    def token_endpoint(self) -> str:
        """Where codes and refresh tokens are exchanged (RFC 6749 §3.2)."""
        return self.token_url or self.identity_url + _TOKEN_PATH

    @property
    def jwks_endpoint(self) -> str:
        """The identity service's signing keys, for id_token verification."""
        return self.jwks_url or self.identity_url + _JWKS_PATH

    @property
    def discovery_endpoint(self) -> str:
        """The identity service's OIDC discovery document (``PDAUTH_DISCOVERY_URL`` or
        PagerDuty's path under the identity URL)."""
        return self.discovery_url or self.identity_url + _DISCOVERY_PATH

    @property
    def revocation_endpoint(self) -> str | None:
        """RFC 7009 revocation endpoint; None unless configured (PagerDuty documents none)."""
        return self.revoke_url

    @property
    def api_base_urls(self) -> dict[str, str]:
        """REST API base URL per region, keyed ``"us"`` and ``"eu"``."""
        return {"us": self.api_url, "eu": self.api_url_eu}

    @field_serializer("database_url", "redis_url")
    def _serialize_masked(self, value: str | None) -> str | None:
        # Dumps are for display and diagnostics, like repr; SecretStr fields are masked too.
        return None if value is None else mask_credentials(value)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # SecretStr masks the secrets; these two are plain strings that may embed a password.
        for name, value in super().__repr_args__():
            if name in ("database_url", "redis_url") and isinstance(value, str):
                yield name, mask_credentials(value)
            else:
                yield name, value


def _field(info: ValidationInfo) -> str:
    return cast(str, info.field_name)


def _apply_rule(rule: Callable[[str], object], value: str) -> None:
    """Check ``value`` with another module's ``rule``: its ConfigurationError becomes this
    field's error, message only (``from None``: no chained exception rides along)."""
    try:
        rule(value)
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None


def _split_api_keys(value: SecretStr) -> list[str]:
    return [key.strip() for key in value.get_secret_value().split(",") if key.strip()]


def _values_from(settings_cls: type[Settings], env: Mapping[str, str]) -> dict[str, Any]:
    """Pick the PDAUTH_ variables for our fields; exact upper-case names win over other cases."""
    by_name: dict[str, str] = {}
    for key, value in env.items():
        upper = key.upper()
        if upper.startswith(ENV_PREFIX) and (upper not in by_name or key == upper):
            by_name[upper] = value
    return {
        field: by_name[_env(field)] for field in settings_cls.model_fields if _env(field) in by_name
    }


def unknown_variables(env: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """The ``PDAUTH_*`` variables in ``env`` (default ``os.environ``) that are not settings.

    Each comes with the setting it most likely meant, or None: ``PDAUTH_CLIENTID=x`` gives
    ``("PDAUTH_CLIENTID", "PDAUTH_CLIENT_ID")``. Only names, never values. :meth:`Settings.from_env`
    logs one warning per entry; ``pdauth doctor`` lists them.
    """
    known = [_env(field) for field in Settings.model_fields]
    return unknown_names(os.environ if env is None else env, known)


def _warn_unknown(env: Mapping[str, str]) -> None:
    for name, closest in unknown_variables(env):
        hint = f" (did you mean {closest}?)" if closest else ""
        log.warning("%s is not a pdauth setting and is ignored%s", name, hint)
