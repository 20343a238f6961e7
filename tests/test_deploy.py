"""The deployment files under deploy/ are real: the unit verifies and its command serves.

This machine has no systemd as PID 1, so the unit cannot be started by systemd here. What can
be checked is checked: ``systemd-analyze verify`` accepts the unit (with the binary path
pointed at this venv), the example environment file names only real settings and yields a
valid configuration once its placeholders are filled, and the unit's exact ``ExecStart``
command line — same subcommand, same flags — serves ``/healthz`` and stops cleanly on the
unit's ``KillSignal`` within its ``TimeoutStopSec``.
"""

from __future__ import annotations

import configparser
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pdauth import Settings
from pdauth.crypto import format_key, generate_key
from pdauth.store import upgrade
from tests.processes import clean_env, running

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "pdauth@.service"
ENV_EXAMPLE = DEPLOY / "pdauth.env.example"
INSTALLED_BINARY = "/opt/pdauth/venv/bin/pdauth"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def _example_env() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    binary = Path(sys.executable).with_name("pdauth")
    unit = tmp_path / "pdauth@8001.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_BINARY, str(binary)))
    checked = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr.strip() == "", checked.stderr  # warnings (unknown keys, bad values)


def test_the_example_environment_names_only_real_settings() -> None:
    known = {f"PDAUTH_{name.upper()}" for name in Settings.model_fields}
    names = set(_example_env())
    assert names <= known, names - known
    assert {"PDAUTH_DATABASE_URL", "PDAUTH_REDIS_URL", "PDAUTH_ENCRYPTION_KEYS"} <= names


def test_the_example_environment_is_a_valid_configuration_once_filled() -> None:
    env = _example_env()
    for name, value in env.items():
        if "REPLACE_WITH" in value:
            env[name] = format_key(generate_key("k1")) if "KEYS" in name else "x" * 40
    settings = Settings.from_env(env)
    assert settings.redis_url is not None


@pytest.mark.slow
def test_the_units_command_line_serves_and_stops_on_its_kill_signal(tmp_path: Path) -> None:
    service = _unit()["Service"]
    command = shlex.split(service["ExecStart"].replace("%i", "0"))
    assert command[0] == INSTALLED_BINARY
    database_url = f"sqlite:///{tmp_path}/pdauth.db"
    upgrade(database_url)  # the one migration runner, before instances start
    env = clean_env(
        PDAUTH_CLIENT_ID="pdauth-demo",
        PDAUTH_CLIENT_SECRET="pdauth-demo-secret",
        PDAUTH_REDIRECT_URI="http://127.0.0.1:8000/callback",
        PDAUTH_ENCRYPTION_KEYS=format_key(generate_key("k1")),
        PDAUTH_SESSION_SECRET="s" * 40,
        PDAUTH_DATABASE_URL=database_url,
    )
    kill_signal = signal.Signals[service["KillSignal"]]
    with running(command[1:], tmp_path, env) as instance:
        base = instance.wait_for(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
        assert httpx.get(base + "/healthz").json() == {"status": "ok"}
        assert instance.stop(kill_signal, timeout=float(service["TimeoutStopSec"])) == 0
