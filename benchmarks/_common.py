"""Shared helpers for the benchmarks: the machine description, tables, JSON reports, databases.

Every benchmark in this folder is a script (``.venv/bin/python benchmarks/bench_x.py``), so this
module is imported as ``_common`` (the script's folder is on ``sys.path``). It holds what more
than one benchmark needs and nothing that measures: a description of the machine (CPU count and
model, memory, Python, load average, UTC date) stored in every JSON report so a figure can be
traced to the box that produced it, an aligned text table, throw-away SQLite and PostgreSQL
databases, and a bulk seeder of encrypted connection rows (AES-GCM bound to each row, as the
TokenManager writes them) for the benchmarks that need many connections.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pdauth.crypto import KeyRing
from pdauth.sealing import GrantKey, Sealer, TokenColumn
from pdauth.store import Store
from pdauth.store.schema import connections

__all__ = [
    "PG_URL_DEFAULT",
    "add_common_arguments",
    "machine_info",
    "percentile",
    "postgres_database",
    "print_table",
    "seed_connections",
    "sqlite_database",
    "write_report",
]

PG_URL_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/pdauth_test"


def add_common_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """``--json DIR`` and ``--quick``, the two options every benchmark accepts."""
    parser.add_argument("--json", metavar="DIR", help=f"also write {name}.json into DIR")
    parser.add_argument("--quick", action="store_true", help="a smoke run (small sizes)")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    """What a reader needs to judge a figure: CPUs, memory, Python, load, date (UTC)."""
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mem_total_gib": _mem_total_gib(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1_5_15": load,
    }


def write_report(directory: str | None, name: str, payload: dict[str, Any]) -> Path | None:
    """Write ``payload`` (plus the machine description) as ``DIR/<name>.json``."""
    if not directory:
        return None
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    report = {"benchmark": name, "machine": machine_info(), **payload}
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """An aligned text table: the first column left-aligned, the others right-aligned."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            if abs(value) < 1:
                return f"{value:.3f}"
            return f"{value:.2f}" if abs(value) < 10 else f"{value:,.1f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))

    def line(values: Sequence[str]) -> str:
        parts = [v.ljust(widths[i]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(values)]
        return "  ".join(parts)

    print()
    print(title)
    print(line(list(headers)))
    print("-" * len(line(list(headers))))
    for row in text:
        print(line(row))
    sys.stdout.flush()


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` in [0, 1]); None for no values."""
    if not values:
        return None
    if fraction == 0.5:
        return statistics.median(values)
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- databases ---------------------------------------------------------------------------------


@contextmanager
def sqlite_database() -> Iterator[str]:
    """A SQLite database file in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="pdauth-bench-") as tmp:
        yield "sqlite:///" + os.path.join(tmp, "bench.db")


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh ``pdauth_bench_<random>`` database on ``PDAUTH_TEST_PG_URL``'s server, dropped
    afterwards (raises when the server is unreachable: callers report that as skipped)."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo
    from sqlalchemy.engine import make_url

    base = make_url(os.environ.get("PDAUTH_TEST_PG_URL", PG_URL_DEFAULT))
    admin = make_conninfo(
        host=base.host or "127.0.0.1",
        port=base.port or 5432,
        user=base.username or "postgres",
        password=base.password,
        dbname="postgres",
        connect_timeout=5,
    )
    name = "pdauth_bench_" + os.urandom(6).hex()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def seed_connections(
    store: Store,
    keys: KeyRing,
    count: int,
    *,
    prefix: str = "pdc_bench",
    owner_of: int = 1,
    now: float | None = None,
) -> list[str]:
    """Bulk-insert ``count`` active connections with encrypted tokens valid for 30 days.

    Owner ``owner-<i // owner_of>`` (``owner_of`` connections per owner), user ``PU<i>``,
    account ``PBENCH1``. The tokens are made up: PagerDuty (the emulator) does not know them, so
    they are only good for vending, never for a REST call. Returns the connection ids.
    """
    now = time.time() if now is None else now
    sealer = Sealer(keys)
    ids: list[str] = []
    chunk: list[dict[str, Any]] = []

    def flush() -> None:
        if chunk:
            with store.engine.begin() as conn:
                conn.execute(sa.insert(connections), chunk)
            chunk.clear()

    for i in range(count):
        owner, user, cid = f"owner-{i // owner_of}", f"PU{i:07d}", f"{prefix}{i:09d}"

        def seal(value: str, column: TokenColumn, owner: str = owner, user: str = user) -> str:
            return sealer.seal_token(GrantKey(owner, "user", "PBENCH1", user), column, value)

        ids.append(cid)
        chunk.append(
            {
                "id": cid,
                "owner": owner,
                "kind": "user",
                "region": "us",
                "account_id": "PBENCH1",
                "subdomain": "bench",
                "pd_user_id": user,
                "pd_user_name": f"Bench User {i}",
                "pd_user_email": f"user{i}@bench.example",
                "delegation_id": None,
                "scopes": "openid read write",
                "status": "active",
                "access_token_ct": seal(f"pdus+_0BENCH_{i:09d}-access", "access_token"),
                "refresh_token_ct": seal(f"pdus+_1BENCH_{i:09d}-refresh", "refresh_token"),
                "key_id": keys.primary_key_id,
                "access_expires_at": now + 30 * 86_400,
                "refresh_expires_at": now + 210 * 86_400,
                "token_version": 1,
                "lease_owner": None,
                "lease_until": None,
                "created_at": now,
                "updated_at": now,
                "last_refreshed_at": now,
                "last_used_at": None,
                "last_error_code": None,
                "last_error_message": None,
                "last_error_at": None,
            }
        )
        if len(chunk) >= 5000:
            flush()
    flush()
    if store.dialect == "postgresql":
        with store.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE connections"))
    return ids
