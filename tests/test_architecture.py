"""The shape of src/pdauth, enforced: no import cycles, one-way layers, small functions and modules.

Every module is parsed (never imported) and every ``import`` counts — at module level, inside
functions, and under ``if TYPE_CHECKING:`` for the layering rules (a type-only arrow is still an
arrow); cycles count the imports that run (``TYPE_CHECKING`` blocks excluded, function-local
imports included: they only postpone a cycle). The rules are the ones docs/ARCHITECTURE.md
draws. Each rule is also run on a small bad sample, so a rule that could not fail is caught;
a failure names the module, the line and the import (or function) that breaks it.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

import pdauth

SRC = Path(pdauth.__file__).parent
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 600

# Modules any layer may use because they use nothing but the standard library.
NEUTRAL = frozenset({"pdauth._net"})
# The top: the service itself, the entry points, and the adapters that embed the service's flow
# in a host framework (Starlette, Flask, Django).
ABOVE_SERVICE = (
    "pdauth.service",
    "pdauth.commands",
    "pdauth.cli",
    "pdauth.__main__",
    "pdauth.integrations",
)


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``line`` (``runtime`` False: under TYPE_CHECKING)."""

    source: str
    target: str
    line: int
    runtime: bool


# -- reading the code ---------------------------------------------------------------------------


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_package(root: Path = SRC) -> dict[str, tuple[Path, str]]:
    """Every module of the package: name → (path, source)."""
    return {
        module_name(path, root): (path, path.read_text(encoding="utf-8"))
        for path in sorted(root.rglob("*.py"))
    }


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _resolve(
    module: str, is_package: bool, node: ast.ImportFrom | ast.Import, known: Iterable[str]
) -> Iterator[str]:
    """The pdauth modules an import statement loads (a name that is a submodule counts)."""
    known_set = set(known)
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == "pdauth" or alias.name.startswith("pdauth."):
                yield alias.name
        return
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    if target != "pdauth" and not target.startswith("pdauth."):
        return
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        yield sub if sub in known_set else target


def import_edges(modules: Mapping[str, tuple[Path, str]]) -> list[Edge]:
    edges: list[Edge] = []
    for name, (path, source) in modules.items():
        tree = ast.parse(source)
        typing_only = _type_checking_lines(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                is_package = path.name == "__init__.py"
                for target in dict.fromkeys(_resolve(name, is_package, node, modules)):
                    if target != name:
                        runtime = node.lineno not in typing_only
                        edges.append(Edge(name, target, node.lineno, runtime))
    return edges


# -- the rules ------------------------------------------------------------------------------------


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """The import cycles among runtime edges: each strongly connected component of 2+ modules."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        if edge.runtime:
            graph.setdefault(edge.source, set()).add(edge.target)
            graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graph is small
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def describe_cycle(component: list[str], edges: Iterable[Edge]) -> str:
    inside = set(component)
    arrows = sorted(
        f"{e.source}:{e.line} -> {e.target}"
        for e in edges
        if e.runtime and e.source in inside and e.target in inside
    )
    return "cycle " + " / ".join(component) + "\n    " + "\n    ".join(arrows)


@dataclass(frozen=True)
class Layer:
    """Modules in ``sources`` may not import ``forbidden`` (or anything outside ``allowed``)."""

    name: str
    sources: tuple[str, ...]
    forbidden: tuple[str, ...] = ()
    allowed: tuple[str, ...] | None = None  # when set: the only pdauth modules it may import
    exempt: tuple[str, ...] = ()  # sources the rule does not cover

    def covers(self, module: str) -> bool:
        return any(within(module, s) for s in self.sources) and not any(
            within(module, e) for e in self.exempt
        )

    def breaks(self, edge: Edge) -> bool:
        if not self.covers(edge.source):
            return False
        if self.allowed is not None:
            return not any(within(edge.target, a) for a in self.allowed)
        return any(within(edge.target, f) for f in self.forbidden)


LAYERS: tuple[Layer, ...] = (
    Layer(
        "oauth/ is pure: it imports only itself and the exception tree",
        sources=("pdauth.oauth",),
        allowed=("pdauth.oauth", "pdauth.errors"),
    ),
    Layer(
        "the exception tree and the clock are the floor: they import nothing from pdauth",
        sources=("pdauth.errors", "pdauth.clock"),
        allowed=(),
    ),
    Layer(
        "emulator/ shares no code with pdauth outside it (stdlib-only helpers aside)",
        sources=("pdauth.emulator",),
        allowed=("pdauth.emulator", *NEUTRAL),
    ),
    Layer(
        "neutral helpers import nothing from pdauth",
        sources=tuple(NEUTRAL),
        allowed=(),
    ),
    Layer(
        "store/ and client/ never reach up to the service, the commands, the CLI or Connector",
        sources=("pdauth.store", "pdauth.client"),
        forbidden=("pdauth.service", "pdauth.commands", "pdauth.cli", "pdauth.connections"),
    ),
    Layer(
        "metrics observes; it never imports the store",
        sources=("pdauth.metrics",),
        forbidden=("pdauth.store",),
    ),
    Layer(
        "nothing below service/ imports service/ (only entry points and host adapters sit above)",
        sources=("pdauth",),
        forbidden=("pdauth.service",),
        exempt=ABOVE_SERVICE,
    ),
)


# The drawing of docs/ARCHITECTURE.md, bottom (0) to top: a module may import its own layer and
# the ones below. The emulator stands beside the stack (its own rule above).
DRAWING: tuple[tuple[str, ...], ...] = (
    ("pdauth.errors", "pdauth.clock", "pdauth._net", "pdauth._portal"),
    (
        "pdauth.oauth",
        "pdauth.crypto",
        "pdauth.config",
        "pdauth._config_rules",
        "pdauth.returnto",
        "pdauth.owners",
        "pdauth.logs",
        "pdauth.metrics",
    ),
    (
        "pdauth.identity",
        "pdauth.client",
        "pdauth.store",
        "pdauth.webhooks",
        "pdauth.pagerduty_webhooks",
        "pdauth.sealing",
    ),
    ("pdauth.tokens", "pdauth.token_policy"),
    (
        "pdauth.connections",
        "pdauth.connect_flow",
        "pdauth.grants",
        "pdauth.connection_types",
        "pdauth.scope_upgrades",
        "pdauth.subscriptions",
        "pdauth.sync_connector",
        "pdauth.keeper",
        "pdauth.rotation",
    ),
    ("pdauth.service",),
    ("pdauth.cli", "pdauth.__main__", "pdauth.commands", "pdauth.integrations"),
)
BESIDE = ("pdauth.emulator",)
# The one arrow against the drawing, named in docs/ARCHITECTURE.md: settings apply the store's
# database-URL rule at start-up.
CROSSING = frozenset({("pdauth.config", "pdauth.store.engine")})


def layer_of(module: str, drawing: tuple[tuple[str, ...], ...] = DRAWING) -> int | None:
    """The layer a module is drawn in (the package ``pdauth`` itself is the top), or None."""
    if module == "pdauth":
        return len(drawing) - 1
    for index, members in enumerate(drawing):
        if any(within(module, m) for m in members):
            return index
    return None


def drawing_violations(
    modules: Iterable[str],
    edges: Iterable[Edge],
    drawing: tuple[tuple[str, ...], ...] = DRAWING,
    crossing: frozenset[tuple[str, str]] = CROSSING,
) -> list[str]:
    found = [
        f"{m} is in no layer of docs/ARCHITECTURE.md: place it in DRAWING (and the drawing)"
        for m in sorted(modules)
        if layer_of(m, drawing) is None and not any(within(m, b) for b in BESIDE)
    ]
    for edge in edges:
        low, high = layer_of(edge.source, drawing), layer_of(edge.target, drawing)
        if low is None or high is None or high <= low:
            continue
        if (edge.source, edge.target) not in crossing:
            found.append(
                f"{edge.source}:{edge.line} (layer {low}) imports {edge.target} (layer {high})"
            )
    return sorted(found)


def layer_violations(edges: Iterable[Edge], layers: Iterable[Layer] = LAYERS) -> list[str]:
    return sorted(
        f"{layer.name}: {edge.source}:{edge.line} imports {edge.target}"
        + ("" if edge.runtime else " (under TYPE_CHECKING)")
        for layer in layers
        for edge in edges
        if layer.breaks(edge)
    )


def long_functions(source: str, module: str, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - first + 1
            if length > limit:
                found.append(f"{module}:{node.lineno} {node.name}() is {length} lines")
    return found


def long_module(source: str, module: str, limit: int = MAX_MODULE_LINES) -> list[str]:
    lines = len(source.splitlines())
    return [f"{module} is {lines} lines"] if lines > limit else []


# -- the package obeys them ---------------------------------------------------------------------

MODULES = read_package()
EDGES = import_edges(MODULES)


def _report(title: str, problems: list[str]) -> str:
    return f"{title} ({len(problems)}):\n  " + "\n  ".join(problems)


def test_the_package_is_read() -> None:
    assert "pdauth.oauth.pkce" in MODULES
    assert "pdauth.emulator.rest" in MODULES
    assert any(e.source == "pdauth.connections" and e.target == "pdauth.tokens" for e in EDGES)


def test_no_import_cycles() -> None:
    found = [describe_cycle(c, EDGES) for c in cycles(EDGES)]
    assert not found, _report("import cycles (function-local imports count)", found)


def test_layers_point_one_way() -> None:
    found = layer_violations(EDGES)
    assert not found, _report("imports against the layering of docs/ARCHITECTURE.md", found)


def test_the_layer_drawing_holds() -> None:
    found = drawing_violations(MODULES, EDGES)
    assert not found, _report("imports that point up the drawing of docs/ARCHITECTURE.md", found)


def test_neutral_helpers_use_only_the_standard_library() -> None:
    found: list[str] = []
    for name in NEUTRAL:
        assert name in MODULES, f"{name} is listed as neutral but does not exist"
        for node in ast.walk(ast.parse(MODULES[name][1])):
            roots: list[str] = []
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                roots = [node.module.split(".")[0]]
            found += [
                f"{name}:{getattr(node, 'lineno', 0)} imports {r}"
                for r in roots
                if r not in sys.stdlib_module_names and r != "__future__"
            ]
    assert not found, _report("neutral helpers importing outside the standard library", found)


def test_no_function_over_80_lines() -> None:
    found = [p for name, (_, src) in MODULES.items() for p in long_functions(src, name)]
    assert not found, _report(f"functions over {MAX_FUNCTION_LINES} lines", found)


def test_no_module_over_600_lines() -> None:
    found = [p for name, (_, src) in MODULES.items() for p in long_module(src, name)]
    assert not found, _report(f"modules over {MAX_MODULE_LINES} lines", found)


# -- each rule can fail: small bad samples --------------------------------------------------------


def _sample(tmp_path: Path, files: Mapping[str, str]) -> tuple[dict[str, tuple[Path, str]], Path]:
    root = tmp_path / "pdauth"
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return read_package(root), root


def test_a_cycle_hidden_in_a_function_is_found(tmp_path: Path) -> None:
    modules, _ = _sample(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pdauth import b\n",
            "b.py": "def late():\n    from pdauth.a import x\n    return x\n",
            "c.py": "import typing\nif typing.TYPE_CHECKING:\n    from pdauth import a\n",
            "d.py": "from . import c\n",
        },
    )
    edges = import_edges(modules)
    assert cycles(edges) == [["pdauth.a", "pdauth.b"]]
    assert "pdauth.b:2 -> pdauth.a" in describe_cycle(cycles(edges)[0], edges)
    # A type-only import is no cycle; a relative import is resolved.
    assert Edge("pdauth.c", "pdauth.a", 3, runtime=False) in edges
    assert Edge("pdauth.d", "pdauth.c", 1, runtime=True) in edges


@pytest.mark.parametrize(
    ("path", "source", "rule"),
    [
        ("oauth/pkce.py", "from pdauth.crypto import seal\n", "oauth/ is pure"),
        ("oauth/pkce.py", "def f():\n    import pdauth.store\n", "oauth/ is pure"),
        ("clock.py", "from pdauth.config import Settings\n", "the floor"),
        ("emulator/rest.py", "from pdauth.oauth import pkce\n", "emulator/ shares no code"),
        ("emulator/rest.py", "from ..tokens import TokenManager\n", "emulator/ shares no code"),
        ("_net.py", "from pdauth.errors import PdauthError\n", "neutral helpers"),
        ("store/database.py", "from pdauth.connections import Connector\n", "store/ and client/"),
        ("client/rest.py", "from pdauth.service import app\n", "store/ and client/"),
        ("metrics.py", "from pdauth.store import Store\n", "metrics observes"),
        ("tokens.py", "from pdauth.service.views import x\n", "nothing below service/"),
    ],
)
def test_each_layer_rule_catches_a_bad_import(
    tmp_path: Path, path: str, source: str, rule: str
) -> None:
    files = {
        "__init__.py": "",
        path: source,
        "errors.py": "",
        "crypto.py": "",
        "config.py": "",
        "connections.py": "",
        "tokens.py": source if path == "tokens.py" else "",
        "oauth/__init__.py": "",
        "store/__init__.py": "",
        "service/__init__.py": "",
        "service/views.py": "",
        "service/app.py": "",
    }
    modules, _ = _sample(tmp_path, files)
    found = layer_violations(import_edges(modules))
    assert found, f"{rule!r} let {path} import: {source!r}"
    assert any(rule in problem for problem in found), found


def test_allowed_imports_pass_the_layer_rules(tmp_path: Path) -> None:
    modules, _ = _sample(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "_net.py": "import socket\n",
            "oauth/__init__.py": "from pdauth.errors import PdauthError\nfrom . import pkce\n",
            "oauth/pkce.py": "from pdauth.oauth import _syntax\n",
            "oauth/_syntax.py": "",
            "emulator/server.py": "from pdauth._net import bind\nfrom .app import create_app\n",
            "emulator/app.py": "",
            "service/app.py": "from pdauth.connections import Connector\n",
            "commands/serve.py": "from pdauth.service.app import create_app\n",
            "integrations/flask.py": "from pdauth.service.flow import Flow\n",
            "connections.py": "",
        },
    )
    assert layer_violations(import_edges(modules)) == []


def test_the_drawing_catches_an_upward_import_and_an_unplaced_module() -> None:
    drawing = (("pdauth.errors",), ("pdauth.store",), ("pdauth.service",))
    edges = [
        Edge("pdauth.store.pending", "pdauth.errors", 1, runtime=True),  # down: fine
        Edge("pdauth.store.pending", "pdauth.service.views", 2, runtime=False),  # up, type-only
        Edge("pdauth.errors", "pdauth.store", 3, runtime=True),  # up, but the named crossing
    ]
    modules = ["pdauth.errors", "pdauth.store.pending", "pdauth.service.views", "pdauth.newcomer"]
    found = drawing_violations(
        modules, edges, drawing, frozenset({("pdauth.errors", "pdauth.store")})
    )
    assert found == [
        "pdauth.newcomer is in no layer of docs/ARCHITECTURE.md: "
        "place it in DRAWING (and the drawing)",
        "pdauth.store.pending:2 (layer 1) imports pdauth.service.views (layer 2)",
    ]
    assert layer_of("pdauth", drawing) == 2
    assert drawing_violations(modules[:3], edges[:1], drawing) == []


def test_size_rules_catch_long_code() -> None:
    long_body = "\n".join(f"    x{i} = {i}" for i in range(80))
    source = f"@decorator\ndef too_long():\n{long_body}\n\n\ndef short():\n    return 1\n"
    assert long_functions(source, "pdauth.m") == ["pdauth.m:2 too_long() is 82 lines"]
    assert long_functions("def f():\n    return 1\n", "pdauth.m") == []
    assert long_module("x = 1\n" * 601, "pdauth.m") == ["pdauth.m is 601 lines"]
    assert long_module("x = 1\n" * 600, "pdauth.m") == []
