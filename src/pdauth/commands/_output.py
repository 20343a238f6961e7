"""Shared printing for pdauth's operations commands: tables, JSON, progress and exit codes.

Every command prints its data to stdout — a plain table for people, one JSON document with
``--json`` for scripts — and its messages, prompts and progress to stderr, so a pipe only ever
sees data. Exit codes are the same everywhere (:data:`EXIT_CODES`, shown in each command's help
epilog). Text that came from outside (owners, PagerDuty names, error descriptions) is made
terminal-safe before it is printed: control characters would otherwise let a crafted owner id
rewrite the operator's screen. The progress bar draws only when stderr is a terminal; anywhere
else a plain ``label: done/total`` line is printed every tenth of the way.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from pdauth.connection_types import iso_time

__all__ = [
    "EXIT_CODES",
    "EXIT_FAILURE",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "Progress",
    "clean",
    "epilog",
    "format_time",
    "iso_time",
    "print_fields",
    "print_json",
    "print_table",
    "report_error",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3

EXIT_CODES = """exit codes:
  0  success
  1  the operation failed (PagerDuty refused or was unreachable, the connection needs
     re-authorization, the database failed)
  2  usage or configuration error (bad arguments, PDAUTH_* settings, schema not migrated)
  3  not found (no such connection)"""

_BAR_WIDTH = 30
_HELP_WIDTH = 78


def epilog(*notes: str) -> str:
    """A help epilog: ``notes`` (paragraphs, wrapped here) followed by the exit codes.

    Commands use ``RawDescriptionHelpFormatter`` so the exit-code table keeps its layout.
    """
    return "\n\n".join([*(textwrap.fill(note, _HELP_WIDTH) for note in notes), EXIT_CODES])


def clean(value: object) -> str:
    """``value`` as one terminal-safe line: control characters shown as ``\\xNN`` escapes."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def format_time(timestamp: float | None) -> str:
    """A Unix time for a table cell (``2027-01-15 08:00Z``), ``-`` when unknown."""
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%MZ")


def _out(stream: TextIO | None) -> TextIO:
    # Looked up at call time: tests (and callers) may swap sys.stdout / sys.stderr.
    return stream if stream is not None else sys.stdout


def print_json(data: Any, *, stream: TextIO | None = None) -> None:
    """One JSON document, indented, keys sorted (stable for diffs and tests)."""
    print(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False), file=_out(stream))


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, stream: TextIO | None = None
) -> None:
    """Left-aligned columns separated by two spaces; every cell made terminal-safe."""
    cells = [[clean(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    out = _out(stream)
    for row in [list(headers), *cells]:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip(), file=out)


def print_fields(fields: Mapping[str, object], *, stream: TextIO | None = None) -> None:
    """``name: value`` lines with the values aligned (for one record)."""
    width = max((len(name) for name in fields), default=0)
    out = _out(stream)
    for name, value in fields.items():
        shown = clean(value if value is not None else "-")
        print(f"{(name + ':').ljust(width + 1)} {shown}", file=out)


def report_error(command: str, message: str) -> None:
    """``pdauth <command>: <message>`` on stderr (messages never carry secrets: errors.py)."""
    print(f"pdauth {command}: {clean(message)}", file=sys.stderr)


class Progress:
    """Progress of ``total`` steps on stderr: a bar on a terminal, plain counts elsewhere.

    ``update(done, note)`` sets the count; ``close()`` ends the line. ``tty`` overrides the
    terminal detection (tests).
    """

    def __init__(
        self,
        label: str,
        total: int,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
    ) -> None:
        self._label = label
        self._total = max(0, total)
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._done = 0
        self._next_plain = self._plain_step()
        self._printed = -1
        self._drawn = False

    def _plain_step(self) -> int:
        return max(1, -(-self._total // 10))  # ceil: at most ten lines plus the last

    def update(self, done: int, note: str = "") -> None:
        self._done = min(max(0, done), self._total)
        if self._tty:
            self._draw(note)
            return
        if self._done == self._printed:
            return
        if self._done >= self._next_plain or self._done == self._total:
            suffix = f" ({note})" if note else ""
            print(f"{self._label}: {self._done}/{self._total}{suffix}", file=self._stream)
            self._stream.flush()
            self._printed = self._done
            while self._next_plain <= self._done:
                self._next_plain += self._plain_step()

    def advance(self, note: str = "") -> None:
        self.update(self._done + 1, note)

    def _draw(self, note: str) -> None:
        filled = _BAR_WIDTH if not self._total else _BAR_WIDTH * self._done // self._total
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        suffix = f" {note}" if note else ""
        self._stream.write(f"\r{self._label} [{bar}] {self._done}/{self._total}{suffix}\x1b[K")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._tty and self._drawn:
            self._stream.write("\n")
            self._stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
