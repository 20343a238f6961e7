"""The service's shape: no import cycle among its modules (function-local imports count), no
function over 80 lines, no module over 600, and the OpenAPI data file agrees with the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pdauth.service
from pdauth.service.connect_sessions import OWNER_PATTERN
from pdauth.service.openapi import EVENT_TYPE_PATTERN, ID_PATTERN, openapi_document

SERVICE = Path(pdauth.service.__file__).parent
MODULES = sorted(SERVICE.glob("*.py"))


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _name(path: Path) -> str:
    return "pdauth.service" if path.stem == "__init__" else f"pdauth.service.{path.stem}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in trail:
                cycles.append([*trail[trail.index(nxt) :], nxt])
            elif len(trail) < len(graph):
                visit(nxt, [*trail, nxt])

    for start in graph:
        visit(start, [start])
    return cycles


def test_no_import_cycle_among_service_modules() -> None:
    names = {_name(p) for p in MODULES}
    graph = {_name(p): (_imports(p) & names) - {_name(p)} for p in MODULES}
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    # Negative control: the checker is not blind.
    assert _cycles({"a": {"b"}, "b": {"a"}}) != []


def test_no_function_over_80_lines_and_no_module_over_600() -> None:
    long_functions = []
    for path in MODULES:
        text = path.read_text(encoding="utf-8")
        assert text.count("\n") <= 600, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                if node.end_lineno - node.lineno + 1 > 80:
                    long_functions.append(f"{path.name}:{node.name}")
    assert long_functions == []


def test_the_openapi_data_file_publishes_the_patterns_the_code_enforces() -> None:
    document = openapi_document("/x/api/v1")
    assert document["servers"] == [{"url": "/x/api/v1"}]
    text = repr(document)
    for pattern in (ID_PATTERN, EVENT_TYPE_PATTERN, OWNER_PATTERN):
        assert repr(pattern)[1:-1] in text, pattern
    # Each call is a copy: a caller's edits never leak into the next document.
    document["paths"].clear()
    assert openapi_document("/y")["paths"]
    assert re.fullmatch(ID_PATTERN.strip("^$"), "abc_DEF-1")


def test_the_documented_proxy_paths_are_the_ones_the_proxy_accepts() -> None:
    from pdauth.service.proxy import REST_RESOURCES, proxied_path

    operations = openapi_document("/api/v1")["paths"]["/connections/{connection_id}/proxy/{path}"]
    assert set(operations) == {"get", "post", "put", "patch", "delete"}
    pattern = operations["get"]["parameters"][1]["schema"]["pattern"]
    for resource in REST_RESOURCES:
        assert re.fullmatch(pattern, resource + "/P123/notes")
        assert proxied_path(resource + "/P123/notes") is not None
    for refused in ("oauth/token", "incidents/../x", "_emulator/stats"):
        assert re.fullmatch(pattern, refused) is None
        assert proxied_path(refused) is None
