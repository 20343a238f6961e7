"""pdauth.oauth stays pure: only allow-listed standard-library imports, no clock, no I/O.

Each file under src/pdauth/oauth/ is parsed (not imported) and every import and call is
checked, so a forbidden import hidden in a function body is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pdauth.oauth

OAUTH_DIR = Path(pdauth.oauth.__file__).parent

ALLOWED_MODULES = frozenset(
    {
        "__future__",
        "base64",
        "collections.abc",
        "dataclasses",
        "enum",
        "hashlib",
        "hmac",
        "json",
        "math",
        "re",
        "secrets",
        "string",
        "typing",
        "unicodedata",
        "urllib.parse",
        "pdauth.errors",
    }
)
OWN_PACKAGE = "pdauth.oauth"
BANNED_ROOTS = frozenset(
    {"time", "datetime", "os", "socket", "httpx", "sqlalchemy", "logging", "random"}
)
# Reading a clock, importing dynamically, or touching files.
BANNED_CALLS = frozenset(
    {
        "now",
        "utcnow",
        "today",
        "time",
        "time_ns",
        "monotonic",
        "perf_counter",
        "__import__",
        "import_module",
        "open",
        "eval",
        "exec",
    }
)


def _module_allowed(name: str) -> bool:
    return name in ALLOWED_MODULES or name == OWN_PACKAGE or name.startswith(OWN_PACKAGE + ".")


def violations(source: str) -> list[str]:
    """Every purity rule ``source`` breaks, as readable strings."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1:
                found.append(f"line {node.lineno}: relative import leaves pdauth.oauth")
                continue
            names = [f"{OWN_PACKAGE}.{node.module or ''}" if node.level else node.module or ""]
        elif isinstance(node, ast.Call):
            func = node.func
            called = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else None
            )
            if called in BANNED_CALLS:
                found.append(f"line {node.lineno}: call to {called}()")
        for name in names:
            if name.split(".")[0] in BANNED_ROOTS:
                found.append(f"line {line}: banned import {name}")
            elif not _module_allowed(name):
                found.append(f"line {line}: import {name} is not allow-listed")
    return found


def _sources() -> list[Path]:
    return sorted(OAUTH_DIR.glob("*.py"))


def test_the_package_has_the_expected_modules() -> None:
    names = {path.stem for path in _sources()}
    assert {"__init__", "pkce", "state", "scopes", "authorize", "callback"} <= names
    assert {"requests", "responses", "idtoken"} <= names


@pytest.mark.parametrize("path", _sources(), ids=lambda path: path.name)
def test_module_is_pure(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", _sources(), ids=lambda path: path.name)
def test_module_follows_the_house_rules(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), "every module opens with a docstring"
    future = [
        node
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module == "__future__"
    ]
    assert future, "from __future__ import annotations"
    assigned = {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert "__all__" in assigned


@pytest.mark.parametrize(
    "source",
    [
        "import time",
        "import datetime",
        "from datetime import datetime",
        "import os.path",
        "from os import environ",
        "import socket",
        "import httpx",
        "from sqlalchemy import select",
        "import logging",
        "from random import random",
        "import pickle",
        "from urllib import request",
        "from pdauth.store import Store",
        "from pdauth import clock",
        "from .. import errors",
        "def f():\n    import time\n",
        "x = clock.now()",
        "x = time()",
        "x = datetime.utcnow()",
        "m = __import__('os')",
        "m = importlib.import_module('os')",
        "f = open('/etc/passwd')",
    ],
)
def test_the_checker_catches_each_kind_of_violation(source: str) -> None:
    assert violations(source) != []


def test_the_checker_accepts_what_the_modules_may_do() -> None:
    source = (
        "from __future__ import annotations\n"
        "import re\n"
        "from urllib.parse import quote\n"
        "from collections.abc import Mapping\n"
        "from pdauth.errors import OAuthError\n"
        "from pdauth.oauth.state import generate_state\n"
        "from . import pkce\n"
        "x = re.compile('now').fullmatch('now')\n"
    )
    assert violations(source) == []


def test_public_names_exist_and_are_unique() -> None:
    names = pdauth.oauth.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(pdauth.oauth, name), name
