"""examples/express: a Node/Express backend using pdauth's connect sessions and proxy.

With ``node`` and ``npm`` on the machine, the example's pinned dependencies are installed
(``npm ci`` from its package-lock.json) into the ignored ``.cache/examples-express`` folder,
and the server is run against a real-socket pdauth service and emulator: a user goes through
``GET /connect`` (a connect session) → the service's link page → Connect → Approve →
callback; then ``GET /incidents`` lists the user's incidents through
``/api/v1/connections/{id}/proxy/incidents``. Without Node the test skips and says why.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from pdauth.service import create_app
from pdauth.service.server import ServiceServer, bind_socket
from tests.integrations.sync_flow import consent, emulator, host_settings, path_and_query

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "express"
INSTALL = ROOT / ".cache" / "examples-express"
API_KEY = "express-example-api-key-0123456789"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are not installed; the Express example needs them",
)


def installed_example() -> Path:
    """The example with its node_modules, reinstalled only when package-lock.json changed."""
    INSTALL.mkdir(parents=True, exist_ok=True)
    lock = INSTALL / "package-lock.json"
    fresh = not (INSTALL / "node_modules").is_dir() or not (
        lock.exists() and filecmp.cmp(lock, EXAMPLE / "package-lock.json", shallow=False)
    )
    for name in ("package.json", "package-lock.json", "server.js"):
        shutil.copyfile(EXAMPLE / name, INSTALL / name)
    if fresh:
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=INSTALL,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
            pytest.skip(f"npm ci could not install the example's dependencies: {last}")
    return INSTALL


@contextmanager
def node_server(folder: Path, service_url: str) -> Iterator[str]:
    env = {**os.environ, "PDAUTH_URL": service_url, "PDAUTH_API_KEY": API_KEY, "PORT": "0"}
    with subprocess.Popen(
        ["node", "server.js"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # blocks until the server listens (or exits)
            match = re.search(r"listening on (http://\S+)", line)
            assert match, f"the Express server did not start: {line!r}"
            yield match.group(1)
        finally:
            process.terminate()
            process.wait(timeout=15)


def test_express_lists_incidents_through_the_proxy(tmp_path: Path) -> None:
    folder = installed_example()
    sock = bind_socket("127.0.0.1", 0)
    service_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with emulator(service_url + "/callback") as emulator_url:
            settings = host_settings(
                emulator_url, service_url + "/callback", str(tmp_path / "db"), api_keys=API_KEY
            )
            with (
                ServiceServer(create_app(settings), sock=sock),
                node_server(folder, service_url) as express,
            ):
                with httpx.Client() as browser:
                    # Nobody connected yet: the backend sends the user to connect.
                    first = browser.get(f"{express}/incidents?user=alice")
                    assert first.status_code == 303
                    link = browser.get(f"{express}/connect?user=alice")
                    assert link.status_code == 303
                    assert link.headers["location"].startswith(service_url + "/connect-session?")
                    page = browser.get(link.headers["location"])
                    assert page.status_code == 200
                    match = _CSRF.search(page.text)
                    assert match
                    started = browser.post(
                        service_url + "/connect",
                        data={"csrf_token": match.group(1), "connect_session": "1"},
                    )
                    assert started.status_code == 303, started.text
                    callback = consent(emulator_url, started.headers["location"])
                    done = browser.get(service_url + path_and_query(callback))
                    assert done.status_code == 303, done.text
                    listed = browser.get(f"{express}/incidents?user=alice")
                assert listed.status_code == 200, listed.text
                incidents = listed.json()["incidents"]
                assert incidents
                assert {"number", "title", "status"} <= set(incidents[0])
                assert "pdus+_" not in listed.text  # the backend never sees a PagerDuty token
    finally:
        sock.close()
