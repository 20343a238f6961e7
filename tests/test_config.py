"""Settings: defaults, derived endpoints, URL rules, env parsing, and secrets kept out of text."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from pdauth.config import Settings, unknown_variables
from pdauth.errors import ConfigurationError

KEY_MATERIAL_B64 = base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=").decode("ascii")
OLD_KEY_MATERIAL_B64 = base64.urlsafe_b64encode(bytes(range(64, 96))).rstrip(b"=").decode("ascii")
REQUIRED = {
    "PDAUTH_CLIENT_ID": "client-123",
    "PDAUTH_REDIRECT_URI": "https://app.example.com/pagerduty/callback",
    "PDAUTH_ENCRYPTION_KEYS": f"k1:{KEY_MATERIAL_B64}",
}

URL_FIELDS = [
    "PDAUTH_REDIRECT_URI",
    "PDAUTH_IDENTITY_URL",
    "PDAUTH_AUTHORIZE_URL",
    "PDAUTH_TOKEN_URL",
    "PDAUTH_REVOKE_URL",
    "PDAUTH_JWKS_URL",
    "PDAUTH_DISCOVERY_URL",
    "PDAUTH_ISSUER",
    "PDAUTH_API_URL",
    "PDAUTH_API_URL_EU",
    "PDAUTH_PUBLIC_URL",
]

# Canary secrets: none of these may ever show up in a repr, str or error message.
CANARY_CLIENT_SECRET = "canary-client-secret-7f3a"
CANARY_SESSION_SECRET = "canary-session-secret-0123456789abcdef"
CANARY_API_KEYS = "canary-api-key-one,canary-api-key-two"
CANARY_DB_PASSWORD = "canary-db-password"
CANARY_REDIS_PASSWORD = "canary-redis-password"
CANARIES = [
    CANARY_CLIENT_SECRET,
    CANARY_SESSION_SECRET,
    "canary-api-key-one",
    "canary-api-key-two",
    CANARY_DB_PASSWORD,
    CANARY_REDIS_PASSWORD,
    KEY_MATERIAL_B64,
    OLD_KEY_MATERIAL_B64,
]


def env(**changes: str) -> dict[str, str]:
    """The required variables plus ``changes`` (keys without the PDAUTH_ prefix)."""
    return {**REQUIRED, **{f"PDAUTH_{name.upper()}": value for name, value in changes.items()}}


def configuration_error(values: dict[str, str], **overrides: Any) -> str:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(values, **overrides)
    # Nothing rides along: pydantic's ValidationError holds the raw inputs.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    return str(caught.value)


def secret_laden_env() -> dict[str, str]:
    return env(
        client_secret=CANARY_CLIENT_SECRET,
        session_secret=CANARY_SESSION_SECRET,
        api_keys=CANARY_API_KEYS,
        encryption_keys=f"k2:{KEY_MATERIAL_B64},k1:{OLD_KEY_MATERIAL_B64}",
        database_url=f"postgresql+psycopg://pdauth:{CANARY_DB_PASSWORD}@db.internal:5432/pdauth",
        redis_url=f"redis://:{CANARY_REDIS_PASSWORD}@cache.internal:6379/0",
    )


# -- defaults and derived values -----------------------------------------------------------


def test_defaults_and_derived_endpoints() -> None:
    settings = Settings.from_env(REQUIRED)
    assert settings.client_id == "client-123"
    assert settings.client_secret is None
    assert settings.redirect_uri == "https://app.example.com/pagerduty/callback"
    assert settings.scopes == ("read",)
    assert settings.app_kind == "classic"
    assert settings.database_url == "sqlite:///./pdauth.db"
    assert settings.session_secret is None
    assert settings.identity_url == "https://identity.pagerduty.com"
    assert settings.authorize_endpoint == "https://identity.pagerduty.com/oauth/authorize"
    assert settings.token_endpoint == "https://identity.pagerduty.com/oauth/token"
    assert settings.jwks_endpoint == ("https://identity.pagerduty.com/global/oauth/anonymous/jwks")
    assert settings.discovery_endpoint == (
        "https://identity.pagerduty.com/global/oauth/anonymous/.well-known/openid-configuration"
    )
    assert settings.revocation_endpoint is None
    assert settings.issuer is None
    assert settings.api_url == "https://api.pagerduty.com"
    assert settings.api_url_eu == "https://api.eu.pagerduty.com"
    assert settings.api_base_urls == {
        "us": "https://api.pagerduty.com",
        "eu": "https://api.eu.pagerduty.com",
    }
    assert settings.api_keys is None
    assert settings.api_key_list() == ()
    assert settings.redis_url is None
    assert settings.http_timeout == 10.0
    assert settings.lease_seconds == 30.0
    assert settings.log_level == "INFO"
    assert settings.log_format == "text"
    assert settings.redis_prefix == "pdauth:"
    assert settings.metrics_token is None
    assert settings.token_auth_method == "client_secret_post"
    assert settings.discovery_url is None


def test_key_ring_comes_from_the_encryption_keys() -> None:
    settings = Settings.from_env(
        env(encryption_keys=f"k2:{KEY_MATERIAL_B64},k1:{OLD_KEY_MATERIAL_B64}")
    )
    ring = settings.key_ring()
    assert ring.primary_key_id == "k2"
    assert ring.key_ids == ("k2", "k1")


@pytest.mark.parametrize(
    ("name", "value", "attribute", "expected"),
    [
        ("client_id", "other-client", "client_id", "other-client"),
        (
            "redirect_uri",
            "https://b.example/cb?tenant=1",
            "redirect_uri",
            "https://b.example/cb?tenant=1",
        ),
        ("scopes", "incidents.read users.read", "scopes", ("incidents.read", "users.read")),
        ("app_kind", "scoped", "app_kind", "scoped"),
        ("app_kind", "Scoped", "app_kind", "scoped"),
        (
            "database_url",
            "postgresql+psycopg://db/pdauth",
            "database_url",
            "postgresql+psycopg://db/pdauth",
        ),
        ("identity_url", "https://id.example.com", "identity_url", "https://id.example.com"),
        (
            "authorize_url",
            "https://a.example/authorize",
            "authorize_url",
            "https://a.example/authorize",
        ),
        ("token_url", "https://a.example/token", "token_url", "https://a.example/token"),
        ("revoke_url", "https://a.example/revoke", "revoke_url", "https://a.example/revoke"),
        ("jwks_url", "https://a.example/jwks", "jwks_url", "https://a.example/jwks"),
        ("issuer", "https://a.example/issuer", "issuer", "https://a.example/issuer"),
        ("api_url", "https://api.example.com", "api_url", "https://api.example.com"),
        ("api_url_eu", "https://api.eu.example.com", "api_url_eu", "https://api.eu.example.com"),
        ("redis_url", "redis://cache:6379/0", "redis_url", "redis://cache:6379/0"),
        ("redis_url", "rediss://cache:6380/0", "redis_url", "rediss://cache:6380/0"),
        ("http_timeout", "5", "http_timeout", 5.0),
        ("http_timeout", "25", "http_timeout", 25.0),
        ("lease_seconds", "60.5", "lease_seconds", 60.5),
        ("log_level", "debug", "log_level", "DEBUG"),
        ("log_format", "json", "log_format", "json"),
    ],
)
def test_each_override(name: str, value: str, attribute: str, expected: object) -> None:
    settings = Settings.from_env(env(**{name: value}))
    assert getattr(settings, attribute) == expected


def test_secret_overrides_are_kept_masked() -> None:
    settings = Settings.from_env(secret_laden_env())
    assert isinstance(settings.client_secret, SecretStr)
    assert settings.client_secret.get_secret_value() == CANARY_CLIENT_SECRET
    assert settings.session_secret is not None
    assert settings.session_secret.get_secret_value() == CANARY_SESSION_SECRET
    assert [key.get_secret_value() for key in settings.api_key_list()] == [
        "canary-api-key-one",
        "canary-api-key-two",
    ]
    assert settings.database_url.endswith(f"{CANARY_DB_PASSWORD}@db.internal:5432/pdauth")


def test_endpoint_overrides_win_over_identity_url() -> None:
    settings = Settings.from_env(
        env(
            identity_url="http://127.0.0.1:9000/identity/",
            authorize_url="https://login.example.com/authorize",
            token_url="https://login.example.com/token",
            jwks_url="https://login.example.com/jwks",
            revoke_url="https://login.example.com/revoke",
        )
    )
    assert settings.identity_url == "http://127.0.0.1:9000/identity"
    assert settings.authorize_endpoint == "https://login.example.com/authorize"
    assert settings.token_endpoint == "https://login.example.com/token"
    assert settings.jwks_endpoint == "https://login.example.com/jwks"
    assert settings.revocation_endpoint == "https://login.example.com/revoke"
    assert settings.discovery_endpoint == (
        "http://127.0.0.1:9000/identity/global/oauth/anonymous/.well-known/openid-configuration"
    )


def test_identity_url_moves_every_derived_endpoint() -> None:
    settings = Settings.from_env(env(identity_url="http://localhost:8080"))
    assert settings.authorize_endpoint == "http://localhost:8080/oauth/authorize"
    assert settings.token_endpoint == "http://localhost:8080/oauth/token"
    assert settings.jwks_endpoint == "http://localhost:8080/global/oauth/anonymous/jwks"


@pytest.mark.parametrize("name", ["identity_url", "api_url", "api_url_eu"])
def test_trailing_slashes_on_base_urls_are_dropped(name: str) -> None:
    settings = Settings.from_env(env(**{name: "https://host.example.com/base//"}))
    assert getattr(settings, name) == "https://host.example.com/base"


@pytest.mark.parametrize("name", ["redirect_uri", "token_url", "issuer"])
def test_full_urls_are_kept_exactly(name: str) -> None:
    # The issuer is compared byte for byte and the redirect URI must equal the registered one.
    settings = Settings.from_env(env(**{name: "https://host.example.com/path/"}))
    assert getattr(settings, name) == "https://host.example.com/path/"


def test_api_base_urls_follow_overrides() -> None:
    settings = Settings.from_env(
        env(api_url="http://127.0.0.1:9001", api_url_eu="http://127.0.0.1:9002")
    )
    assert settings.api_base_urls == {"us": "http://127.0.0.1:9001", "eu": "http://127.0.0.1:9002"}


# -- URL rules -----------------------------------------------------------------------------


@pytest.mark.parametrize("variable", URL_FIELDS)
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/cb",
        "http://127.9.8.7/cb",
        "http://[::1]:8000/cb",
        "http://localhost:8000/cb",
        "http://LOCALHOST/cb",
        "https://public.example.com/cb",
    ],
)
def test_https_or_loopback_http_is_accepted(variable: str, url: str) -> None:
    settings = Settings.from_env({**REQUIRED, variable: url})
    assert getattr(settings, variable.removeprefix("PDAUTH_").lower()) == url


@pytest.mark.parametrize("variable", URL_FIELDS)
@pytest.mark.parametrize(
    "url",
    [
        "http://public.example.com/cb",
        "http://0.0.0.0:8000/cb",
        "http://10.0.0.1/cb",
        "http://[::ffff:8.8.8.8]/cb",
        "http://localhost.evil.example/cb",
        "http://127.0.0.1.nip.io/cb",
    ],
)
def test_http_on_a_public_host_is_refused(variable: str, url: str) -> None:
    message = configuration_error({**REQUIRED, variable: url})
    assert f"{variable} must use https" in message


@pytest.mark.parametrize("variable", URL_FIELDS)
@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("/relative/callback", "absolute https:// URL"),
        ("public.example.com/cb", "absolute https:// URL"),
        ("https:///no-host", "absolute https:// URL"),
        ("ftp://files.example.com/cb", "absolute https:// URL"),
        ("javascript:alert(1)", "absolute https:// URL"),
        ("https://user:pw@example.com/cb", "user name or password"),
        ("https://user@example.com/cb", "user name or password"),
        ("https://example.com/cb#frag", "fragment"),
        ("https://example.com/cb#", "fragment"),
        ("https://exa mple.com/cb", "spaces or control characters"),
        ("https://example.com/c\tb", "spaces or control characters"),
        ("https://example.com:99999/cb", "malformed host or port"),
        ("https://example.com:port/cb", "malformed host or port"),
        ("https://[::1/cb", "malformed host or port"),
    ],
)
def test_malformed_urls_are_refused(variable: str, url: str, complaint: str) -> None:
    message = configuration_error({**REQUIRED, variable: url})
    assert variable in message
    assert complaint in message


@pytest.mark.parametrize("variable", [v for v in URL_FIELDS if v != "PDAUTH_REDIRECT_URI"])
@pytest.mark.parametrize("url", ["https://example.com/x?a=1", "https://example.com/x?"])
def test_queries_are_refused_except_on_the_redirect_uri(variable: str, url: str) -> None:
    message = configuration_error({**REQUIRED, variable: url})
    assert f"{variable} must not contain a query" in message


def test_redirect_uri_may_carry_a_query() -> None:
    settings = Settings.from_env(env(redirect_uri="https://app.example.com/cb?tenant=a"))
    assert settings.redirect_uri == "https://app.example.com/cb?tenant=a"


def test_base_urls_lose_a_trailing_slash_and_the_others_keep_it() -> None:
    settings = Settings.from_env(
        env(
            public_url="https://app.example.com/pdauth/",
            api_url="https://api.example.com/",
            token_url="https://identity.example.com/oauth/token/",
            redirect_uri="https://app.example.com/cb/",
        )
    )
    assert settings.public_url == "https://app.example.com/pdauth"
    assert settings.api_url == "https://api.example.com"
    assert settings.token_url == "https://identity.example.com/oauth/token/"
    assert settings.redirect_uri == "https://app.example.com/cb/"


def test_surrounding_whitespace_is_stripped() -> None:
    settings = Settings.from_env(
        env(
            client_id="  client-123\n",
            redirect_uri=" https://app.example.com/cb\n",
            client_secret=f"{CANARY_CLIENT_SECRET}\n",
        )
    )
    assert settings.client_id == "client-123"
    assert settings.redirect_uri == "https://app.example.com/cb"
    assert settings.client_secret is not None
    assert settings.client_secret.get_secret_value() == CANARY_CLIENT_SECRET


# -- required values and parsing -----------------------------------------------------------


def test_missing_required_values_are_each_named() -> None:
    message = configuration_error({})
    assert "PDAUTH_CLIENT_ID is required" in message
    assert "PDAUTH_REDIRECT_URI is required" in message
    assert "PDAUTH_ENCRYPTION_KEYS is required" in message


@pytest.mark.parametrize(
    "variable", ["PDAUTH_CLIENT_ID", "PDAUTH_REDIRECT_URI", "PDAUTH_ENCRYPTION_KEYS"]
)
def test_each_required_value_is_required(variable: str) -> None:
    values = {k: v for k, v in REQUIRED.items() if k != variable}
    message = configuration_error(values)
    assert f"{variable} is required" in message
    assert message.count("is required") == 1


@pytest.mark.parametrize("variable", ["PDAUTH_CLIENT_ID", "PDAUTH_DATABASE_URL"])
def test_empty_required_text_is_refused(variable: str) -> None:
    message = configuration_error({**REQUIRED, variable: "   "})
    assert f"{variable} must not be empty" in message


@pytest.mark.parametrize(
    "value",
    ["read write", "read,write", "read, write", " read\twrite ,", "read write read"],
)
def test_scopes_are_space_or_comma_separated(value: str) -> None:
    assert Settings.from_env(env(scopes=value)).scopes == ("read", "write")


@pytest.mark.parametrize("value", ["", " , ", '["read", "write"]', 'read "write"', "read\\write"])
def test_malformed_or_empty_scopes_are_refused(value: str) -> None:
    message = configuration_error(env(scopes=value))
    assert "PDAUTH_SCOPES" in message


def test_scopes_from_the_process_environment_without_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Direct construction goes through pydantic-settings' own environment source.
    monkeypatch.setenv("PDAUTH_SCOPES", "read write")
    monkeypatch.setenv("PDAUTH_CLIENT_SECRET", CANARY_CLIENT_SECRET)
    settings = Settings(
        client_id="c",
        redirect_uri="https://app.example.com/cb",
        encryption_keys=SecretStr(REQUIRED["PDAUTH_ENCRYPTION_KEYS"]),
    )
    assert settings.scopes == ("read", "write")
    assert settings.client_secret is not None


def test_direct_construction_with_python_values() -> None:
    settings = Settings(
        client_id="c",
        redirect_uri="http://127.0.0.1:8000/cb",
        encryption_keys=SecretStr(REQUIRED["PDAUTH_ENCRYPTION_KEYS"]),
        scopes=("openid", "read"),
        http_timeout=3,
        lease_seconds=9,
    )
    assert settings.scopes == ("openid", "read")
    assert settings.http_timeout == 3.0


def test_from_env_reads_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PDAUTH_SCOPES", "read,write")
    monkeypatch.setenv("PDAUTH_SOMETHING_ELSE", "ignored")
    settings = Settings.from_env()
    assert settings.client_id == "client-123"
    assert settings.scopes == ("read", "write")


def test_from_env_with_a_mapping_ignores_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PDAUTH_CLIENT_ID", "from-os-environ")
    monkeypatch.setenv("PDAUTH_SCOPES", "write")
    settings = Settings.from_env({**REQUIRED, "PDAUTH_CLIENT_ID": "from-mapping"})
    assert settings.client_id == "from-mapping"
    assert settings.scopes == ("read",)
    assert "PDAUTH_CLIENT_ID is required" in configuration_error(
        {k: v for k, v in REQUIRED.items() if k != "PDAUTH_CLIENT_ID"}
    )


def test_no_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("PDAUTH_CLIENT_ID=from-dotenv\nPDAUTH_SCOPES=write\n")
    monkeypatch.chdir(tmp_path)
    assert "PDAUTH_CLIENT_ID is required" in configuration_error(
        {k: v for k, v in REQUIRED.items() if k != "PDAUTH_CLIENT_ID"}
    )
    settings = Settings(
        client_id="c",
        redirect_uri="https://app.example.com/cb",
        encryption_keys=SecretStr(REQUIRED["PDAUTH_ENCRYPTION_KEYS"]),
    )
    assert settings.scopes == ("read",)


def test_overrides_win_over_the_mapping() -> None:
    settings = Settings.from_env(
        {**REQUIRED, "PDAUTH_SCOPES": "read"}, client_id="override", scopes=("write", "openid")
    )
    assert settings.client_id == "override"
    assert settings.scopes == ("write", "openid")


def test_unknown_override_is_a_configuration_error() -> None:
    assert "'no_such_setting' is not a pdauth setting" in configuration_error(
        REQUIRED, no_such_setting="x"
    )


def test_variable_names_match_without_regard_to_case() -> None:
    settings = Settings.from_env(
        {**REQUIRED, "pdauth_log_level": "warning", "PDAUTH_LOG_FORMAT": "json"}
    )
    assert settings.log_level == "WARNING"
    assert settings.log_format == "json"
    settings = Settings.from_env(
        {**REQUIRED, "pdauth_client_id": "lower", "PDAUTH_CLIENT_ID": "upper"}
    )
    assert settings.client_id == "upper"


@pytest.mark.parametrize("name", ["redis_url", "token_url", "issuer", "session_secret", "api_keys"])
def test_empty_optional_values_mean_unset(name: str) -> None:
    assert getattr(Settings.from_env(env(**{name: ""})), name) is None


def test_api_keys_of_only_separators_mean_unset() -> None:
    settings = Settings.from_env(env(api_keys=" , ,"))
    assert settings.api_keys is None
    assert settings.api_key_list() == ()


def test_empty_client_secret_is_refused() -> None:
    # Silently becoming a public client would be a downgrade.
    message = configuration_error(env(client_secret="  "))
    assert "PDAUTH_CLIENT_SECRET is set but empty" in message


def test_short_session_secret_is_refused() -> None:
    message = configuration_error(env(session_secret="canary-too-short"))
    assert "PDAUTH_SESSION_SECRET must be at least 32 characters" in message
    assert "canary-too-short" not in message


@pytest.mark.parametrize("value", ["http://cache:6379", "cache:6379", "memcached://cache"])
def test_redis_url_must_be_a_redis_url(value: str) -> None:
    assert "PDAUTH_REDIS_URL must be a redis://" in configuration_error(env(redis_url=value))


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("app_kind", "private", "PDAUTH_APP_KIND is invalid"),
        ("log_format", "xml", "PDAUTH_LOG_FORMAT is invalid"),
        ("log_level", "verbose", "PDAUTH_LOG_LEVEL must be one of"),
        ("http_timeout", "soon", "PDAUTH_HTTP_TIMEOUT is invalid"),
        ("http_timeout", "0", "PDAUTH_HTTP_TIMEOUT must be more than 0 and at most 25"),
        ("http_timeout", "-1", "PDAUTH_HTTP_TIMEOUT must be more than 0 and at most 25"),
        ("http_timeout", "25.5", "PDAUTH_HTTP_TIMEOUT must be more than 0 and at most 25"),
        ("http_timeout", "nan", "PDAUTH_HTTP_TIMEOUT must be more than 0 and at most 25"),
        ("http_timeout", "inf", "PDAUTH_HTTP_TIMEOUT must be more than 0 and at most 25"),
        ("lease_seconds", "0", "PDAUTH_LEASE_SECONDS must be a positive number"),
        ("lease_seconds", "inf", "PDAUTH_LEASE_SECONDS must be a positive number"),
        ("lease_seconds", "nan", "PDAUTH_LEASE_SECONDS must be a positive number"),
        (
            "lease_seconds",
            "10",
            "PDAUTH_LEASE_SECONDS (10) must be greater than PDAUTH_HTTP_TIMEOUT (10)",
        ),
    ],
)
def test_invalid_values_are_named(name: str, value: str, complaint: str) -> None:
    assert complaint in configuration_error(env(**{name: value}))


def test_lease_must_outlast_the_http_timeout() -> None:
    message = configuration_error(env(http_timeout="20", lease_seconds="15"))
    assert "PDAUTH_LEASE_SECONDS (15) must be greater than PDAUTH_HTTP_TIMEOUT (20)" in message
    assert Settings.from_env(env(http_timeout="20", lease_seconds="20.5")).lease_seconds == 20.5


def test_all_problems_are_listed_at_once() -> None:
    message = configuration_error(
        {
            "PDAUTH_REDIRECT_URI": "http://public.example.com/cb",
            "PDAUTH_ENCRYPTION_KEYS": "k1:short",
            "PDAUTH_HTTP_TIMEOUT": "99",
        }
    )
    for expected in (
        "PDAUTH_CLIENT_ID is required",
        "PDAUTH_REDIRECT_URI must use https",
        "PDAUTH_ENCRYPTION_KEYS",
        "PDAUTH_HTTP_TIMEOUT must be more than 0",
    ):
        assert expected in message


def test_settings_are_frozen() -> None:
    settings = Settings.from_env(REQUIRED)
    with pytest.raises(ValidationError):
        settings.client_id = "changed"  # type: ignore[misc]


# -- secrets stay secret -------------------------------------------------------------------


def test_secrets_are_masked_in_repr_and_str() -> None:
    settings = Settings.from_env(secret_laden_env())
    texts = [repr(settings), str(settings), settings.model_dump_json(), repr(settings.key_ring())]
    for text in texts:
        for canary in CANARIES:
            assert canary not in text
    assert "postgresql+psycopg://pdauth:***@db.internal:5432/pdauth" in repr(settings)
    assert "redis://:***@cache.internal:6379/0" in repr(settings)
    assert "client-123" in repr(settings)


def test_dumps_mask_credentials_but_the_attributes_keep_them() -> None:
    settings = Settings.from_env(secret_laden_env())
    dumped = settings.model_dump()
    assert dumped["database_url"] == "postgresql+psycopg://pdauth:***@db.internal:5432/pdauth"
    assert dumped["redis_url"] == "redis://:***@cache.internal:6379/0"
    assert settings.redis_url == f"redis://:{CANARY_REDIS_PASSWORD}@cache.internal:6379/0"
    assert Settings.from_env(REQUIRED).model_dump()["redis_url"] is None


def test_wrongly_typed_overrides_are_named() -> None:
    message = configuration_error(REQUIRED, http_timeout=[1], client_secret=12345)
    assert "PDAUTH_HTTP_TIMEOUT is invalid" in message
    assert "PDAUTH_CLIENT_SECRET is invalid" in message
    assert "12345" not in message


def test_urls_without_a_password_are_shown_as_they_are() -> None:
    settings = Settings.from_env(
        env(database_url="postgresql+psycopg://pdauth@db/pdauth", redis_url="redis://cache:6379")
    )
    assert "postgresql+psycopg://pdauth@db/pdauth" in repr(settings)
    assert "redis://cache:6379" in repr(settings)


def test_secrets_are_absent_from_every_error_message() -> None:
    values = {
        **secret_laden_env(),
        # Invalid values around the secrets, and secrets that are themselves invalid.
        "PDAUTH_CLIENT_ID": "",
        "PDAUTH_REDIRECT_URI": "http://public.example.com/cb",
        "PDAUTH_SESSION_SECRET": "canary-short-session",
        "PDAUTH_ENCRYPTION_KEYS": f"k1:{KEY_MATERIAL_B64}x",
        "PDAUTH_REDIS_URL": f"http://:{CANARY_REDIS_PASSWORD}@cache",
        "PDAUTH_HTTP_TIMEOUT": "60",
    }
    message = configuration_error(values)
    for canary in [*CANARIES, "canary-short-session"]:
        assert canary not in message


def test_direct_construction_errors_do_not_echo_inputs() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(
            client_id="c",
            redirect_uri="https://app.example.com/cb",
            encryption_keys=SecretStr("canary-not-a-key-ring"),
            client_secret=SecretStr(" "),
        )
    text = str(caught.value)
    assert "PDAUTH_ENCRYPTION_KEYS" in text
    assert "canary-not-a-key-ring" not in text
    assert "input_value" not in text


@pytest.mark.parametrize(
    ("value", "secret_part"),
    [
        ("", None),
        ("not-a-key-ring", "not-a-key-ring"),
        (f"k1:{KEY_MATERIAL_B64[:20]}", KEY_MATERIAL_B64[:20]),
        (f"k1:{KEY_MATERIAL_B64}!", KEY_MATERIAL_B64),
        (f"k1:{KEY_MATERIAL_B64},k1:{OLD_KEY_MATERIAL_B64}", OLD_KEY_MATERIAL_B64),
        (json.dumps({"k1": KEY_MATERIAL_B64}), KEY_MATERIAL_B64),
    ],
)
def test_bad_encryption_keys_name_the_variable_not_the_value(
    value: str, secret_part: str | None
) -> None:
    message = configuration_error(env(encryption_keys=value))
    assert "PDAUTH_ENCRYPTION_KEYS" in message
    if secret_part is not None:
        assert secret_part not in message


# -- the keeper and its webhook (pdauth.keeper, pdauth.webhooks) ---------------------------

WEBHOOK_SECRET = "canary-webhook-secret-0123456789abcdef"


def test_keeper_settings_have_safe_defaults() -> None:
    settings = Settings.from_env(REQUIRED)
    assert settings.keeper_interval == 60.0
    assert settings.refresh_horizon is None
    assert settings.webhook_url is None
    assert settings.webhook_secret is None
    assert settings.webhook_timeout == 5.0


def test_keeper_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        env(
            webhook_url="https://app.example.com/hooks/pdauth?tenant=all",
            webhook_secret=WEBHOOK_SECRET,
            keeper_interval="30",
            refresh_horizon="86400",
            webhook_timeout="2.5",
        )
    )
    assert settings.webhook_url == "https://app.example.com/hooks/pdauth?tenant=all"
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == WEBHOOK_SECRET
    assert settings.keeper_interval == 30.0
    assert settings.refresh_horizon == 86400.0
    assert settings.webhook_timeout == 2.5
    assert WEBHOOK_SECRET not in repr(settings)
    assert WEBHOOK_SECRET not in str(settings.model_dump())


def test_empty_keeper_variables_mean_unset() -> None:
    settings = Settings.from_env(env(webhook_url="", webhook_secret="", refresh_horizon=""))
    assert settings.webhook_url is None
    assert settings.webhook_secret is None
    assert settings.refresh_horizon is None


def test_a_webhook_on_loopback_may_use_http() -> None:
    settings = Settings.from_env(
        env(webhook_url="http://127.0.0.1:9000/hooks", webhook_secret=WEBHOOK_SECRET)
    )
    assert settings.webhook_url == "http://127.0.0.1:9000/hooks"


@pytest.mark.parametrize(
    "url",
    [
        "http://app.example.com/hooks",
        "ftp://app.example.com/hooks",
        "https://user:pw@app.example.com/hooks",
        "https://app.example.com/hooks#frag",
        "/hooks",
    ],
)
def test_a_bad_webhook_url_names_the_variable(url: str) -> None:
    message = configuration_error(env(webhook_url=url, webhook_secret=WEBHOOK_SECRET))
    assert "PDAUTH_WEBHOOK_URL" in message
    assert WEBHOOK_SECRET not in message


def test_a_webhook_needs_a_secret() -> None:
    message = configuration_error(env(webhook_url="https://app.example.com/hooks"))
    assert "PDAUTH_WEBHOOK_SECRET is required" in message


def test_a_short_webhook_secret_is_refused_without_echoing_it() -> None:
    message = configuration_error(
        env(webhook_url="https://app.example.com/hooks", webhook_secret="canary-short")
    )
    assert "PDAUTH_WEBHOOK_SECRET must be at least 32 characters" in message
    assert "canary-short" not in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("keeper_interval", "0"),
        ("keeper_interval", "-5"),
        ("keeper_interval", "nan"),
        ("keeper_interval", "soon"),
        ("refresh_horizon", "0"),
        ("refresh_horizon", "inf"),
        ("webhook_timeout", "0"),
        ("webhook_timeout", "30"),
    ],
)
def test_bad_keeper_durations_name_the_variable(name: str, value: str) -> None:
    message = configuration_error(env(**{name: value}))
    assert f"PDAUTH_{name.upper()}" in message


# -- Redis prefix, metrics token, token endpoint authentication, discovery -----------------


@pytest.mark.parametrize("value", ["pdauth:", "tenant-a/pdauth:", "x", "{pd}:", "p" * 64])
def test_redis_prefix_is_kept(value: str) -> None:
    assert Settings.from_env(env(redis_prefix=value)).redis_prefix == value


@pytest.mark.parametrize("value", ["", "   ", "pd auth:", "pd\tauth", "pd\x00", "pdé:", "p" * 65])
def test_bad_redis_prefixes_are_refused(value: str) -> None:
    message = configuration_error(env(redis_prefix=value))
    assert "PDAUTH_REDIS_PREFIX" in message


def test_metrics_token_is_a_long_secret() -> None:
    token = "canary-metrics-token-0123456789abcdef"
    settings = Settings.from_env(env(metrics_token=token))
    assert settings.metrics_token is not None
    assert settings.metrics_token.get_secret_value() == token
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert token not in text
    assert Settings.from_env(env(metrics_token="")).metrics_token is None
    message = configuration_error(env(metrics_token="canary-short-metrics"))
    assert "PDAUTH_METRICS_TOKEN must be at least 32 characters" in message
    assert "canary-short-metrics" not in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("client_secret_post", "client_secret_post"),
        ("client_secret_basic", "client_secret_basic"),
        (" Client_Secret_Basic ", "client_secret_basic"),
    ],
)
def test_token_auth_method(value: str, expected: str) -> None:
    settings = Settings.from_env(env(token_auth_method=value, client_secret=CANARY_CLIENT_SECRET))
    assert settings.token_auth_method == expected


@pytest.mark.parametrize("value", ["basic", "private_key_jwt", "none", ""])
def test_unknown_token_auth_methods_are_refused(value: str) -> None:
    message = configuration_error(env(token_auth_method=value, client_secret=CANARY_CLIENT_SECRET))
    assert "PDAUTH_TOKEN_AUTH_METHOD is invalid" in message


def test_basic_authentication_needs_a_client_secret() -> None:
    message = configuration_error(env(token_auth_method="client_secret_basic"))
    assert "PDAUTH_TOKEN_AUTH_METHOD=client_secret_basic needs PDAUTH_CLIENT_SECRET" in message
    # A public client with the default method is fine.
    assert Settings.from_env(REQUIRED).token_auth_method == "client_secret_post"


def test_discovery_url_overrides_pagerdutys_path() -> None:
    url = "https://login.example.com/realms/x/.well-known/openid-configuration"
    settings = Settings.from_env(env(discovery_url=url))
    assert settings.discovery_url == url
    assert settings.discovery_endpoint == url
    assert Settings.from_env(env(discovery_url="")).discovery_endpoint == (
        "https://identity.pagerduty.com/global/oauth/anonymous/.well-known/openid-configuration"
    )


# -- configuration typos -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "closest"),
    [
        ("PDAUTH_CLIENTID", "PDAUTH_CLIENT_ID"),
        ("PDAUTH_CLIENT_SECERT", "PDAUTH_CLIENT_SECRET"),
        ("pdauth_redirect_url", "PDAUTH_REDIRECT_URI"),
        ("PDAUTH_SCOPE", "PDAUTH_SCOPES"),
        ("PDAUTH_DATABASE", "PDAUTH_DATABASE_URL"),
        ("PDAUTH_METRICS_TOKENS", "PDAUTH_METRICS_TOKEN"),
        ("PDAUTH_XYZZY", None),
    ],
)
def test_unknown_variables_name_the_closest_setting(name: str, closest: str | None) -> None:
    assert unknown_variables({**REQUIRED, name: "canary-value"}) == [(name, closest)]


def test_settings_and_other_variables_are_not_unknown() -> None:
    values = {
        **secret_laden_env(),
        "pdauth_log_level": "debug",  # a setting in another case
        "PDAUTH_TEST_PG_URL": "postgresql://x",  # the test suite's own
        "PDAUTH_OPENAPI_SCHEMA": "/x.json",
        "PDAUTH_PG_BINDIR": "/usr/bin",
        "HOME": "/root",
        "PDAUTHX": "1",
    }
    assert unknown_variables(values) == []


def test_unknown_variables_reads_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PDAUTH_CLIENTID", "x")
    assert ("PDAUTH_CLIENTID", "PDAUTH_CLIENT_ID") in unknown_variables()


def test_from_env_warns_once_per_unknown_variable(caplog: pytest.LogCaptureFixture) -> None:
    values = {
        **REQUIRED,
        "PDAUTH_CLIENTID": "canary-typo-value",
        "PDAUTH_XYZZY": "canary-other-value",
    }
    with caplog.at_level(logging.WARNING, logger="pdauth.config"):
        Settings.from_env(values)
    lines = [r.getMessage() for r in caplog.records if r.name == "pdauth.config"]
    assert lines == [
        "PDAUTH_CLIENTID is not a pdauth setting and is ignored (did you mean PDAUTH_CLIENT_ID?)",
        "PDAUTH_XYZZY is not a pdauth setting and is ignored",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    assert "canary" not in caplog.text


def test_a_typo_for_a_required_variable_is_warned_about_before_the_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    values = {k: v for k, v in REQUIRED.items() if k != "PDAUTH_CLIENT_ID"}
    with caplog.at_level(logging.WARNING, logger="pdauth.config"):
        message = configuration_error({**values, "PDAUTH_CLIENTID": "x"})
    assert "PDAUTH_CLIENT_ID is required" in message
    assert "did you mean PDAUTH_CLIENT_ID?" in caplog.text


def test_no_warning_without_unknown_variables(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="pdauth.config"):
        Settings.from_env(secret_laden_env())
    assert [r for r in caplog.records if r.name == "pdauth.config"] == []


def test_a_crafted_variable_name_cannot_forge_a_log_line() -> None:
    name = "PDAUTH_X\nCRITICAL forged"
    assert unknown_variables({name: "1"}) == [(ascii(name), None)]


@pytest.mark.parametrize(
    "value",
    [
        "read;drop",
        "read drop",
        "incidents.raed",
        "Incidents.read",
        "incidents.read.write",
        "incidents",
        "as_account-us.acme",
        "users:sessions:x.read",
        "read,openid,write;",
    ],
)
def test_scopes_outside_pagerdutys_grammar_are_refused(value: str) -> None:
    message = configuration_error(env(scopes=value))
    assert "PDAUTH_SCOPES holds a scope outside PagerDuty's grammar" in message


@pytest.mark.parametrize(
    "value",
    ["read", "write openid", "incidents.read users:sessions.write", "no_such.read teams.write"],
)
def test_scopes_inside_pagerdutys_grammar_are_kept(value: str) -> None:
    assert Settings.from_env(env(scopes=value)).scopes == tuple(value.split())


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("mysql://u:canary-db-pw@db/pdauth", "only sqlite:/// and postgresql+psycopg://"),
        ("oracle://db/x", "only sqlite:/// and postgresql+psycopg://"),
        ("./pdauth.db", "not a valid database URL"),
        ("pdauth.db", "not a valid database URL"),
        ("postgresql+asyncpg://db/pdauth", "PostgreSQL is supported via psycopg 3"),
        ("sqlite://", "in-memory SQLite"),
        ("sqlite:///:memory:", "in-memory SQLite"),
    ],
)
def test_unsupported_database_urls_are_refused(value: str, complaint: str) -> None:
    message = configuration_error(env(database_url=value))
    assert "PDAUTH_DATABASE_URL" in message
    assert complaint in message
    assert "canary-db-pw" not in message


@pytest.mark.parametrize(
    "value",
    [
        "sqlite:///./pdauth.db",
        "sqlite+pysqlite:////var/lib/pdauth/pdauth.db",
        "postgresql://pdauth@db/pdauth",
        "postgres://pdauth@db/pdauth",
        "postgresql+psycopg://pdauth:pw@db:5432/pdauth",
    ],
)
def test_supported_database_urls_are_kept_as_given(value: str) -> None:
    assert Settings.from_env(env(database_url=value)).database_url == value
