"""Where the tests find PagerDuty's published OpenAPI document, and what they do without it.

The emulator's behaviour tests never need the document; the conformance tests (bodies checked
against PagerDuty's own response schemas, schemathesis over the REST surface) do. They look
for it in one order — ``$PDAUTH_OPENAPI_SCHEMA``; else ``<repo>/../shared/pagerduty-openapi/
openapiv3.json``; else ``<repo>/.cache/pagerduty-openapi/openapiv3.json``, where
``make schema`` (scripts/fetch_schema.py) stores it — and, when it is absent, skip with the one
reason :data:`MISSING_REASON`. A set ``PDAUTH_OPENAPI_SCHEMA`` is authoritative: when it names
no file the schema counts as absent (no silent fallback to another copy), which is also how to
run the suite as a lone clone would without moving anything.

PagerDuty's file is never committed: its repository carries no license.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["ENV_VAR", "MISSING_REASON", "REPO", "candidates", "find_schema", "require_schema"]

ENV_VAR = "PDAUTH_OPENAPI_SCHEMA"
REPO = Path(__file__).resolve().parents[1]
MISSING_REASON = (
    "PagerDuty's OpenAPI schema is not available: run `make schema` to download it "
    f"(pinned and checksummed), or set {ENV_VAR} to the file"
)


def candidates(repo: Path = REPO, environ: dict[str, str] | None = None) -> list[Path]:
    """The places looked at, in order (only the explicit one when the variable is set)."""
    env = os.environ if environ is None else environ
    override = env.get(ENV_VAR)
    if override:
        return [Path(override)]
    return [
        repo.parent / "shared" / "pagerduty-openapi" / "openapiv3.json",
        repo / ".cache" / "pagerduty-openapi" / "openapiv3.json",
    ]


def find_schema(repo: Path = REPO, environ: dict[str, str] | None = None) -> Path | None:
    """The first candidate that is a file, or None."""
    return next((path for path in candidates(repo, environ) if path.is_file()), None)


def require_schema() -> Path:
    """The schema's path; skips the calling test (or fixture) with :data:`MISSING_REASON`."""
    path = find_schema()
    if path is None:
        pytest.skip(MISSING_REASON)
    return path
