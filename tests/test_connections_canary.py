"""Canary tokens: what reaches the database is ciphertext, bound to its row and column.

Every token the emulator issued during a full flow (plus the flow's state, binding and the
client secret) is searched for in the raw SQLite files (database, WAL, shared memory) and in a
``pg_dump``, as raw text, hex and base64 at every alignment. Ciphertexts swapped between rows
must not decrypt.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from pdauth.emulator import EmulatorConfig
from pdauth.errors import DecryptionError
from tests.workers.harness import DEMO_SECRET, EU_ADMIN, Harness, harness

pytestmark = pytest.mark.anyio

TTL = 1000


def encodings(secret: str) -> list[bytes]:
    """The forms a leaked secret could take in a dump: raw, %-encoded, hex, base64 (3 offsets)."""
    raw = secret.encode()
    forms = [raw, raw.replace(b"+", b"%2B"), raw.hex().encode(), raw.hex().upper().encode()]
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * offset + raw)
            # Drop the characters that mix in the prefix, and the final (partial) group.
            forms.append(encoded[(4 * offset + 2) // 3 : -4])
    return forms


def leaks(blob: bytes, secrets: list[str]) -> list[str]:
    found = []
    for secret in secrets:
        if any(form and form in blob for form in encodings(secret)):
            found.append(secret[:8] + "…")
    return found


@pytest.fixture
async def h(db_url: str) -> AsyncIterator[Harness]:
    async with harness(db_url, config=EmulatorConfig(access_token_ttl=TTL)) as h:
        yield h


async def full_flow(h: Harness) -> list[str]:
    """Two connections, one refresh, one pending flow; returns every secret involved."""
    us = await h.connect("owner-1")
    eu = await h.connect("owner-2", user=EU_ADMIN)
    h.advance(TTL * 0.95)
    await h.connector.access_token(us.id)
    await h.connector.access_token(eu.id)
    pending = await h.connector.begin("owner-3")
    assert h.token_count("refresh_token") == 2
    secrets = [
        *h.state.access_tokens,
        *h.state.refresh_tokens,
        *h.state.codes,
        pending.state,
        pending.binding,
        DEMO_SECRET,
    ]
    assert len(secrets) >= 11
    return secrets


def test_the_canary_scan_can_see_a_leak() -> None:
    token = "pdus+_0XABCDE_0c5a8a64-8b2f-4b8e-9f73-2f4c2b6b9f11"
    for blob in (
        b"...." + token.encode() + b"....",
        b"x" + base64.b64encode(b"ab" + token.encode()) + b"y",
        token.encode().hex().encode(),
    ):
        assert leaks(blob, [token])
    assert not leaks(b"nothing to see", [token])


async def test_the_database_files_hold_no_token_plaintext(db_url: str, h: Harness) -> None:
    secrets = await full_flow(h)
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        files = [Path(url.database + suffix) for suffix in ("", "-wal", "-shm")]
        blob = b"".join(f.read_bytes() for f in files if f.exists())
        assert len(blob) > 4096
    else:
        pg_dump = shutil.which("pg_dump")
        if pg_dump is None:
            pytest.fail("pg_dump is needed for the PostgreSQL canary scan")
        libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
        dump = subprocess.run([pg_dump, "--dbname", libpq], capture_output=True, check=True)
        blob = dump.stdout
        assert b"CREATE TABLE" in blob
    # The rows are there, encrypted...
    rows = await h.store.list_connections()
    assert all(r.access_token_ct and r.access_token_ct.startswith("v1.") for r in rows)
    # ...and none of the secrets, in any encoding.
    assert leaks(blob, secrets) == []


async def test_ciphertexts_swapped_between_rows_fail_to_decrypt(db_url: str, h: Harness) -> None:
    first = await h.connect("owner-1")
    second = await h.connect("owner-2", user=EU_ADMIN)
    engine = h.store.store.engine
    with engine.begin() as conn:
        cts: dict[str, str] = dict(
            conn.execute(
                sa.text("SELECT id, access_token_ct FROM connections WHERE id IN (:a, :b)"),
                {"a": first.id, "b": second.id},
            ).all()
        )
        for this, that in ((first.id, second.id), (second.id, first.id)):
            conn.execute(
                sa.text("UPDATE connections SET access_token_ct = :ct WHERE id = :i"),
                {"ct": cts[that], "i": this},
            )
    fresh = h.another_connector()  # no cache: it must read (and decrypt) the rows
    for conn_id in (first.id, second.id):
        with pytest.raises(DecryptionError):
            await fresh.access_token(conn_id)
    row = await h.store.get_connection(first.id)
    assert row is not None
    assert row.status == "active"  # quarantined by the error, not wiped

    # The refresh-token column of the same row is another binding too.
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE connections SET refresh_token_ct = access_token_ct, "
                "access_expires_at = :t WHERE id = :i"
            ),
            {"t": h.clock.now() - 1, "i": first.id},
        )
    with pytest.raises(DecryptionError):
        await h.another_connector().access_token(first.id)
    assert h.refreshes() == 0
    row = await h.store.get_connection(first.id)
    assert row is not None
    assert row.status == "active"
    assert row.lease_owner is None  # the lease taken for the refresh was given back
