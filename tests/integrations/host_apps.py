"""Shared by the host-app tests: loading an example by path, the secrets a flow produced, and
the canary scan over what the host logged and served."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qsl, urlsplit

from tests.integrations.sync_flow import CLIENT_SECRET, SESSION_SECRET
from tests.test_connections_canary import leaks

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def load_example(relative: str, name: str) -> ModuleType:
    """Import ``examples/<relative>`` as module ``name`` (examples are not a package)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / relative)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Secrets:
    """Every secret value a test flow handled; the canary scan looks for each of them."""

    values: list[str] = field(default_factory=lambda: [CLIENT_SECRET, SESSION_SECRET])

    def add(self, *values: str | None) -> None:
        self.values.extend(v for v in values if v)

    def add_callback(self, callback_url: str) -> None:
        params = dict(parse_qsl(urlsplit(callback_url).query))
        self.add(params.get("code"), params.get("state"))

    def found_in(self, text: str) -> list[str]:
        return leaks(text.encode("utf-8", "replace"), self.values)


class WebhookReceiver:
    """A local HTTP endpoint that records the webhooks the keeper posts (a context manager)."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.received.append((dict(self.headers.items()), body))
                receiver.arrived.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/hooks/pdauth"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=15)
