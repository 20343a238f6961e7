"""``pdauth doctor`` on a good configuration and on each kind of broken one: a missing variable,
bad keys (malformed, a row under a key no longer in the ring, the wrong material, an old key
still in use), an unmigrated or missing database, an unreachable database, an unreachable
identity service, a non-loopback http endpoint, an unreachable Redis — and a subprocess."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.applications import Starlette

from pdauth.cli import run
from pdauth.commands import Runtime, use_runtime
from pdauth.crypto import format_key, generate_key
from pdauth.emulator import EmulatorServer
from pdauth.store import Store
from tests.commands.conftest import (
    SESSION_SECRET,
    base_env,
    connect_user,
    run_pdauth,
    sqlite_url,
)
from tests.workers.harness import DEMO_SECRET, TEST_KEYS

pytestmark = pytest.mark.usefixtures("env", "runtime")

Capture = pytest.CaptureFixture[str]
REDIS_URL = "redis://127.0.0.1:6379/0"


def doctor(capsys: Capture, *extra: str) -> tuple[int, dict[str, Any]]:
    code = run(["doctor", "--json", *extra])
    out = capsys.readouterr().out
    return code, json.loads(out)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


def assert_no_secrets(text: str, *more: str) -> None:
    for secret in (DEMO_SECRET, SESSION_SECRET, TEST_KEYS.split(":", 1)[1], *more):
        assert secret not in text


def test_a_good_configuration_passes(app: Starlette, capsys: Capture) -> None:
    connect_user(app)
    assert run(["doctor"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert not any(line.startswith("FAIL") for line in lines)
    for name in ("settings", "encryption keys", "database", "stored tokens", "identity service"):
        assert any(line.startswith("OK") and name in line for line in lines), name
    # Loopback http endpoints: fine for the emulator, said so.
    assert any(line.startswith("WARN") and "endpoints" in line for line in lines)
    assert "not for production" in out
    assert "no problems found" in out
    assert_no_secrets(out)

    code, report = doctor(capsys)
    assert code == 0
    assert report["ok"] is True
    checks = by_name(report)
    assert checks["stored tokens"]["status"] == "OK"
    assert "test1" in checks["stored tokens"]["detail"]
    assert checks["redis"]["status"] == "SKIP"
    assert checks["client secret"]["status"] == "OK"


def test_offline_skips_the_identity_service(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    monkeypatch.setenv("PDAUTH_IDENTITY_URL", "http://127.0.0.1:1")
    code, report = doctor(capsys, "--offline")
    assert code == 0
    assert by_name(report)["identity service"]["status"] == "SKIP"


def test_a_missing_variable_is_named(monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    monkeypatch.delenv("PDAUTH_CLIENT_ID")
    code, report = doctor(capsys)
    assert code == 1
    checks = by_name(report)
    assert checks["settings"]["status"] == "FAIL"
    assert "PDAUTH_CLIENT_ID is required" in checks["settings"]["detail"]
    # What can still be checked from the raw variables is checked.
    assert checks["encryption keys"]["status"] == "OK"
    assert checks["database"]["status"] == "OK"
    assert checks["identity service"]["status"] == "SKIP"


def test_public_client_and_missing_session_secret_warn(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    monkeypatch.delenv("PDAUTH_CLIENT_SECRET")
    monkeypatch.delenv("PDAUTH_SESSION_SECRET")
    code, report = doctor(capsys)
    assert code == 0
    checks = by_name(report)
    assert checks["client secret"]["status"] == "WARN"
    assert checks["session secret"]["status"] == "WARN"
    assert "secrets.token_urlsafe" in checks["session secret"]["fix"]


def test_a_short_session_secret_fails(monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    monkeypatch.setenv("PDAUTH_SESSION_SECRET", "too-short-secret")
    code, report = doctor(capsys)
    assert code == 1
    assert "PDAUTH_SESSION_SECRET must be at least 32" in by_name(report)["settings"]["detail"]
    assert "too-short-secret" not in json.dumps(report)


def test_malformed_keys_fail(monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    bad = "k1:" + "Z" * 20
    monkeypatch.setenv("PDAUTH_ENCRYPTION_KEYS", bad)
    code, report = doctor(capsys)
    assert code == 1
    checks = by_name(report)
    assert checks["settings"]["status"] == "FAIL"
    assert checks["encryption keys"]["status"] == "FAIL"
    assert "PDAUTH_ENCRYPTION_KEYS entry 1" in checks["encryption keys"]["detail"]
    assert checks["stored tokens"]["status"] == "SKIP"
    assert "Z" * 20 not in json.dumps(report)


def test_a_row_under_a_key_no_longer_in_the_ring_fails_naming_it(
    app: Starlette, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    connect_user(app)
    new_key = format_key(generate_key("fresh"))
    monkeypatch.setenv("PDAUTH_ENCRYPTION_KEYS", new_key)
    code, report = doctor(capsys)
    assert code == 1
    stored = by_name(report)["stored tokens"]
    assert stored["status"] == "FAIL"
    assert "test1" in stored["detail"]
    assert "pdauth keys rotate" in stored["fix"]
    assert_no_secrets(json.dumps(report), new_key.split(":", 1)[1])


def test_the_wrong_material_for_a_key_id_fails(
    app: Starlette, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    conn = connect_user(app)
    impostor = format_key(generate_key("test1"))  # same id, other bytes
    monkeypatch.setenv("PDAUTH_ENCRYPTION_KEYS", impostor)
    code, report = doctor(capsys)
    assert code == 1
    stored = by_name(report)["stored tokens"]
    assert stored["status"] == "FAIL"
    assert conn.id in stored["detail"]
    assert "do not decrypt" in stored["detail"]


def test_an_old_key_still_in_use_warns(
    app: Starlette, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    connect_user(app)
    monkeypatch.setenv("PDAUTH_ENCRYPTION_KEYS", format_key(generate_key("k2")) + "," + TEST_KEYS)
    code, report = doctor(capsys)
    assert code == 0
    stored = by_name(report)["stored tokens"]
    assert stored["status"] == "WARN"
    assert "test1" in stored["detail"]
    assert "pdauth keys rotate" in stored["fix"]


def test_an_unmigrated_database_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Capture
) -> None:
    url = sqlite_url(tmp_path / "empty.db")
    with Store(url) as store:
        assert store.current_revision() is None  # creates the (empty) file
    monkeypatch.setenv("PDAUTH_DATABASE_URL", url)
    code, report = doctor(capsys)
    assert code == 1
    database = by_name(report)["database"]
    assert database["status"] == "FAIL"
    assert "no schema" in database["detail"]
    assert "pdauth db upgrade" in database["fix"]
    assert by_name(report)["stored tokens"]["status"] == "SKIP"


def test_a_missing_sqlite_file_fails_without_creating_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Capture
) -> None:
    path = tmp_path / "nowhere.db"
    monkeypatch.setenv("PDAUTH_DATABASE_URL", sqlite_url(path))
    code, report = doctor(capsys)
    assert code == 1
    assert "does not exist" in by_name(report)["database"]["detail"]
    assert not path.exists()


def test_an_unreachable_database_fails_without_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    monkeypatch.setenv(
        "PDAUTH_DATABASE_URL", "postgresql+psycopg://pdauth:hunter2-db-pass@127.0.0.1:1/pdauth"
    )
    code, report = doctor(capsys)
    assert code == 1
    database = by_name(report)["database"]
    assert database["status"] == "FAIL"
    assert "cannot use the database" in database["detail"]
    assert "hunter2-db-pass" not in json.dumps(report)


def test_an_unreachable_identity_service_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    monkeypatch.setenv("PDAUTH_IDENTITY_URL", "http://127.0.0.1:1")
    with use_runtime(Runtime()):  # the real network: nothing listens on port 1
        code, report = doctor(capsys)
    assert code == 1
    identity = by_name(report)["identity service"]
    assert identity["status"] == "FAIL"
    assert "cannot reach http://127.0.0.1:1/" in identity["detail"]


def test_a_non_loopback_http_endpoint_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    monkeypatch.setenv("PDAUTH_API_URL", "http://api.example.com")
    code, report = doctor(capsys)
    assert code == 1
    settings = by_name(report)["settings"]
    assert settings["status"] == "FAIL"
    assert "PDAUTH_API_URL" in settings["detail"]
    assert "https" in settings["detail"]


def test_an_unreachable_redis_fails(monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    monkeypatch.setenv("PDAUTH_REDIS_URL", "redis://:redis-pass-xyz@127.0.0.1:1/0")
    code, report = doctor(capsys)
    assert code == 1
    check = by_name(report)["redis"]
    assert check["status"] == "FAIL"
    assert "127.0.0.1:1" in check["detail"]
    assert "redis-pass-xyz" not in json.dumps(report)


def _redis_up() -> bool:
    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


@pytest.mark.skipif(not _redis_up(), reason=f"no Redis at {REDIS_URL}")
def test_a_reachable_redis_passes(monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    monkeypatch.setenv("PDAUTH_REDIS_URL", REDIS_URL)
    code, report = doctor(capsys)
    assert code == 0
    assert by_name(report)["redis"]["status"] == "OK"


def test_a_redirect_uri_without_a_path_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    monkeypatch.setenv("PDAUTH_REDIRECT_URI", "https://app.example.com")
    code, report = doctor(capsys)
    assert code == 1
    assert "no path" in by_name(report)["redirect URI"]["detail"]


@pytest.mark.parametrize(
    ("public_url", "redirect_uri", "route"),
    [
        (None, "https://app.example.com/oauth/pd", "/oauth/pd"),
        ("https://app.example.com/pdauth", "https://app.example.com/pdauth/callback", "/callback"),
    ],
)
def test_a_redirect_uri_the_service_routes_passes_and_names_the_route(
    public_url: str | None,
    redirect_uri: str,
    route: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Capture,
) -> None:
    if public_url is not None:
        monkeypatch.setenv("PDAUTH_PUBLIC_URL", public_url)
    monkeypatch.setenv("PDAUTH_REDIRECT_URI", redirect_uri)
    _, report = doctor(capsys, "--offline")
    check = by_name(report)["redirect URI"]
    assert check["status"] == "OK"
    assert f"the service answers it at {route}" in check["detail"]


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://app.example.com/oauth/pd",  # outside the public URL's path
        "https://app.example.com/pdauth/api/v1/cb",  # on the service's own JSON API
    ],
)
def test_a_redirect_uri_the_service_cannot_serve_fails(
    redirect_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    monkeypatch.setenv("PDAUTH_PUBLIC_URL", "https://app.example.com/pdauth")
    monkeypatch.setenv("PDAUTH_REDIRECT_URI", redirect_uri)
    code, report = doctor(capsys, "--offline")
    assert code == 1
    check = by_name(report)["redirect URI"]
    assert check["status"] == "FAIL"
    assert check["detail"].startswith(f"the service cannot serve {redirect_uri}")
    assert "PDAUTH_PUBLIC_URL" in check["fix"]
    assert run(["doctor", "--offline"]) == 1
    assert "OK    redirect URI" not in capsys.readouterr().out


def test_doctor_help(capsys: Capture) -> None:
    assert run(["doctor", "--help"]) == 0
    assert "exit codes:" in capsys.readouterr().out


@pytest.mark.slow
def test_doctor_in_a_subprocess(emulator_server: EmulatorServer, db_url: str) -> None:
    env = base_env(db_url, emulator_server.url)
    done = run_pdauth("doctor", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK    identity service" in done.stdout
    assert_no_secrets(done.stdout + done.stderr)


def test_a_misspelt_variable_is_a_warning_naming_the_setting_it_meant(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PDAUTH_CLIENTID", "typo-value-0123")
    code, report = doctor(capsys, "--offline")
    assert code == 0  # a warning, not a failure: the variable is ignored
    check = by_name(report)["variables"]
    assert check["status"] == "WARN"
    assert "PDAUTH_CLIENTID (did you mean PDAUTH_CLIENT_ID?)" in check["detail"]
    assert "typo-value-0123" not in json.dumps(report)
    # Listed once, as a check: not also logged by every settings load doctor makes.
    assert "PDAUTH_CLIENTID" not in caplog.text


def test_no_unknown_variable_is_ok(capsys: Capture) -> None:
    _, report = doctor(capsys, "--offline")
    assert by_name(report)["variables"]["status"] == "OK"
