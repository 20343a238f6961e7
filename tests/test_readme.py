"""README's code is tested: every runnable block is an example file that a test executes.

A ``python`` block must follow a ``<!-- file: examples/… -->`` marker and equal that file
byte for byte; the file is executed by the test named in :data:`EXECUTED_BY` (which must
mention it). Shell blocks hold only the two set-up commands (``make demo``, ``make test``);
anything else illustrative is fenced ``text``. The library example runs here, against the
emulator, on a brand-new SQLite file. The configuration table names every setting.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from pdauth.config import Settings
from tests.integrations.host_apps import load_example
from tests.integrations.sync_flow import emulator, host_env

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_BLOCK = re.compile(r"^```([A-Za-z0-9_+-]*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_MARKER = re.compile(r"<!-- file: (\S+) -->\s*$")
RUNNABLE = {"python", "py", "sh", "bash", "shell", "console", "pycon"}

#: Each example README includes, and the test module that runs it.
EXECUTED_BY = {
    "examples/library/connect.py": "tests/test_readme.py",
    "examples/flask/app.py": "tests/integrations/test_flask.py",
    "examples/django/pdauth_example/urls.py": "tests/integrations/test_django.py",
    "examples/fastapi/app.py": "tests/integrations/test_fastapi_example.py",
}
#: How a test module names the example it runs (its path, or the module it imports).
_NAMED_AS = {
    "examples/library/connect.py": "library/connect.py",
    "examples/flask/app.py": "flask/app.py",
    "examples/django/pdauth_example/urls.py": "pdauth_example",
    "examples/fastapi/app.py": "fastapi/app.py",
}


def blocks(path: Path) -> list[tuple[str, str, str | None]]:
    """(language, body, marked file) of every fenced block in ``path``."""
    text = path.read_text()
    found = []
    for match in _BLOCK.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _MARKER.search(before)
        found.append((match.group(1), match.group(2), marker.group(1) if marker else None))
    return found


def test_every_python_block_is_an_example_file_verbatim() -> None:
    python = [b for b in blocks(README) if b[0] in ("python", "py")]
    assert python, "README should show code"
    for _, body, marked in python:
        assert marked is not None, f"a python block without a file marker:\n{body[:200]}"
        assert body == (ROOT / marked).read_text(), f"README's copy of {marked} is out of date"


def test_docs_have_no_unbacked_python_blocks() -> None:
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for lang, body, marked in blocks(doc):
            if lang in ("python", "py"):
                assert marked is not None, f"{doc.name}: a python block without a file marker"
                assert body == (ROOT / marked).read_text()


def test_shell_blocks_hold_only_the_two_set_up_commands() -> None:
    commands = []
    for lang, body, _ in blocks(README):
        assert lang in RUNNABLE or lang == "text", f"unknown fence {lang!r}"
        if lang in RUNNABLE - {"python", "py"}:
            for line in body.splitlines():
                command = line.split("#", 1)[0].strip()
                if command:
                    commands.append(command)
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.MULTILINE)
    assert re.search(r"^test:", makefile, re.MULTILINE)


def test_each_included_example_is_executed_by_a_test() -> None:
    included = {marked for _, _, marked in blocks(README) if marked is not None}
    assert included
    for marked in included:
        assert marked in EXECUTED_BY, f"{marked} is in README but no test runs it"
        runner = ROOT / EXECUTED_BY[marked]
        assert runner.exists(), f"{EXECUTED_BY[marked]} (which should run {marked}) is missing"
        assert _NAMED_AS[marked] in runner.read_text(), f"{runner.name} does not run {marked}"


def test_the_configuration_table_names_every_setting() -> None:
    table = "\n".join(line for line in README.read_text().splitlines() if line.startswith("| `"))
    for name in Settings.model_fields:
        full = f"PDAUTH_{name.upper()}"
        short = "_" + full.split("_", 1)[1]  # grouped rows: `PDAUTH_AUTHORIZE_URL`, `_TOKEN_URL`
        assert f"`{full}`" in table or f"`{short}`" in table, f"{full} is not in README's table"
    for extra in ("pdauth[postgres]", "pdauth[redis]", "pdauth[metrics]"):
        assert extra in README.read_text()


REDIRECT = "http://127.0.0.1:8000/callback"


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    with emulator(REDIRECT) as url:
        yield url


@pytest.mark.anyio
async def test_the_library_example_runs_on_a_new_sqlite_file(
    emulator_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = host_env(emulator_url, REDIRECT, str(tmp_path / "scratch.db"))
    new_file = tmp_path / "brand-new.db"
    env["PDAUTH_DATABASE_URL"] = f"sqlite:///{new_file}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    example = load_example("library/connect.py", "pdauth_library_example")

    async def approve_in_the_browser(url: str) -> str:
        """What the user does: Approve on PagerDuty's consent page; the callback's query."""
        query = dict(httpx.QueryParams(urlsplit(url).query))
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                emulator_url + "/_emulator/authorize",
                json={**query, "decision": "approve", "user": "admin@acme.example"},
            )
        assert answer.status_code == 200, answer.text
        redirect: str = answer.json()["redirect"]
        return urlsplit(redirect).query

    assert not new_file.exists()
    connection, titles = await example.connect_and_list_incidents("user-42", approve_in_the_browser)
    assert connection.owner == "user-42"
    assert connection.status == "active"
    assert titles
    assert new_file.exists()
