"""SQLite engines: a brand-new database file opened by many connections at once.

WAL is stored in the file, so only a new file still needs switching; SQLite refuses all but
one of several connections switching together with "database is locked" at once (the busy
handler is skipped to avoid a deadlock). Several workers or instances starting on a new file
hit exactly that; every connection must open.
"""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from pdauth.store.engine import create_store_engine


def _open_together(path: Path, workers: int) -> list[BaseException]:
    engines = [create_store_engine(make_url(f"sqlite:///{path}")) for _ in range(workers)]
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []
    modes: list[str] = []

    def connect(engine: sa.Engine) -> None:
        barrier.wait()
        try:
            with engine.connect() as conn:
                modes.append(str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()))
        except BaseException as exc:  # collected: the assertion shows them all
            errors.append(exc)

    threads = [threading.Thread(target=connect, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine in engines:
        engine.dispose()
    assert errors or modes == ["wal"] * workers
    return errors


def test_many_connections_open_a_new_file_together(tmp_path: Path) -> None:
    for trial in range(25):
        errors = _open_together(tmp_path / f"new-{trial}.db", workers=6)
        assert errors == [], f"trial {trial}: {errors[0]!r}"
