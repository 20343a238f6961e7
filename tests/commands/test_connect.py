"""``pdauth connect``: the loopback-redirect flow end to end. The emulator runs on a socket; a
test thread plays the browser (consent through ``POST /_emulator/authorize``, then the redirect
to the command's listener) — approve, deny, silence, stray requests, and a real subprocess."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from pdauth.cli import run
from pdauth.commands import Runtime, use_runtime
from pdauth.commands.connect import loopback_redirect
from pdauth.emulator import EmulatorServer
from pdauth.errors import ConfigurationError
from pdauth.store import Store
from tests.commands.conftest import REPO, base_env, free_port, set_env, subprocess_env
from tests.workers.harness import US_ADMIN

Capture = pytest.CaptureFixture[str]
CLIENT_SECRET = "cli-client-secret-123"
NO_BROWSER = ("--no-browser", "--timeout", "60", "--json")


@dataclass(frozen=True)
class App:
    client_id: str
    redirect_uri: str
    env: dict[str, str]


def register(server: EmulatorServer, client_id: str, redirect_uri: str) -> None:
    with httpx.Client(trust_env=False, timeout=10) as http:
        answer = http.post(
            server.url + "/_emulator/apps",
            json={
                "client_id": client_id,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [redirect_uri],
                "name": "pdauth cli test",
            },
        )
    assert answer.status_code == 201, answer.text


@pytest.fixture
def cli_app(emulator_server: EmulatorServer, db_url: str, monkeypatch: pytest.MonkeyPatch) -> App:
    """A fresh OAuth app whose registered redirect URI is a free loopback port."""
    client_id = f"cli-{uuid.uuid4().hex[:12]}"
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    register(emulator_server, client_id, redirect_uri)
    env = {
        **base_env(db_url, emulator_server.url),
        "PDAUTH_CLIENT_ID": client_id,
        "PDAUTH_CLIENT_SECRET": CLIENT_SECRET,
        "PDAUTH_REDIRECT_URI": redirect_uri,
    }
    set_env(monkeypatch, env)
    return App(client_id, redirect_uri, env)


@dataclass
class Browser:
    """Plays the user's browser in a thread, as ``webbrowser.open`` would start one."""

    emulator: str
    decision: str = "approve"
    act: bool = True
    detours: bool = False
    register_as: str | None = None  # re-register the app with the URL's redirect_uri first
    opened: list[str] = field(default_factory=list)
    detour_status: list[int] = field(default_factory=list)
    redirect: str | None = None
    page: httpx.Response | None = None
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def open(self, url: str) -> bool:
        self.opened.append(url)
        if self.act:
            self.thread = threading.Thread(target=self._play, args=(url,), daemon=True)
            self.thread.start()
        return True

    def _play(self, url: str) -> None:
        try:
            params = dict(parse_qsl(urlsplit(url).query))
            redirect_uri = params["redirect_uri"]
            with httpx.Client(trust_env=False, timeout=15) as http:
                if self.register_as is not None:
                    answer = http.post(
                        self.emulator + "/_emulator/apps",
                        json={
                            "client_id": self.register_as,
                            "client_secret": CLIENT_SECRET,
                            "redirect_uris": [redirect_uri],
                        },
                    )
                    assert answer.status_code == 201, answer.text
                if self.detours:
                    origin = redirect_uri.rsplit("/", 1)[0]
                    self.detour_status.append(http.get(origin + "/favicon.ico").status_code)
                    forged = redirect_uri + "?code=forged&state=" + "A" * 43
                    self.detour_status.append(http.get(forged).status_code)
                answer = http.post(
                    self.emulator + "/_emulator/authorize",
                    json={**params, "user": US_ADMIN, "decision": self.decision},
                )
                assert answer.status_code == 200, answer.text
                self.redirect = answer.json()["redirect"]
                self.page = http.get(self.redirect)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self) -> httpx.Response:
        assert self.thread is not None, "the browser was never opened"
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        assert self.page is not None
        return self.page


@pytest.fixture
def browser(emulator_server: EmulatorServer) -> Iterator[Browser]:
    player = Browser(emulator_server.url)
    with use_runtime(Runtime(open_browser=player.open)):
        yield player


def connections_of(db_url: str, owner: str) -> list[str]:
    with Store(db_url) as store:
        return [r.id for r in store.list_connections(owner=owner)]


def assert_styled_like_the_service(page: httpx.Response) -> None:
    """The service's stylesheet inlined, allowed by its hash alone: no script, no outside
    asset, no unsafe-inline."""
    css = (REPO / "src/pdauth/service/static/pdauth.css").read_text(encoding="utf-8")
    assert f"<style>{css}</style>" in page.text
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    policy = page.headers["content-security-policy"]
    assert f"style-src 'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    assert "<script" not in page.text
    assert "src=" not in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing loaded from elsewhere


def test_connect_approve_stores_the_connection(
    cli_app: App, browser: Browser, db_url: str, capsys: Capture
) -> None:
    browser.detours = True
    assert run(["connect", "--owner", "cli-user", "--timeout", "30"]) == 0
    page = browser.finish()
    captured = capsys.readouterr()
    [conn_id] = connections_of(db_url, "cli-user")
    assert conn_id in captured.out
    assert "acme (us)" in captured.out
    assert "Opening PagerDuty in your browser" in captured.err
    # The opened URL is the authorize URL with exactly the configured redirect URI.
    [url] = browser.opened
    assert dict(parse_qsl(urlsplit(url).query))["redirect_uri"] == cli_app.redirect_uri
    assert url not in captured.err  # a browser opened: the state-bearing URL is not printed
    # Requests to other paths, and a callback without this flow's state, were turned away.
    assert browser.detour_status == [404, 400]
    assert page.status_code == 200
    assert "PagerDuty connected" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert browser.redirect is not None
    for _, value in parse_qsl(urlsplit(browser.redirect).query):
        assert value not in page.text  # neither the code nor the state is echoed
    assert_styled_like_the_service(page)


def test_connect_json_output(cli_app: App, browser: Browser, capsys: Capture) -> None:
    assert run(["connect", "--owner", "cli-json", "--json"]) == 0
    browser.finish()
    data = json.loads(capsys.readouterr().out)
    assert data["connection"]["owner"] == "cli-json"
    assert data["connection"]["status"] == "active"


def test_connect_denied_exits_1_and_stores_nothing(
    cli_app: App, browser: Browser, db_url: str, capsys: Capture
) -> None:
    browser.decision = "deny"
    assert run(["connect", "--owner", "cli-deny", "--timeout", "30"]) == 1
    page = browser.finish()
    assert "access_denied" in capsys.readouterr().err
    assert "not granted" in page.text
    assert 'class="card notice"' in page.text
    assert_styled_like_the_service(page)
    assert connections_of(db_url, "cli-deny") == []


def test_connect_times_out_with_exit_1(cli_app: App, browser: Browser, capsys: Capture) -> None:
    browser.act = False
    assert run(["connect", "--owner", "cli-slow", "--timeout", "1"]) == 1
    assert "no answer from the browser within 1 s" in capsys.readouterr().err
    assert len(browser.opened) == 1


def test_connect_prints_the_url_when_no_browser_starts(
    cli_app: App, emulator_server: EmulatorServer, capsys: Capture
) -> None:
    with use_runtime(Runtime(open_browser=lambda url: False)):
        assert run(["connect", "--owner", "cli-nobrowser", "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert "open this URL yourself" in err
    assert emulator_server.url + "/oauth/authorize?" in err


def test_connect_with_port_zero_uses_a_free_port(
    cli_app: App, browser: Browser, db_url: str, capsys: Capture
) -> None:
    # RFC 8252 §7.3 servers accept any loopback port; the emulator matches exactly, so the
    # browser registers the redirect URI it is given before consenting.
    browser.register_as = cli_app.client_id
    assert run(["connect", "--owner", "cli-port0", "--port", "0", "--timeout", "30"]) == 0
    browser.finish()
    [url] = browser.opened
    used = urlsplit(dict(parse_qsl(urlsplit(url).query))["redirect_uri"])
    assert used.port not in (None, 0, urlsplit(cli_app.redirect_uri).port)
    assert used.path == "/callback"
    assert len(connections_of(db_url, "cli-port0")) == 1


def test_connect_refuses_a_redirect_uri_that_is_not_loopback(
    cli_app: App, browser: Browser, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    monkeypatch.setenv("PDAUTH_REDIRECT_URI", "https://app.example.com/pdauth/callback")
    assert run(["connect", "--owner", "x"]) == 2
    err = capsys.readouterr().err
    assert "loopback http URI" in err
    assert "https://app.example.com/pdauth/callback" in err
    assert browser.opened == []


def test_connect_reports_a_busy_port(cli_app: App, browser: Browser, capsys: Capture) -> None:
    port = urlsplit(cli_app.redirect_uri).port
    assert port is not None
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen(1)
        assert run(["connect", "--owner", "x"]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert browser.opened == []


@pytest.mark.parametrize(
    "argv", [["connect"], ["connect", "--owner", ""], ["connect", "--owner", "x", "--timeout", "0"]]
)
def test_connect_usage_errors(argv: list[str], capsys: Capture) -> None:
    assert run(argv) == 2


def test_connect_help_documents_exit_codes(capsys: Capture) -> None:
    assert run(["connect", "--help"]) == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out
    assert "RFC 8252" in out


@pytest.mark.parametrize(
    ("uri", "bind", "port", "path", "moved"),
    [
        (
            "http://127.0.0.1:8765/callback",
            "127.0.0.1",
            8765,
            "/callback",
            "http://127.0.0.1:1234/callback",
        ),
        ("http://localhost:9000/cb?x=1", "127.0.0.1", 9000, "/cb", "http://localhost:1234/cb?x=1"),
        ("http://[::1]:7000/x/y", "::1", 7000, "/x/y", "http://[::1]:1234/x/y"),
        ("http://127.0.0.1", "127.0.0.1", 80, "/", "http://127.0.0.1:1234"),
    ],
)
def test_loopback_redirect_accepts_loopback_http(
    uri: str, bind: str, port: int, path: str, moved: str
) -> None:
    redirect = loopback_redirect(uri)
    assert (redirect.bind_host, redirect.port, redirect.path) == (bind, port, path)
    assert redirect.uri == uri  # kept byte for byte: it must equal the registered one
    assert redirect.with_port(1234).uri == moved


@pytest.mark.parametrize(
    "uri",
    [
        "https://127.0.0.1:8765/callback",
        "http://app.example.com/callback",
        "http://10.0.0.1:8000/callback",
        "https://app.example.com/callback",
    ],
)
def test_loopback_redirect_refuses_the_rest(uri: str) -> None:
    with pytest.raises(ConfigurationError, match="loopback"):
        loopback_redirect(uri)


@pytest.mark.slow
def test_connect_in_a_subprocess_with_no_browser(
    cli_app: App, emulator_server: EmulatorServer, db_url: str
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pdauth", "connect", "--owner", "proc-user", *NO_BROWSER],
        env=subprocess_env(cli_app.env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:
            if line.startswith("  http"):
                url = line.strip()
                break
        assert url is not None, "the URL to open was not printed"
        player = Browser(emulator_server.url)
        player.open(url)
        page = player.finish()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "PagerDuty connected" in page.text
    data = json.loads(out)
    assert connections_of(db_url, "proc-user") == [data["connection"]["id"]]
