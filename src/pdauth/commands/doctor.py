"""``pdauth doctor``: check a deployment's configuration and dependencies, and say how to fix them.

One line per check, ``OK``, ``WARN``, ``FAIL`` or ``SKIP``, each problem with its fix in plain
words: the settings load (the missing or invalid ``PDAUTH_*`` variables named); a client secret
is present; endpoints use https (loopback http is fine for the emulator, not for production);
the redirect URI has a usable shape and lies where the service routes its callback (under
the public URL, the service's own rule); a session secret is set; the encryption keys parse and
the stored tokens decrypt (one sample connection per key id found — a row sealed under a key
the ring no longer holds is named with its key id); the database is reachable and migrated;
PagerDuty's identity service answers with its OIDC discovery document and a usable JWKS
(skipped with ``--offline``); Redis answers when ``PDAUTH_REDIS_URL`` is set; with
``PDAUTH_PAGERDUTY_EVENTS`` on, the receiver URL is https on a public-looking host. When the
settings do not load, the checks that can still run on the raw variables (keys, database,
Redis) run anyway. Nothing secret is printed: details are built here from names, ids, hosts and
error class names, never from values. Exit 0 when nothing FAILs, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import httpx
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pdauth.commands._common import DEFAULT_DATABASE_URL, Subcommands, add_command
from pdauth.commands._output import (
    EXIT_FAILURE,
    EXIT_OK,
    clean,
    print_json,
)
from pdauth.commands._runtime import Runtime, command_logging, current_runtime, run_async
from pdauth.config import Settings, unknown_variables
from pdauth.crypto import KeyRing
from pdauth.errors import ConfigurationError, CryptoError, KeyNotFoundError, StoreError
from pdauth.identity import usable_signing_keys
from pdauth.pagerduty_webhooks import receiver_verdict
from pdauth.sealing import Sealer, TokenColumn
from pdauth.service.core import ServiceOptions
from pdauth.store import ConnectionRow, Store
from pdauth.subscriptions import receiver_url

__all__ = ["Check", "add_doctor_command", "diagnose", "run_doctor"]

Status = Literal["OK", "WARN", "FAIL", "SKIP"]

MAX_DOCUMENT = 256 * 1024
IDENTITY_TIMEOUT = 10.0
REDIS_TIMEOUT = 3.0
_SAMPLE_SCAN = 1000


@dataclass(frozen=True)
class Check:
    """The result of one check. ``detail`` and ``fix`` never hold a secret value."""

    name: str
    status: Status
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def _raw(env: Mapping[str, str], name: str) -> str | None:
    """A variable as Settings would read it (exact upper-case name first), stripped; None if
    unset or blank."""
    value = env.get(name)
    if value is None:
        for key, candidate in env.items():
            if key.upper() == name:
                value = candidate
                break
    if value is None or not value.strip():
        return None
    return value.strip()


# -- the checks --------------------------------------------------------------------------------


@contextmanager
def _quiet_config_warnings() -> Iterator[None]:
    """Settings.from_env logs each unknown PDAUTH_* variable; doctor lists them as a check."""
    config_log = logging.getLogger("pdauth.config")
    level = config_log.level
    config_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        config_log.setLevel(level)


def _check_unknown_variables(env: Mapping[str, str]) -> Check:
    unknown = unknown_variables(env)
    if not unknown:
        return Check("variables", "OK", "every PDAUTH_* variable is a setting")
    parts = [f"{name} (did you mean {closest}?)" if closest else name for name, closest in unknown]
    return Check(
        "variables",
        "WARN",
        "not pdauth settings, ignored: " + ", ".join(parts),
        "rename or remove them (the README lists every PDAUTH_* setting)",
    )


def _check_settings(env: Mapping[str, str]) -> tuple[Check, Settings | None]:
    try:
        with _quiet_config_warnings():
            settings = Settings.from_env(env)
    except ConfigurationError as exc:
        return (
            Check(
                "settings",
                "FAIL",
                str(exc),
                "set or correct the PDAUTH_* variables named above (see the README)",
            ),
            None,
        )
    return Check("settings", "OK", "the PDAUTH_* settings load"), settings


def _check_client_secret(settings: Settings) -> Check:
    if settings.client_secret is None:
        return Check(
            "client secret",
            "WARN",
            "PDAUTH_CLIENT_SECRET is not set: pdauth acts as a public client (PKCE only)",
            "fine if the app is registered as a public client; PagerDuty Scoped apps and "
            "confidential Classic apps need PDAUTH_CLIENT_SECRET",
        )
    return Check("client secret", "OK", "PDAUTH_CLIENT_SECRET is set (confidential client)")


def _check_endpoints(settings: Settings) -> Check:
    endpoints = {
        "PDAUTH_IDENTITY_URL": settings.identity_url,
        "PDAUTH_API_URL": settings.api_url,
        "PDAUTH_API_URL_EU": settings.api_url_eu,
        "PDAUTH_AUTHORIZE_URL": settings.authorize_url,
        "PDAUTH_TOKEN_URL": settings.token_url,
        "PDAUTH_REVOKE_URL": settings.revoke_url,
        "PDAUTH_JWKS_URL": settings.jwks_url,
    }
    plain = [name for name, url in endpoints.items() if url is not None and url.startswith("http:")]
    if plain:
        return Check(
            "endpoints",
            "WARN",
            f"{', '.join(plain)} use http on a loopback host: fine for the emulator, not for "
            "production",
            "in production leave them unset (PagerDuty's https defaults) or use https URLs",
        )
    return Check("endpoints", "OK", "every PagerDuty endpoint uses https")


def _check_redirect_uri(settings: Settings) -> Check:
    uri = settings.redirect_uri
    parts = urlsplit(uri)
    shown = clean(uri)
    fix = "register and configure a redirect URI such as https://app.example.com/pdauth/callback"
    if parts.scheme not in ("https", "http"):
        return Check("redirect URI", "FAIL", f"{shown} is not an http(s) URL", fix)
    if parts.fragment or "#" in uri:
        return Check("redirect URI", "FAIL", f"{shown} has a fragment (#...)", fix)
    if parts.path in ("", "/"):
        return Check("redirect URI", "FAIL", f"{shown} has no path (e.g. /callback)", fix)
    try:
        # The service's own rule: it routes the callback at the redirect URI's path, which must
        # lie under the public URL; one rule, so doctor never passes what serve refuses.
        callback = ServiceOptions.from_settings(settings).callback_path
    except ConfigurationError as exc:
        return Check(
            "redirect URI",
            "FAIL",
            f"the service cannot serve {shown}: {exc}",
            "make PDAUTH_REDIRECT_URI the service's public URL (PDAUTH_PUBLIC_URL) followed by "
            "a callback path such as /callback, and register exactly that URI for the app",
        )
    shown = f"{shown} (the service answers it at {clean(callback)})"
    if parts.scheme == "http":
        return Check(
            "redirect URI",
            "OK",
            f"{shown} (loopback http: for `pdauth connect` and the emulator; a service that "
            "users reach in their browsers needs https)",
        )
    return Check("redirect URI", "OK", shown)


def _check_session_secret(settings: Settings) -> Check:
    if settings.session_secret is None:
        return Check(
            "session secret",
            "WARN",
            "PDAUTH_SESSION_SECRET is not set: the service signs its cookies with a "
            "per-process key (sessions break across several instances and restarts)",
            "set PDAUTH_SESSION_SECRET to 32+ random characters, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    return Check("session secret", "OK", "PDAUTH_SESSION_SECRET is set and long enough")


def _check_pagerduty_events(settings: Settings) -> Check:
    """PDAUTH_PAGERDUTY_EVENTS is on: PagerDuty must reach the receiver, over https."""
    status, detail = receiver_verdict(receiver_url(settings, "{key}"))
    fix = "set PDAUTH_PUBLIC_URL to the service's public https URL (PagerDuty must reach it)"
    return Check("PagerDuty events", cast(Status, status), detail, None if status == "OK" else fix)


def _check_keys(keys_text: str | None) -> tuple[Check, KeyRing | None]:
    if keys_text is None:
        return (
            Check(
                "encryption keys",
                "FAIL",
                "PDAUTH_ENCRYPTION_KEYS is not set",
                "generate a key with `pdauth keys generate` and set PDAUTH_ENCRYPTION_KEYS",
            ),
            None,
        )
    try:
        ring = KeyRing.from_config(keys_text)
    except ConfigurationError as exc:
        return (
            Check(
                "encryption keys",
                "FAIL",
                str(exc),
                "each entry is <key id>:<base64url 32-byte key>, comma-separated, newest "
                "first; generate one with `pdauth keys generate`",
            ),
            None,
        )
    ids = ", ".join(ring.key_ids)
    return (
        Check(
            "encryption keys",
            "OK",
            f"{len(ring.key_ids)} key(s): {ids} (primary {ring.primary_key_id})",
        ),
        ring,
    )


def _sqlite_file_missing(url: str) -> str | None:
    """The path of a SQLite database file that does not exist yet (opening would create it)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    path = parsed.database
    if path.startswith("file:") or path == ":memory:" or os.path.exists(path):
        return None
    return path


@contextmanager
def _open_store(url: str) -> Iterator[Store]:
    store = Store(url)
    try:
        yield store
    finally:
        store.dispose()


def _check_database(url: str) -> tuple[Check, bool]:
    """(check, usable): usable when reachable and migrated."""
    fix_upgrade = "run `pdauth db upgrade` (with the same PDAUTH_DATABASE_URL)"
    missing = _sqlite_file_missing(url)
    if missing is not None:
        return (
            Check(
                "database",
                "FAIL",
                f"the SQLite database file {clean(missing)} does not exist",
                fix_upgrade + ", or point PDAUTH_DATABASE_URL at the existing file",
            ),
            False,
        )
    try:
        with _open_store(url) as store:
            shown = store.url  # the password is masked
            revision = store.current_revision()
            current = store.is_up_to_date()
    except ConfigurationError as exc:
        return Check("database", "FAIL", str(exc), "correct PDAUTH_DATABASE_URL"), False
    except StoreError as exc:
        return (
            Check(
                "database",
                "FAIL",
                f"cannot use the database: {exc}",
                "check that the database server runs and that PDAUTH_DATABASE_URL names the "
                "right host, port, database and user",
            ),
            False,
        )
    if revision is None:
        return (
            Check("database", "FAIL", f"{shown} is reachable but has no schema", fix_upgrade),
            False,
        )
    if not current:
        return (
            Check(
                "database",
                "FAIL",
                f"{shown} is at schema revision {revision}, not the newest",
                fix_upgrade,
            ),
            False,
        )
    return Check("database", "OK", f"{shown} is reachable and migrated ({revision})"), True


def _sample_rows(store: Store, ring: KeyRing) -> list[ConnectionRow]:
    """One connection holding ciphertext per key id: the primary's, then each older key's."""
    samples: dict[str, ConnectionRow] = {}
    for row in store.rows_needing_reencryption(
        primary_key_id=ring.primary_key_id, limit=_SAMPLE_SCAN
    ):
        if row.key_id is not None:
            samples.setdefault(row.key_id, row)
    for row in store.list_connections(status="active", limit=_SAMPLE_SCAN):
        if row.key_id == ring.primary_key_id and _ciphertext(row) is not None:
            samples.setdefault(row.key_id, row)
            break
    return list(samples.values())


def _ciphertext(row: ConnectionRow) -> tuple[TokenColumn, str] | None:
    if row.access_token_ct is not None:
        return "access_token", row.access_token_ct
    if row.refresh_token_ct is not None:
        return "refresh_token", row.refresh_token_ct
    return None


def _check_stored_tokens(url: str, ring: KeyRing) -> Check:
    name = "stored tokens"
    try:
        with _open_store(url) as store:
            samples = _sample_rows(store, ring)
    except StoreError as exc:
        return Check(name, "FAIL", f"cannot read connections: {exc}", None)
    if not samples:
        return Check(name, "OK", "no stored tokens yet: nothing to decrypt")
    missing: list[str] = []
    old: list[str] = []
    for row in samples:
        found = _ciphertext(row)
        if found is None:
            continue
        column, ciphertext = found
        key_id = row.key_id or "?"
        try:
            Sealer(ring).open_token(row, column, ciphertext)  # the plaintext is dropped
        except KeyNotFoundError:
            missing.append(key_id)
            continue
        except CryptoError:
            return Check(
                name,
                "FAIL",
                f"connection {row.id}'s tokens (key id {key_id}) do not decrypt: the key "
                f"material configured for {key_id} is not the one that sealed them, or the row "
                "was altered",
                f"restore the original key material for {key_id} in PDAUTH_ENCRYPTION_KEYS",
            )
        if key_id != ring.primary_key_id:
            old.append(key_id)
    if missing:
        ids = ", ".join(sorted(missing))
        return Check(
            name,
            "FAIL",
            f"connections are encrypted under key id(s) {ids}, which PDAUTH_ENCRYPTION_KEYS "
            "no longer holds: their tokens cannot be used",
            f"add {ids} back to PDAUTH_ENCRYPTION_KEYS (after the primary) and run "
            "`pdauth keys rotate`; if the key is lost, those connections must reconnect",
        )
    if old:
        ids = ", ".join(sorted(old))
        return Check(
            name,
            "WARN",
            f"tokens decrypt, but some are still under older key id(s) {ids}",
            "run `pdauth keys rotate` to move them to the primary key",
        )
    primary = ring.primary_key_id
    return Check(name, "OK", f"a sample connection decrypts under primary key {primary}")


async def _check_identity(settings: Settings, transport: httpx.AsyncBaseTransport | None) -> Check:
    name = "identity service"
    fix = (
        "check the network path (proxy, firewall, DNS) to PagerDuty's identity service and "
        "PDAUTH_IDENTITY_URL / PDAUTH_DISCOVERY_URL / PDAUTH_JWKS_URL"
    )
    timeout = min(settings.http_timeout, IDENTITY_TIMEOUT)
    async with httpx.AsyncClient(
        transport=transport, timeout=httpx.Timeout(timeout), follow_redirects=False
    ) as http:
        discovery, problem = await _fetch_json(http, settings.discovery_endpoint)
        if problem is not None:
            return Check(name, "FAIL", f"OIDC discovery: {problem}", fix)
        issuer = discovery.get("issuer") if isinstance(discovery, dict) else None
        if not isinstance(issuer, str) or not issuer:
            return Check(name, "FAIL", "the OIDC discovery document names no issuer", fix)
        jwks, problem = await _fetch_json(http, settings.jwks_endpoint)
        if problem is not None:
            return Check(name, "FAIL", f"JWKS: {problem}", fix)
    usable = len(usable_signing_keys(jwks))
    if usable == 0:
        return Check(
            name, "FAIL", f"the JWKS at {settings.jwks_endpoint} has no usable RS256 key", fix
        )
    return Check(
        name,
        "OK",
        f"discovery (issuer {clean(issuer)[:200]}) and JWKS ({usable} signing key(s)) fetched "
        f"from {settings.identity_url}",
    )


async def _fetch_json(http: httpx.AsyncClient, url: str) -> tuple[Any, str | None]:
    try:
        response = await http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        return None, f"cannot reach {url} ({type(exc).__name__})"
    if response.status_code != 200:
        return None, f"{url} answered HTTP {response.status_code}"
    if len(response.content) > MAX_DOCUMENT:
        return None, f"{url} answered a document that is too large"
    try:
        return json.loads(response.content), None
    except (ValueError, RecursionError):
        return None, f"{url} did not answer JSON"


def _check_redis(redis_url: str | None) -> Check:
    if redis_url is None:
        return Check(
            "redis",
            "SKIP",
            "PDAUTH_REDIS_URL is not set (rate-limit pacing and connect-session replay "
            "protection stay per process)",
        )
    import redis

    parts = urlsplit(redis_url)
    where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
    client = redis.Redis.from_url(
        redis_url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT
    )
    try:
        client.ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        return Check(
            "redis",
            "FAIL",
            f"cannot reach Redis at {clean(where)} ({type(exc).__name__})",
            "start Redis or correct PDAUTH_REDIS_URL (host, port, password, TLS)",
        )
    finally:
        client.close()
    return Check("redis", "OK", f"Redis at {clean(where)} answers")


def diagnose(env: Mapping[str, str], *, offline: bool, runtime: Runtime) -> list[Check]:
    """Run every check on ``env``; see the module docstring."""
    settings_check, settings = _check_settings(env)
    checks = [settings_check, _check_unknown_variables(env)]
    skipped = "needs settings that load"
    if settings is not None:
        checks += [
            _check_client_secret(settings),
            _check_endpoints(settings),
            _check_redirect_uri(settings),
            _check_session_secret(settings),
        ]
        if settings.pagerduty_events:
            checks.append(_check_pagerduty_events(settings))
        keys_text: str | None = settings.encryption_keys.get_secret_value()
        database_url = settings.database_url
        redis_url = settings.redis_url
    else:
        checks += [
            Check(name, "SKIP", skipped)
            for name in ("client secret", "endpoints", "redirect URI", "session secret")
        ]
        keys_text = _raw(env, "PDAUTH_ENCRYPTION_KEYS")
        database_url = _raw(env, "PDAUTH_DATABASE_URL") or DEFAULT_DATABASE_URL
        redis_url = _raw(env, "PDAUTH_REDIS_URL")
    keys_check, ring = _check_keys(keys_text)
    database_check, database_ok = _check_database(database_url)
    checks += [keys_check, database_check]
    if ring is not None and database_ok:
        checks.append(_check_stored_tokens(database_url, ring))
    else:
        checks.append(Check("stored tokens", "SKIP", "needs working keys and database"))
    if offline:
        checks.append(Check("identity service", "SKIP", "skipped (--offline)"))
    elif settings is None:
        checks.append(Check("identity service", "SKIP", skipped))
    else:
        ready = settings
        checks.append(run_async(lambda: _check_identity(ready, runtime.transport)))
    checks.append(_check_redis(redis_url))
    return checks


# -- command line ------------------------------------------------------------------------------


def add_doctor_command(sub: Subcommands) -> None:
    """Register ``pdauth doctor``."""
    parser = add_command(
        sub,
        "doctor",
        "check settings, keys, database, PagerDuty's identity service and Redis",
        "doctor exits 0 when no check FAILs (warnings allowed) and 1 otherwise; 2 only "
        "for bad arguments.",
        description="Check this deployment: PDAUTH_* settings, secrets, endpoints, redirect "
        "URI, encryption keys (a sample stored token decrypts), database (reachable, "
        "migrated), PagerDuty's identity service (discovery + JWKS) and Redis. Prints one "
        "line per check (OK, WARN, FAIL, SKIP) with the fix. Never prints a secret.",
    )
    parser.add_argument(
        "--offline", action="store_true", help="skip the checks that call PagerDuty"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run_doctor)


def run_doctor(args: argparse.Namespace, runtime: Runtime | None = None) -> int:
    """``pdauth doctor``."""
    rt = current_runtime(runtime)
    env = rt.environ()
    try:
        with _quiet_config_warnings():
            settings: Settings | None = rt.settings()
    except ConfigurationError:
        settings = None  # reported by the settings check
    with command_logging(settings, env):
        checks = diagnose(env, offline=args.offline, runtime=rt)
    failures = sum(c.status == "FAIL" for c in checks)
    warnings = sum(c.status == "WARN" for c in checks)
    if args.json:
        print_json(
            {
                "ok": failures == 0,
                "failures": failures,
                "warnings": warnings,
                "checks": [c.as_dict() for c in checks],
            }
        )
    else:
        width = max(len(c.name) for c in checks)
        for check in checks:
            print(f"{check.status:<5} {check.name.ljust(width)}  {clean(check.detail)}")
            if check.fix is not None and check.status in ("WARN", "FAIL"):
                print(f"{'':<5} {''.ljust(width)}  fix: {clean(check.fix)}")
        verdict = "no problems found" if failures == 0 else f"{failures} check(s) failed"
        print(f"\n{verdict}; {warnings} warning(s)")
    return EXIT_FAILURE if failures else EXIT_OK
