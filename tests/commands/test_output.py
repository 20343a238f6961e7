"""Shared command output: terminal-safe cells, tables, times, and the progress display."""

from __future__ import annotations

import io

import pytest

from pdauth.commands._output import (
    EXIT_CODES,
    Progress,
    clean,
    epilog,
    format_time,
    iso_time,
    print_fields,
    print_table,
)


def test_clean_escapes_control_characters() -> None:
    assert clean("plain text é") == "plain text é"
    assert clean("a\x1b[31mred\nline\x00") == "a\\x1b[31mred\\x0aline\\x00"
    assert clean(None) == ""


def test_times() -> None:
    assert iso_time(1_800_000_000.0) == "2027-01-15T08:00:00Z"
    assert iso_time(None) is None
    assert format_time(1_800_000_000.0) == "2027-01-15 08:00Z"
    assert format_time(None) == "-"


def test_table_aligns_columns_and_cleans_cells() -> None:
    out = io.StringIO()
    print_table(("ID", "OWNER"), [("pdc_1", "alice"), ("pdc_22", "b\x1bob")], stream=out)
    assert out.getvalue().splitlines() == [
        "ID      OWNER",
        "pdc_1   alice",
        "pdc_22  b\\x1bob",
    ]


def test_fields() -> None:
    out = io.StringIO()
    print_fields({"id": "pdc_1", "subdomain": None}, stream=out)
    assert out.getvalue().splitlines() == ["id:        pdc_1", "subdomain: -"]


def test_epilog_wraps_notes_and_keeps_the_exit_code_table() -> None:
    text = epilog("word " * 40)
    assert text.endswith(EXIT_CODES)
    assert all(len(line) <= 90 for line in text.splitlines())


def test_progress_prints_plain_counts_when_not_a_terminal() -> None:
    out = io.StringIO()
    with Progress("refreshing", 25, stream=out, tty=False) as progress:
        for _ in range(25):
            progress.advance("x")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[-1] == "refreshing: 25/25 (x)"
    assert len(lines) <= 11  # about every tenth of the way, not every step
    assert lines[0].startswith("refreshing: 3/25")


def test_progress_draws_a_bar_on_a_terminal() -> None:
    out = io.StringIO()
    with Progress("refreshing", 4, stream=out, tty=True) as progress:
        progress.update(2, "1 refreshed")
        progress.update(4)
    text = out.getvalue()
    assert "\rrefreshing [" + "#" * 15 + "." * 15 + "] 2/4 1 refreshed" in text
    assert "] 4/4" in text
    assert text.endswith("\n")


@pytest.mark.parametrize("total", [0, 1])
def test_progress_small_totals(total: int) -> None:
    out = io.StringIO()
    with Progress("x", total, stream=out, tty=False) as progress:
        progress.update(total)
        progress.update(total)
    assert out.getvalue() == f"x: {total}/{total}\n"
