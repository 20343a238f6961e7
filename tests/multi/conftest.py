"""Three ``pdauth serve`` processes on one PostgreSQL database and one Redis, as deployed.

Nothing here is in-process: each instance is ``python -m pdauth serve`` on its own port,
configured only through ``PDAUTH_*`` variables, sharing the database, Redis, the session secret,
the encryption keys and the API key — exactly what docs/DEPLOYMENT.md says N instances behind a
load balancer must share. The emulator runs on a real socket; the host's webhook receiver is a
small HTTP server that records what it gets. One migration runner (``pdauth.store.upgrade``)
runs before the instances start. The "load balancer" is the test: it picks the instance each
request goes to.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from pdauth.crypto import format_key, generate_key
from pdauth.emulator import EmulatorConfig, EmulatorServer
from tests.conftest import _fresh_pg_database
from tests.processes import Process, clean_env

API_KEY = "multi-instance-api-key-0123456789"
AUTH = {"authorization": f"Bearer {API_KEY}"}
WEBHOOK_SECRET = "w" * 40
REDIS_URL = "redis://127.0.0.1:6379/7"  # a database of its own, emptied per module
ACCESS_TTL = 12.0  # seconds: short enough to wait for expiry, long enough for a flow
LEASE_SECONDS = 8.0
US_ADMIN = "admin@acme.example"


class Receiver(BaseHTTPRequestHandler):
    """The host app's webhook endpoint: records every delivery's event id."""

    received: list[int]
    lock: threading.Lock

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length))
        with self.lock:
            self.received.append(int(body["id"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


@dataclass
class Cluster:
    emulator: EmulatorServer
    database_url: str
    env: dict[str, str]
    workdir: Path
    instances: list[Process] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    received: list[int] = field(default_factory=list)

    # -- instances -------------------------------------------------------------------------

    def start(self, index: int | None = None) -> None:
        """Start one instance (``index``) or all three, and wait until each listens."""
        indexes = [index] if index is not None else list(range(3))
        started = []
        for i in indexes:
            process = Process(["serve", "--port", "0"], self.workdir, self.env)
            if i < len(self.instances):
                self.instances[i] = process
            else:
                self.instances.append(process)
            started.append((i, process))
        for i, process in started:
            url = process.wait_for(r"listening on (http://127\.0\.0\.1:\d+)", 90).group(1)
            if i < len(self.urls):
                self.urls[i] = url
            else:
                self.urls.append(url)

    def stop(self) -> None:
        for process in self.instances:
            if process.popen.poll() is None:
                process.stop()

    # -- what a host backend and a browser do ------------------------------------------------

    def api(self, i: int) -> httpx.Client:
        return httpx.Client(base_url=self.urls[i], headers=AUTH, timeout=60)

    def connect(self, owner: str, *, via: tuple[int, int, int] = (0, 1, 2)) -> str:
        """One connect flow: link minted on ``via[0]``, opened and started on ``via[1]``,
        the callback answered by ``via[2]``. Returns the new connection's id."""
        mint, start, finish = via
        with self.api(mint) as backend:
            made = backend.post("/api/v1/connect-sessions", json={"owner": owner})
            assert made.status_code == 201, made.text
        link = urlsplit(made.json()["url"])
        with httpx.Client(timeout=60) as browser:
            page = browser.get(f"{self.urls[start]}{link.path}?{link.query}")
            assert page.status_code == 200, page.text
            csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            begun = browser.post(
                f"{self.urls[start]}/connect",
                data={"csrf_token": csrf, "connect_session": "1"},
            )
            assert begun.status_code == 303, begun.text
            params = dict(parse_qsl(urlsplit(begun.headers["location"]).query))
            answer = httpx.post(
                self.emulator.url + "/_emulator/authorize", json={**params, "user": US_ADMIN}
            )
            back = urlsplit(answer.json()["redirect"])
            done = browser.get(f"{self.urls[finish]}{back.path}?{back.query}")
            assert done.status_code == 303, done.text
        with self.api(mint) as backend:
            listed = backend.get("/api/v1/connections", params={"owner": owner}).json()
        (connection,) = listed["connections"]
        return str(connection["id"])

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(self.emulator.url + "/_emulator/stats").json())

    def refreshes(self) -> int:
        token = self.stats()["token_requests"].get("refresh_token", {})
        return int(token.get("ok", 0))


def instance_env(emulator_url: str, database_url: str, webhook_url: str) -> dict[str, str]:
    return clean_env(
        PDAUTH_CLIENT_ID="pdauth-demo",
        PDAUTH_CLIENT_SECRET="pdauth-demo-secret",
        PDAUTH_REDIRECT_URI="http://127.0.0.1:8000/callback",
        PDAUTH_SCOPES="read write",
        PDAUTH_IDENTITY_URL=emulator_url,
        PDAUTH_API_URL=emulator_url,
        PDAUTH_API_URL_EU=emulator_url + "/eu",
        PDAUTH_DATABASE_URL=database_url,
        PDAUTH_ENCRYPTION_KEYS=format_key(generate_key("multi1")),
        PDAUTH_SESSION_SECRET="s" * 48,
        PDAUTH_API_KEYS=API_KEY,
        PDAUTH_REDIS_URL=REDIS_URL,
        PDAUTH_HTTP_TIMEOUT="5",
        PDAUTH_LEASE_SECONDS=str(LEASE_SECONDS),
        PDAUTH_KEEPER_INTERVAL="1",
        PDAUTH_WEBHOOK_URL=webhook_url,
        PDAUTH_WEBHOOK_SECRET=WEBHOOK_SECRET,
        PDAUTH_CONNECT_RATE_LIMIT="1000",
        PDAUTH_LOG_LEVEL="WARNING",
    )


@pytest.fixture(scope="module")
def cluster(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except redis.exceptions.ConnectionError:
        pytest.fail("Redis is not running on 127.0.0.1:6379 (make test starts the services)")
    finally:
        client.close()

    received: list[int] = []
    handler = type("Handler", (Receiver,), {"received": received, "lock": threading.Lock()})
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    webhook_url = f"http://127.0.0.1:{receiver.server_address[1]}/hooks/pdauth"

    config = EmulatorConfig(access_token_ttl=int(ACCESS_TTL), rate_limit=100, rate_window=5.0)
    with _fresh_pg_database(pg_url) as database_url, EmulatorServer(config) as emulator:
        from pdauth.store import upgrade

        upgrade(database_url)  # one migration runner, before any instance starts
        env = instance_env(emulator.url, database_url, webhook_url)
        cluster = Cluster(
            emulator, database_url, env, tmp_path_factory.mktemp("multi"), received=received
        )
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
            receiver.shutdown()
            receiver.server_close()
