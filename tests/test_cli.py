from __future__ import annotations

import subprocess
import sys

import pytest

from pdauth.cli import run


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"]) == 0
    assert "pdauth" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["no-such-command"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_console_script_runs_in_a_subprocess() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pdauth", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: pdauth" in out.stdout
