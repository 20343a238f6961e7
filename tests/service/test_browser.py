"""Real browser: Playwright driving Debian's Chromium against `pdauth demo`-style servers on
loopback — the emulator (EmulatorServer) and the service (uvicorn in a thread). Screenshots of
each page land in test-output/browser/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pdauth.emulator import EmulatorConfig, EmulatorServer
from pdauth.service import create_app
from pdauth.service.server import ServiceServer, bind_socket
from pdauth.store import upgrade
from tests.service.conftest import make_settings

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "browser"


def _demo_port_socket() -> Any:
    """A socket on the first free port of 8000-8010 (the emulator's demo redirect URIs)."""
    for port in range(8000, 8011):
        try:
            return bind_socket("127.0.0.1", port)
        except OSError:
            continue
    pytest.fail("no free port in 8000-8010 for the service")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[str]:
    if not CHROMIUM.exists():
        pytest.fail(
            "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
        )
    database_url = f"sqlite:///{tmp_path}/demo.db"
    upgrade(database_url)
    with EmulatorServer(EmulatorConfig()) as emulator:
        sock = _demo_port_socket()
        port = sock.getsockname()[1]
        settings = make_settings(
            database_url,
            redirect_uri=f"http://127.0.0.1:{port}/callback",
            identity_url=emulator.url,
            api_url=emulator.url,
            api_url_eu=emulator.eu_api_url,
        )
        app = create_app(settings, lambda request: "demo-user")
        with ServiceServer(app, sock=sock) as service:
            yield service.url


@pytest.fixture
def page(servers: str) -> Iterator[Any]:
    playwright_sync = pytest.importorskip("playwright.sync_api")
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = browser.new_context()  # a fresh profile for every test
            yield context.new_page()
            context.close()
        finally:
            browser.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_connect_try_and_disconnect_in_chromium(servers: str, page: Any) -> None:
    page.goto(servers + "/")
    assert page.title() == "Connections · pdauth"
    assert page.get_by_text("No PagerDuty account is connected yet").is_visible()
    shot(page, "01-home-empty")

    page.get_by_role("button", name="Connect PagerDuty").click()
    page.wait_for_url(re.compile(r".*/oauth/authorize\?.*"))
    shot(page, "02-consent")
    page.get_by_role("button", name="Approve").click()

    page.wait_for_url(servers + "/")
    assert page.get_by_text("active").first.is_visible()
    assert page.get_by_role("link", name="acme").is_visible()
    shot(page, "03-home-connected")

    page.get_by_role("link", name="acme").click()
    page.wait_for_url(re.compile(r".*/connections/pdc_.*"))
    page.get_by_role("button", name="Call PagerDuty").click()
    page.wait_for_selector("#try-users li")
    users = page.locator("#try-users li").all_inner_texts()
    assert len(users) == 5
    assert all("@" in user for user in users)
    shot(page, "04-connection-try-it")

    page.get_by_role("link", name="Disconnect…").click()
    shot(page, "05-disconnect-confirm")
    page.get_by_role("button", name="Disconnect").click()
    page.wait_for_url(servers + "/")
    assert page.get_by_text("revoked").first.is_visible()
    shot(page, "06-home-disconnected")


def test_deny_in_chromium(servers: str, page: Any) -> None:
    page.goto(servers + "/")
    page.get_by_role("button", name="Connect PagerDuty").click()
    page.wait_for_url(re.compile(r".*/oauth/authorize\?.*"))
    page.get_by_role("button", name="Deny").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Access was not granted").is_visible()
    # The address bar still shows the callback; nothing of it is on the page.
    assert "state=" in page.url
    assert "state" not in page.content().split("<main", 1)[1]
    shot(page, "07-denied")
    page.get_by_role("button", name="Try again").click()
    page.wait_for_url(re.compile(r".*/oauth/authorize\?.*"))
    page.get_by_role("button", name="Approve").click()
    page.wait_for_url(servers + "/")
    assert page.get_by_role("link", name="acme").is_visible()


def test_the_service_refuses_to_be_framed(servers: str, page: Any) -> None:
    framer = (
        "<!doctype html><title>evil</title>"
        f'<iframe id="f" src="{servers}/" width="400" height="300"></iframe>'
    )
    page.set_content(framer)
    page.wait_for_timeout(500)
    frame = page.frame_locator("#f")
    assert frame.get_by_role("button", name="Connect PagerDuty").count() == 0
    shot(page, "08-framing-blocked")
