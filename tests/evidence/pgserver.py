"""A private, throwaway PostgreSQL server for the tests that must stop and start one.

The machine's shared PostgreSQL (127.0.0.1:5432) serves every other test run, so the fault
tests never touch it: they ``initdb`` their own cluster into a temporary directory and run it
on a free loopback port (trust authentication, no Unix socket), then stop and start it with
``pg_ctl`` mid-test. PostgreSQL refuses to run as root, so as root every binary runs as the
``postgres`` user through ``runuser`` and the directory is handed to that user. When no
``initdb`` can be found the test fails loudly — a skip would hide that the fault test never ran.
The binaries are looked up in ``$PDAUTH_PG_BINDIR``, then ``/usr/lib/postgresql/<newest>/bin``,
then ``PATH``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psycopg
import pytest

__all__ = ["PrivatePostgres", "find_bindir"]

DATABASE = "pdauth"


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``; fails the test when there is none."""
    candidates: list[Path] = []
    override = os.environ.get("PDAUTH_PG_BINDIR")
    if override:
        candidates.append(Path(override))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(versions)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    pytest.fail(
        "initdb/pg_ctl not found (looked in $PDAUTH_PG_BINDIR, /usr/lib/postgresql/*/bin and "
        "PATH): the PostgreSQL fault-injection tests need a private server. Install the "
        "PostgreSQL server package (make services does) or set PDAUTH_PG_BINDIR.",
        pytrace=False,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivatePostgres:
    """One private PostgreSQL cluster: ``start()``, ``stop()``, ``restart()``, ``close()``.

    A context manager: entering initdb's and starts it, leaving stops it and deletes the
    directory. ``url`` is a SQLAlchemy URL of its ``pdauth`` database.
    """

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.port = _free_port()
        self._as_postgres = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="pdauth-private-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._initialised = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise AssertionError(
                f"{args[0]} {args[1] if len(args) > 1 else ''} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}\n{log}"
            )
        return result

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        self._initialised = True

    def start(self) -> None:
        """Start the server (initdb first, once) and wait until it accepts connections."""
        first = not self._initialised
        if first:
            self._initdb()
        # fsync=off: nothing here survives an OS crash anyway; commits still reach the OS, so
        # a stop in "immediate" mode (a crash of PostgreSQL itself) loses no committed write.
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' "
            "-c fsync=off -c max_connections=100 -c shared_buffers=16MB"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-o", options, "start",
        )  # fmt: skip
        self._wait_ready()
        if first:
            with psycopg.connect(self._conninfo("postgres"), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {DATABASE}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: a clean shutdown; ``immediate``: like a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", mode, "stop")

    def restart(self, down_for: float = 0.0, mode: str = "fast") -> None:
        self.stop(mode)
        if down_for > 0:
            time.sleep(down_for)
        self.start()

    def is_running(self) -> bool:
        command = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, check=False).returncode == 0

    def _conninfo(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname} connect_timeout=5"

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self._conninfo("postgres")) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        try:
            if self._initialised and self.is_running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
