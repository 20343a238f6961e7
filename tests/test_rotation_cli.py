"""``pdauth keys generate|rotate`` and ``pdauth db upgrade`` as scripts see them.

Through :func:`pdauth.cli.run` (``--json`` documents, progress on stderr, exit codes, help
epilogs) and as real subprocesses (``python -m pdauth``), one per command group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pdauth.cli import run
from pdauth.crypto import KeyRing, format_key, generate_key
from pdauth.emulator import EmulatorConfig
from pdauth.store import Store
from pdauth.tokens import token_binding
from tests.workers.harness import TEST_KEYS, Harness, harness

pytestmark = pytest.mark.anyio

NEW_KEY = generate_key("k2")
NEW_ONLY = KeyRing([NEW_KEY])


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(f"sqlite:///{tmp_path}/t.db", config=EmulatorConfig()) as h:
        yield h


def pdauth(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PDAUTH_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pdauth", *argv],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


def test_help_shows_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["keys", "rotate"], ["keys", "generate"], ["db", "upgrade"]):
        assert run([*argv, "--help"]) == 0
        out = capsys.readouterr().out
        assert "--json" in out
        assert "exit codes:\n  0  success" in out


def test_keys_generate_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["keys", "generate", "--id", "k-json", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["key_id"] == "k-json"
    assert KeyRing.from_config(document["key"]).primary_key_id == "k-json"


async def test_keys_rotate_json_with_progress(
    h: Harness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    await h.connect("owner-1")
    await h.connect("owner-2")
    url = h.settings.database_url
    monkeypatch.setenv("PDAUTH_ENCRYPTION_KEYS", f"{format_key(NEW_KEY)},{TEST_KEYS}")
    assert run(["keys", "rotate", "--database-url", url, "--batch-size", "1", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report == {
        "primary_key_id": "k2",
        "examined": 2,
        "reencrypted": 2,
        "retried": 0,
        "remaining": 0,
    }
    assert "re-encrypting: 1/2" in captured.err
    assert "re-encrypting: 2/2" in captured.err
    assert format_key(NEW_KEY).split(":")[1] not in captured.out + captured.err
    for row in await h.store.list_connections():
        assert row.access_token_ct is not None
        NEW_ONLY.decrypt(row.access_token_ct, token_binding(row, "access_token"))


def test_keys_rotate_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    monkeypatch.delenv("PDAUTH_ENCRYPTION_KEYS", raising=False)
    assert run(["keys", "rotate", "--database-url", url]) == 2
    assert "pdauth keys rotate:" in capsys.readouterr().err


def test_db_upgrade_json_and_failure(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    assert run(["db", "upgrade", "--database-url", url, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["revision"]
    assert document["database"].endswith("fresh.db")
    store = Store(url)
    try:
        assert store.is_up_to_date()
    finally:
        store.dispose()
    missing = f"sqlite:///{tmp_path}/no/such/dir/x.db"
    assert run(["db", "upgrade", "--database-url", missing]) == 1
    assert "pdauth db upgrade:" in capsys.readouterr().err


async def test_keys_group_as_a_subprocess(h: Harness) -> None:
    await h.connect()
    generated = pdauth("keys", "generate", "--json")
    assert generated.returncode == 0, generated.stderr
    new_key = json.loads(generated.stdout)["key"]
    keys = {"PDAUTH_ENCRYPTION_KEYS": f"{new_key},{TEST_KEYS}"}
    rotated = pdauth(
        "keys", "rotate", "--database-url", h.settings.database_url, "--json", env=keys
    )
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["remaining"] == 0
    assert "re-encrypting: 1/1" in rotated.stderr
    no_keys = pdauth("keys", "rotate", "--database-url", h.settings.database_url)
    assert no_keys.returncode == 2
    assert "PDAUTH_ENCRYPTION_KEYS" in no_keys.stderr


def test_db_group_as_a_subprocess(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sub.db"
    upgraded = pdauth("db", "upgrade", "--database-url", url, "--json")
    assert upgraded.returncode == 0, upgraded.stderr
    assert json.loads(upgraded.stdout)["revision"]
    broken = pdauth("db", "upgrade", "--database-url", f"sqlite:///{tmp_path}/none/x.db")
    assert broken.returncode == 1
    assert "pdauth db upgrade:" in broken.stderr


@pytest.mark.parametrize("url", ["mysql://user@db.example/pdauth", "not a url"])
@pytest.mark.parametrize("argv", [["db", "upgrade"], ["keys", "rotate"]])
def test_an_unusable_database_url_is_a_configuration_error(
    argv: list[str],
    url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PDAUTH_ENCRYPTION_KEYS", TEST_KEYS)
    monkeypatch.setenv("PDAUTH_DATABASE_URL", url)
    assert run(argv) == 2  # configuration errors exit 2, as every command's help says
    err = capsys.readouterr().err
    assert err.startswith(f"pdauth {' '.join(argv)}: ")
    assert "PDAUTH_DATABASE_URL" in err
    assert "Traceback" not in err
