"""``pdauth connections list|show|refresh|revoke`` through ``pdauth.cli.run``, against the
in-process emulator, plus one real ``python -m pdauth connections list --json`` subprocess."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import anyio
import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette

from pdauth.cli import run
from pdauth.clock import FrozenClock
from pdauth.commands import Runtime, use_runtime
from pdauth.commands._views import event_view
from pdauth.config import Settings
from pdauth.connections import Connector
from pdauth.emulator import EmulatorConfig
from pdauth.store import EventRow
from tests.commands.conftest import (
    BASE,
    Connected,
    base_env,
    connect_user,
    control,
    emulator_app,
    row,
    run_pdauth,
    set_env,
    sqlite_url,
)
from tests.workers.harness import DEMO_ID, DEMO_SECRET, EU_ADMIN, TEST_KEYS, US_ADMIN

pytestmark = pytest.mark.usefixtures("env", "runtime")

Capture = pytest.CaptureFixture[str]


def secrets_of(db_url: str, conn: Connected) -> list[str]:
    """Everything about a connection that must never be printed."""
    r = row(db_url, conn.id)
    values = [conn.access_token, DEMO_SECRET, TEST_KEYS.split(":", 1)[1]]
    values += [v for v in (r.access_token_ct, r.refresh_token_ct) if v]
    return values


def assert_no_secrets(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text


# -- list --------------------------------------------------------------------------------------


def test_list_prints_a_table_without_secrets(app: Starlette, db_url: str, capsys: Capture) -> None:
    first = connect_user(app, "alice")
    second = connect_user(app, "bob", user=EU_ADMIN)
    assert run(["connections", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "OWNER", "STATUS"]
    assert any(first.id in line and "alice" in line and "acme (us)" in line for line in lines)
    assert any(second.id in line and "bob" in line and "(eu)" in line for line in lines)
    assert US_ADMIN in out
    assert EU_ADMIN in out
    assert_no_secrets(out, secrets_of(db_url, first) + secrets_of(db_url, second))


def test_list_json_filters_by_owner_and_status(app: Starlette, capsys: Capture) -> None:
    alice = connect_user(app, "alice")
    bob = connect_user(app, "bob")
    assert run(["connections", "list", "--json", "--owner", "alice"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["count"] == 1
    [conn] = data["connections"]
    assert conn["id"] == alice.id
    assert conn["status"] == "active"
    assert conn["subdomain"] == "acme"
    assert conn["region"] == "us"
    assert conn["user"]["email"] == US_ADMIN  # the JSON API's shape: user{id,name,email}
    assert {"read", "write"} <= set(conn["scopes"])
    assert conn["access_expires_at"].endswith("Z")
    assert not any(key.endswith("_ct") or key == "token" for key in conn)

    assert run(["connections", "revoke", bob.id, "--yes"]) == 0
    capsys.readouterr()
    assert run(["connections", "list", "--json", "--status", "revoked"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in data["connections"]] == [bob.id]
    assert run(["connections", "list", "--json", "--limit", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 1


def test_list_empty(capsys: Capture) -> None:
    assert run(["connections", "list"]) == 0
    assert "no connections" in capsys.readouterr().err
    assert run(["connections", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"connections": [], "count": 0}


def test_list_makes_hostile_owner_names_terminal_safe(
    app: Starlette, capsys: Capture, db_url: str
) -> None:
    # Owner ids with control characters are refused at connect time now; a row written before
    # that rule (or by hand) must still be printed safely.
    connected = connect_user(app, "plain-owner")
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as db:
            db.execute(
                sa.text("UPDATE connections SET owner = :owner WHERE id = :id"),
                {"owner": "evil\x1b[2Jowner", "id": connected.id},
            )
    finally:
        engine.dispose()
    assert run(["connections", "list"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "evil\\x1b[2Jowner" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["connections"],
        ["connections", "list", "--status", "dead"],
        ["connections", "list", "--limit", "0"],
        ["connections", "show"],
        ["connections", "refresh", "--due", "--limit", "5000"],
        ["connections", "refresh", "--due", "--horizon", "-1"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: Capture) -> None:
    assert run(argv) == 2
    assert capsys.readouterr().err


def test_missing_settings_exit_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    monkeypatch.delenv("PDAUTH_CLIENT_ID")
    assert run(["connections", "list"]) == 2
    err = capsys.readouterr().err
    assert "PDAUTH_CLIENT_ID is required" in err
    assert DEMO_SECRET not in err


def test_an_unmigrated_database_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Capture
) -> None:
    monkeypatch.setenv("PDAUTH_DATABASE_URL", sqlite_url(tmp_path / "fresh.db"))
    assert run(["connections", "list"]) == 2
    assert "pdauth db upgrade" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys: Capture) -> None:
    for argv in (
        ["connections", "--help"],
        ["connections", "list", "--help"],
        ["connections", "show", "--help"],
        ["connections", "refresh", "--help"],
        ["connections", "revoke", "--help"],
    ):
        assert run(argv) == 0
        out = capsys.readouterr().out
        assert "exit codes:" in out
        assert "3  not found" in out


# -- show --------------------------------------------------------------------------------------


def test_show_prints_fields_and_events(app: Starlette, db_url: str, capsys: Capture) -> None:
    conn = connect_user(app, "alice")
    connect_user(app, "alice", user=EU_ADMIN)  # another connection of the same owner
    assert run(["connections", "show", conn.id]) == 0
    out = capsys.readouterr().out
    assert "id:" in out
    assert conn.id in out
    assert "owner:" in out
    assert "alice" in out
    assert "connection.created" in out
    assert "token_version:" in out
    assert_no_secrets(out, secrets_of(db_url, conn))

    assert run(["connections", "refresh", conn.id]) == 0
    capsys.readouterr()
    assert run(["connections", "show", conn.id, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["connection"]["id"] == conn.id
    assert data["operator_details"]["token_version"] == 2
    assert [e["type"] for e in data["events"]] == ["connection.created", "connection.refreshed"]
    assert run(["connections", "show", conn.id, "--json", "--events", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [e["type"] for e in data["events"]] == ["connection.refreshed"]


def test_show_unknown_connection_exits_3(capsys: Capture) -> None:
    assert run(["connections", "show", "pdc_nope"]) == 3
    assert "no connection pdc_nope" in capsys.readouterr().err


def test_event_view_drops_ciphertexts() -> None:
    event = EventRow(
        id=7,
        type="revocation.pending",
        connection_id="pdc_x",
        owner="o",
        data={"token_type_hint": "refresh_token", "token_ct": "v1.k.secret", "nested": {"a_ct": 1}},
        created_at=1_800_000_000.0,
        delivered_at=None,
        attempts=2,
        next_attempt_at=None,
        last_error="TransportError",
    )
    view = event_view(event)
    assert view["data"] == {"token_type_hint": "refresh_token", "nested": {}}
    assert "v1.k.secret" not in json.dumps(view)
    assert view["created_at"] == "2027-01-15T08:00:00Z"


# -- refresh -----------------------------------------------------------------------------------


def test_refresh_one_connection(app: Starlette, db_url: str, capsys: Capture) -> None:
    conn = connect_user(app)
    before = row(db_url, conn.id)
    assert run(["connections", "refresh", conn.id]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"refreshed {conn.id}")
    after = row(db_url, conn.id)
    assert after.token_version == before.token_version + 1
    assert after.refresh_token_ct != before.refresh_token_ct
    assert_no_secrets(out, secrets_of(db_url, conn))

    assert run(["connections", "refresh", conn.id, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["refreshed"] is True
    assert data["problem"] is None
    assert data["operator_details"]["token_version"] == before.token_version + 2


def test_refresh_of_a_grant_revoked_in_pagerduty_exits_1(
    app: Starlette, db_url: str, capsys: Capture
) -> None:
    conn = connect_user(app)
    assert control(app, "/_emulator/revoke", {"client_id": DEMO_ID}).status_code == 200
    assert run(["connections", "refresh", conn.id]) == 1
    assert "reconnect" in capsys.readouterr().err
    assert row(db_url, conn.id).status == "needs_reauth"
    assert run(["connections", "refresh", conn.id]) == 1  # still dead, still 1


def test_a_transient_refresh_failure_exits_1_and_keeps_the_connection(
    app: Starlette, db_url: str, capsys: Capture
) -> None:
    conn = connect_user(app)
    before = row(db_url, conn.id)
    fault = {"target": "token", "kind": "503", "count": 10}
    assert control(app, "/_emulator/faults", fault).status_code == 200
    assert run(["connections", "refresh", conn.id]) == 1
    assert "the refresh failed" in capsys.readouterr().err
    after = row(db_url, conn.id)
    assert after.status == "active"
    assert after.token_version == before.token_version
    assert after.last_error_code is not None


def test_refresh_unknown_connection_exits_3(capsys: Capture) -> None:
    assert run(["connections", "refresh", "pdc_nope"]) == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["connections", "refresh"],
        ["connections", "refresh", "pdc_x", "--due"],
        ["connections", "refresh", "pdc_x", "--horizon", "3"],
    ],
)
def test_refresh_needs_exactly_one_target(argv: list[str], capsys: Capture) -> None:
    assert run(argv) == 2
    assert "pdauth connections refresh:" in capsys.readouterr().err


def test_refresh_due_refreshes_what_is_due_with_a_count(
    app: Starlette, db_url: str, capsys: Capture
) -> None:
    first = connect_user(app, "a")
    second = connect_user(app, "b")
    # Fresh Classic refresh tokens live 210 days: nothing is due within the default horizon.
    assert run(["connections", "refresh", "--due"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("examined 0:")

    assert run(["connections", "refresh", "--due", "--horizon", "300"]) == 0
    captured = capsys.readouterr()
    assert "examined 2: refreshed 2" in captured.out
    assert "refreshing: 2/2" in captured.err  # stderr is not a terminal: plain counts
    for conn in (first, second):
        assert row(db_url, conn.id).token_version == 2

    assert run(["connections", "refresh", "--due", "--horizon", "300", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["examined"] == 2
    assert data["refreshed"] == 2
    assert {r["outcome"] for r in data["results"]} == {"refreshed"}


def test_refresh_due_reports_dead_connections_and_exits_1(
    app: Starlette, db_url: str, capsys: Capture
) -> None:
    alive = connect_user(app, "a", user=US_ADMIN)
    dead = connect_user(app, "b", user=EU_ADMIN)
    assert control(app, "/_emulator/revoke", {"user": EU_ADMIN}).status_code == 200
    assert run(["connections", "refresh", "--due", "--horizon", "300", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    outcomes = {r["id"]: r["outcome"] for r in data["results"]}
    assert outcomes == {alive.id: "refreshed", dead.id: "needs_reauth"}
    assert data["needs_reauth"] == 1
    assert row(db_url, dead.id).status == "needs_reauth"
    # The dead one is no longer due; the live one was just refreshed.
    assert run(["connections", "refresh", "--due", "--horizon", "300"]) == 0
    assert "examined 1: refreshed 1" in capsys.readouterr().out


def test_refresh_due_default_horizon_uses_the_injected_clock_and_factory(
    app: Starlette, db_url: str, capsys: Capture
) -> None:
    conn = connect_user(app)
    # 200 days later (the emulator still lives in the present, so its grant is fresh), a
    # Classic refresh token has 10 of its 210 idle days left: due by the default horizon.
    later = FrozenClock(current=time.time() + 200 * 86_400)
    built: list[Connector] = []

    def factory(settings: Settings) -> Connector:
        built.append(Connector(settings, clock=later, transport=httpx.ASGITransport(app=app)))
        return built[-1]

    argv = ["connections", "refresh", "--due", "--json"]
    with use_runtime(Runtime(clock=later, connector_factory=factory)):
        assert run(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in data["results"]] == [conn.id]
    assert data["refreshed"] == 1
    assert data["horizon_days"] == 52.5
    assert len(built) == 1
    assert row(db_url, conn.id).last_refreshed_at == pytest.approx(later.now())


# -- revoke ------------------------------------------------------------------------------------


def test_revoke_wipes_tokens_and_says_how_to_revoke_in_pagerduty(
    app: Starlette, db_url: str, capsys: Capture
) -> None:
    conn = connect_user(app)
    pd_user = row(db_url, conn.id).pd_user_id
    assert pd_user
    assert run(["connections", "revoke", conn.id, "--yes"]) == 0
    out = capsys.readouterr().out
    assert f"disconnected {conn.id}" in out
    assert "Revoke All Tokens" in out
    assert "Authorized Apps" in out
    assert f"DELETE {BASE}/oauth_delegations?user_id={pd_user}" in out
    assert DEMO_ID in out
    r = row(db_url, conn.id)
    assert r.status == "revoked"
    assert r.access_token_ct is None
    assert r.refresh_token_ct is None

    assert run(["connections", "revoke", conn.id, "--yes", "--json"]) == 0  # idempotent
    data = json.loads(capsys.readouterr().out)
    assert data["already_revoked"] is True
    assert data["remote_revocation"] == "unsupported"
    assert any("Revoke All Tokens" in line for line in data["how_to_revoke_in_pagerduty"])


def test_revoke_refuses_without_yes_when_stdin_is_not_a_terminal(
    app: Starlette, db_url: str, capsys: Capture
) -> None:
    conn = connect_user(app)
    assert run(["connections", "revoke", conn.id]) == 2
    assert "--yes" in capsys.readouterr().err
    assert row(db_url, conn.id).status == "active"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "code", "status"), [("y\n", 0, "revoked"), ("\n", 1, "active")])
def test_revoke_asks_on_a_terminal(
    app: Starlette,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Capture,
    answer: str,
    code: int,
    status: str,
) -> None:
    conn = connect_user(app, "alice")
    monkeypatch.setattr("sys.stdin", _Terminal(answer))
    assert run(["connections", "revoke", conn.id]) == code
    assert "[y/N]" in capsys.readouterr().err
    assert row(db_url, conn.id).status == status


def test_revoke_unknown_connection_exits_3(capsys: Capture) -> None:
    assert run(["connections", "revoke", "pdc_nope", "--yes"]) == 3


def test_revoke_with_a_revocation_endpoint_revokes_remotely(
    monkeypatch: pytest.MonkeyPatch, db_url: str, capsys: Capture
) -> None:
    revoking = emulator_app(EmulatorConfig(revocation_endpoint=True))
    set_env(monkeypatch, {**base_env(db_url), "PDAUTH_REVOKE_URL": BASE + "/oauth/revoke"})
    with use_runtime(Runtime(transport=httpx.ASGITransport(app=revoking))):
        conn = connect_user(revoking)
        assert run(["connections", "revoke", conn.id, "--yes", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["remote_revocation"] == "revoked"
    assert data["how_to_revoke_in_pagerduty"] == []
    revoked = control(revoking, "/_emulator/stats").json()["tokens_revoked"]
    assert revoked["refresh"] + revoked["grant"] >= 1


# -- a real process ----------------------------------------------------------------------------


@pytest.mark.slow
def test_connections_list_json_in_a_subprocess(
    app: Starlette, db_url: str, env: dict[str, str]
) -> None:
    conn = connect_user(app, "alice")
    done = run_pdauth("connections", "list", "--json", env=env)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [c["id"] for c in data["connections"]] == [conn.id]
    assert_no_secrets(done.stdout + done.stderr, secrets_of(db_url, conn))


def test_the_cli_and_the_json_api_show_a_connection_in_one_shape(
    app: Starlette, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    from pdauth.service import create_app as create_service

    api_key = "cli-shape-api-key-0123456789"
    monkeypatch.setenv("PDAUTH_API_KEYS", api_key)
    conn = connect_user(app, "shape-owner")
    assert run(["connections", "show", conn.id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["connection"]
    assert run(["connections", "list", "--json", "--owner", "shape-owner"]) == 0
    [listed] = json.loads(capsys.readouterr().out)["connections"]

    async def from_api() -> dict[str, object]:
        service = create_service(Settings.from_env(), transport=httpx.ASGITransport(app=app))
        async with (
            service.router.lifespan_context(service),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=service), base_url="http://127.0.0.1"
            ) as client,
        ):
            answer = await client.get(
                f"/api/v1/connections/{conn.id}", headers={"authorization": f"Bearer {api_key}"}
            )
            assert answer.status_code == 200, answer.text
            body: dict[str, object] = answer.json()
            return body

    api = anyio.run(from_api)["connection"]
    assert shown == listed == api
    assert set(shown["user"]) == {"id", "name", "email"}
    assert "token_version" not in shown  # operator details sit beside the connection


def test_connections_short_of_grown_scopes_say_so_in_json_and_text(
    app: Starlette, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect_user(app)
    assert run(["connections", "list", "--json"]) == 0
    (before,) = json.loads(capsys.readouterr().out)["connections"]
    assert before["missing_scopes"] == []
    monkeypatch.setenv("PDAUTH_SCOPES", "read write incidents.read")  # the app grew
    assert run(["connections", "list", "--json"]) == 0
    (after,) = json.loads(capsys.readouterr().out)["connections"]
    assert after["missing_scopes"] == ["incidents.read"]
    assert run(["connections", "list"]) == 0
    assert "active (needs scopes)" in capsys.readouterr().out
