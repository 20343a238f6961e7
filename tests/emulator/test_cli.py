"""`pdauth emulator`: flags become an EmulatorConfig; the real command serves and stops cleanly."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from pdauth.cli import build_parser, run
from pdauth.commands.emulator import config_from_args
from pdauth.emulator.config import EmulatorConfig


def test_help_lists_the_flags(capsys):
    assert run(["emulator", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--host", "--port", "--certfile", "--keyfile", "--seed", "--rate-limit", "--rate-window",
        "--access-token-ttl", "--refresh-token-ttl", "--code-ttl", "--refresh-reuse",
        "--revocation-endpoint", "--drop-ratelimit-headers", "--public-url",
        "--webhook-retry-scale", "--webhook-bad-signatures",
    ):  # fmt: skip
        assert flag in out


def test_defaults_match_the_default_config():
    args = build_parser().parse_args(["emulator"])
    assert args.host == "127.0.0.1"
    assert args.port == 9000
    assert config_from_args(args) == EmulatorConfig()


def test_flags_become_config():
    args = build_parser().parse_args(
        [
            "emulator", "--seed", "7", "--rate-limit", "5", "--rate-window", "2.5",
            "--access-token-ttl", "60", "--refresh-token-ttl", "600", "--code-ttl", "10",
            "--refresh-reuse", "lenient", "--revocation-endpoint",
            "--drop-ratelimit-headers", "0.25", "--public-url", "https://pd.test/",
            "--webhook-retry-scale", "0.01", "--webhook-bad-signatures",
        ]
    )  # fmt: skip
    assert config_from_args(args) == EmulatorConfig(
        seed=7,
        rate_limit=5,
        rate_window=2.5,
        access_token_ttl=60,
        refresh_token_ttl=600,
        code_ttl=10,
        refresh_reuse="lenient",
        revocation_endpoint=True,
        drop_ratelimit_headers=0.25,
        public_url="https://pd.test",
        webhook_retry_scale=0.01,
        webhook_bad_signatures=True,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "70000"],
        ["--port", "x"],
        ["--rate-limit", "0"],
        ["--rate-window", "-1"],
        ["--code-ttl", "inf"],
        ["--refresh-reuse", "sometimes"],
        ["--drop-ratelimit-headers", "1.5"],
        ["--drop-ratelimit-headers", "nan"],
        ["--access-token-ttl", "0"],
        ["--webhook-retry-scale", "0"],
    ],
)
def test_bad_flags_are_usage_errors(argv, capsys):
    assert run(["emulator", *argv]) == 2
    assert "error" in capsys.readouterr().err


def test_bad_public_url_and_lone_keyfile_are_configuration_errors(capsys):
    assert run(["emulator", "--public-url", "ftp://x"]) == 2
    assert "public_url" in capsys.readouterr().err
    assert run(["emulator", "--keyfile", "k.pem", "--port", "0"]) == 2
    assert "--certfile" in capsys.readouterr().err


def test_a_busy_port_is_a_failure_not_a_crash(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert run(["emulator", "--port", str(port)]) == 1
    assert "cannot listen" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_the_command_serves_on_a_free_port_and_stops_on_a_signal(sig, code):
    proc = subprocess.Popen(
        [sys.executable, "-m", "pdauth", "emulator", "--port", "0", "--seed", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = []
        assert proc.stdout is not None
        for line in proc.stdout:
            banner.append(line)
            if line.startswith("Open "):
                break
        text = "".join(banner)
        match = re.search(r"listening on\s+(http://127\.0\.0\.1:(\d+))", text)
        assert match, text
        base = match.group(1)
        assert f"EU API        {base}/eu" in text
        assert "client_id=pdauth-demo" in text
        assert f"Open {base}/oauth/authorize?client_id=pdauth-demo" in text
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/_emulator/health").json() == {"status": "ok"}
            page = client.get(
                "/oauth/authorize",
                params={
                    "client_id": "pdauth-demo",
                    "redirect_uri": "http://127.0.0.1:8000/callback",
                    "response_type": "code",
                    "scope": "read",
                },
            )
            assert page.status_code == 200
            assert "Approve" in page.text
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    # No secrets in the command's output: the demo secret is not printed.
    assert "pdauth-demo-secret" not in text + out + err
