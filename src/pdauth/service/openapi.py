"""The OpenAPI 3.1 document of the JSON API (``GET /api/v1/openapi.json``).

The document is a data file shipped in the package (``openapi.json``), written by hand rather
than generated: the API is small, and a literal document is the contract a host application's
developer reads. Tests (schemathesis) check the running API against it, and a test checks that
the patterns below are the ones it publishes, so code and document cannot drift silently. Every
operation lists every status it can answer, each error body has the same
``{"error": {"code", "message"}}`` shape, and nothing in any response schema can hold a secret
except the access-token vending response, which exists to hand one out.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib.resources import files
from typing import Any

__all__ = ["API_VERSION", "EVENT_TYPE_PATTERN", "ID_PATTERN", "openapi_document"]

API_VERSION = "1.0.0"
ID_PATTERN = "^[A-Za-z0-9_-]{1,64}$"
EVENT_TYPE_PATTERN = "^[a-z][a-z_]{0,40}(\\.[a-z][a-z_]{0,40}){1,3}$"


@functools.cache
def _document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        files("pdauth.service").joinpath("openapi.json").read_text(encoding="utf-8")
    )
    return loaded


def openapi_document(server_url: str) -> dict[str, Any]:
    """The document, with ``servers[0].url`` set to where the API is mounted."""
    document = copy.deepcopy(_document())
    document["servers"] = [{"url": server_url}]
    return document
