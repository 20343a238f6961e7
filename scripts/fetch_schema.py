"""Fetch PagerDuty's published REST schema for the conformance tests (``make schema``).

Downloads ``reference/REST/openapiv3.json`` from the public ``PagerDuty/api-schema``
repository at one pinned commit, checks its SHA-256 against the digest pinned here, and writes
it atomically to ``.cache/pagerduty-openapi/openapiv3.json`` (ignored by git; the tests look
there, see tests/schema_lookup.py). A wrong digest writes nothing and says which digest it got.
Offline, or on any other failure, it prints one line on stderr and exits 1 — never a traceback.
Standard library only: it runs with a plain ``python3`` before any virtualenv exists.

The file is never committed: PagerDuty's repository carries no license.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

COMMIT = "91a06fb3c64b0ab2b2bd6c485d12b327dfb55c18"
URL = (
    f"https://raw.githubusercontent.com/PagerDuty/api-schema/{COMMIT}/reference/REST/openapiv3.json"
)
SHA256 = "b2e80f8b83b170f29702e96a69adf230702b4ec43dddab7e348a2985c707ef35"
MAX_BYTES = 64 * 1024 * 1024  # the document is ~2.7 MB; refuse anything absurd
TIMEOUT = 30.0
REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / ".cache" / "pagerduty-openapi" / "openapiv3.json"


class FetchError(Exception):
    """A failure worth one line to the user."""


def download(url: str | None = None, timeout: float = TIMEOUT) -> bytes:
    """The bytes at ``url`` (default :data:`URL`), at most :data:`MAX_BYTES`."""
    url = URL if url is None else url
    # Only the pinned https URL in use (tests point it at a loopback http port that refuses).
    request = urllib.request.Request(url, headers={"User-Agent": "pdauth-fetch-schema"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            data: bytes = response.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"cannot download {url} ({reason}); are you offline?") from None
    if len(data) > MAX_BYTES:
        raise FetchError(f"{url} is larger than {MAX_BYTES} bytes")
    return data


def verify(data: bytes, expected: str = SHA256) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise FetchError(f"SHA-256 mismatch: got {got}, pinned {expected}; nothing written")


def write_atomically(data: bytes, target: Path = TARGET) -> None:
    """Write to a temporary file beside ``target``, then rename it over ``target``."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".openapiv3.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        raise FetchError(f"cannot write {target}: {exc.strerror or exc}") from None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else TARGET
    try:
        if target.is_file():
            try:
                verify(target.read_bytes())
            except FetchError:
                pass  # a stale or damaged copy: fetch again
            else:
                print(f"{target} is already the pinned schema")
                return 0
        data = download()
        verify(data)
        write_atomically(data, target)
    except FetchError as exc:
        print(f"fetch_schema: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fetch_schema: interrupted; nothing written", file=sys.stderr)
        return 1
    print(f"wrote {target} (PagerDuty/api-schema@{COMMIT[:12]}, sha256 verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
