"""``pdauth keeper``: one pass through ``pdauth.cli.run`` against the in-process emulator (real
refreshes, events closed, exit codes), and the long-running process stopped by SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.applications import Starlette

from pdauth.cli import run
from pdauth.store import Store
from tests.commands.conftest import (
    connect_user,
    row,
    set_env,
    sqlite_url,
    subprocess_env,
)
from tests.workers.harness import TEST_KEYS

pytestmark = pytest.mark.usefixtures("env", "runtime")

Capture = pytest.CaptureFixture[str]


def queued(db_url: str) -> int:
    """Outbox events waiting for the keeper (undelivered and scheduled)."""
    with Store(db_url) as store:
        events = store.list_events(after_id=0, limit=1000)
    return sum(1 for e in events if e.delivered_at is None and e.next_attempt_at is not None)


def test_once_refreshes_what_is_due_and_closes_events(
    app: Starlette,
    db_url: str,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: Capture,
) -> None:
    conn = connect_user(app, "alice")
    assert queued(db_url) == 1  # connection.created waits for the keeper
    # Every refresh token expires within a year: the keeper refreshes the connection now.
    monkeypatch.setenv("PDAUTH_REFRESH_HORIZON", str(365 * 86_400))
    assert run(["keeper", "--once", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["refresh"] == {"examined": 1, "refreshed": 1, "needs_reauth": 0, "failed": 0}
    assert report["skipped"] >= 1  # no webhook configured: events are closed as skipped
    assert report["problems"] == []
    assert row(db_url, conn.id).token_version == 2
    assert queued(db_url) == 0  # created and refreshed events, both closed in the same pass

    monkeypatch.delenv("PDAUTH_REFRESH_HORIZON")
    connect_user(app, "carol")
    assert run(["keeper", "--once"]) == 0
    out = capsys.readouterr().out
    assert "refreshed 0/0 due" in out  # nothing due within the default horizon
    assert "events closed without webhook 1" in out
    assert queued(db_url) == 0
    assert TEST_KEYS.split(":", 1)[1] not in out


def test_a_bad_configuration_or_an_old_schema_exits_2(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    monkeypatch.delenv("PDAUTH_CLIENT_ID")
    assert run(["keeper", "--once"]) == 2
    assert "PDAUTH_CLIENT_ID" in capsys.readouterr().err

    set_env(monkeypatch, {**env, "PDAUTH_DATABASE_URL": sqlite_url(tmp_path / "new.db")})
    assert run(["keeper", "--once"]) == 2
    assert "pdauth db upgrade" in capsys.readouterr().err


def test_help_names_the_interval_and_exit_codes(capsys: Capture) -> None:
    assert run(["keeper", "--help"]) == 0
    out = capsys.readouterr().out
    assert "PDAUTH_KEEPER_INTERVAL" in out
    assert "--once" in out
    assert "exit codes:" in out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_process_runs_passes_until_a_signal(
    app: Starlette, db_url: str, env: dict[str, str], sig: signal.Signals, tmp_path: Path
) -> None:
    connect_user(app, "bob")  # its connection.created event is the work the keeper finds
    err_path = tmp_path / "stderr.txt"
    with err_path.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pdauth", "keeper", "--json"],
            env=subprocess_env({**env, "PDAUTH_KEEPER_INTERVAL": "0.2"}),
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the first pass that did something
        report = json.loads(line)
        assert report["skipped"] == 1
        assert queued(db_url) == 0
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    errors = err_path.read_text()
    assert proc.returncode == 0, errors
    assert rest == ""  # later passes found nothing: they print nothing
    assert "a pass every 0.2 s" in errors
    assert "pdauth keeper: stopped" in errors


def test_once_exits_1_when_the_pass_had_problems(
    app: Starlette, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    conn = connect_user(app, "dave")
    monkeypatch.setenv("PDAUTH_REFRESH_HORIZON", str(365 * 86_400))
    monkeypatch.setenv("PDAUTH_CLIENT_SECRET", "not-the-apps-secret")  # PagerDuty refuses us
    assert run(["keeper", "--once", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["problems"] == ["refresh: invalid_client"]
    assert row(db_url, conn.id).token_version == 1  # nothing was refreshed, nothing lost
    assert run(["keeper", "--once"]) == 1
    assert "problems: refresh: invalid_client" in capsys.readouterr().out
