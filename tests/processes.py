"""Child processes for tests that run pdauth as a user would: ``python -m pdauth …``.

A :class:`Process` collects stdout and stderr on threads (no pipe can fill up and stall the
child), waits for a line that says it is ready, and stops it with a signal — failing the test,
with everything it printed, if it does not stop.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

__all__ = ["Process", "clean_env", "running"]


class Process:
    """``python -m pdauth *args`` with its output collected line by line."""

    def __init__(self, args: list[str], cwd: Path, env: Mapping[str, str]) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "pdauth", *args],
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        assert self.popen.stdout is not None
        assert self.popen.stderr is not None
        self._threads = [
            threading.Thread(target=self._drain, args=(stream, into), daemon=True)
            for stream, into in ((self.popen.stdout, self.stdout), (self.popen.stderr, self.stderr))
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _drain(stream: IO[str], into: list[str]) -> None:
        for line in stream:
            into.append(line)
        stream.close()

    @property
    def output(self) -> str:
        return "".join(self.stdout + self.stderr)

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first stdout line matching ``pattern``; fails the test if the process exits."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in list(self.stdout):
                match = regex.search(line)
                if match:
                    return match
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"no {pattern!r} in the output of the child process:\n{self.output}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            pytest.fail(f"the process did not stop on signal {sig}:\n{self.output}")
        for thread in self._threads:
            thread.join(timeout=5)
        return code

    def kill(self) -> None:
        """SIGKILL: no cleanup, no lease release, like a machine that dies."""
        self.popen.kill()
        self.popen.wait()
        for thread in self._threads:
            thread.join(timeout=5)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``PDAUTH_*`` variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDAUTH_")}
    env.update(extra)
    return env


@contextmanager
def running(args: list[str], cwd: Path, env: Mapping[str, str]) -> Iterator[Process]:
    process = Process(args, cwd, env)
    try:
        yield process
    finally:
        if process.popen.poll() is None:
            process.stop()
