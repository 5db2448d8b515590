"""Layer contracts: the allowed import edges of docs/architecture.md ("Layers"), enforced.

The import graph is read from the source with :mod:`ast` (no import is executed), so a
forbidden edge fails here wherever it is written: at module level, inside a function
(a lazy import), or under ``if TYPE_CHECKING:``. The contracts:

- ``limen/sip``, ``limen/sdp``, ``limen/security``: the standard library and themselves
  only; ``limen/sip`` also no asyncio, sockets, threads or clock (``time``): it is sans-IO
  and takes ``now`` as an argument.
- ``limen/rtp``: the standard library, ``pylibsrtp`` and itself.
- ``limen/media`` must not import the gateway, the API, the console or the store.
- ``limen/gateway`` must not import the API or the console.
- Nothing below the gateway imports it (sip, sdp, rtp, security, transport, media, store,
  certs, config, core).
- ``limen/gateway/media.py`` (the media interface) imports no gateway module but
  ``sides``: the context may name it without an import cycle.
- No cycle between packages (``limen.<name>``), counting every edge; no cycle between
  modules through imports run at import time (module level, not type-only).

``test_contracts_catch_*`` build a synthetic package on disk and check that each kind of
forbidden edge is reported, so this test cannot pass by checking nothing.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "limen"


@dataclass(frozen=True, slots=True)
class Edge:
    source: str  # importing module, e.g. limen.sip.message
    target: str  # a limen module, or the top-level name of another distribution/stdlib
    internal: bool  # target is a limen module
    kind: str  # "runtime" (module level), "lazy" (in a function) or "type" (TYPE_CHECKING)
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line}, {self.kind})"


Graph = Mapping[str, list[Edge]]


def module_names(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name."""
    names: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def build_graph(root: Path) -> dict[str, list[Edge]]:
    """The import edges of every module under ``root`` (a package directory)."""
    modules = module_names(root)
    return {name: _module_edges(name, path, modules, root.name) for name, path in modules.items()}


def _module_edges(name: str, path: Path, modules: Mapping[str, Path], top: str) -> list[Edge]:
    is_package = path.name == "__init__.py"
    edges: list[Edge] = []

    def add(target: str, kind: str, line: int) -> None:
        internal = target == top or target.startswith(top + ".")
        edges.append(Edge(name, target if internal else target.split(".")[0], internal, kind, line))

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit_stmt(stmt, "type")
                for stmt in child.orelse:
                    visit_stmt(stmt, kind)
                continue
            inner = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit_stmt(child, "lazy" if inner and kind == "runtime" else kind)

    def visit_stmt(node: ast.AST, kind: str) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, kind, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target == top or target.startswith(top + "."):
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    add(sub if sub in modules else target, kind, node.lineno)
            else:
                add(target, kind, node.lineno)
        visit(node, kind)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), "runtime")
    return edges


def package_of(module: str) -> str:
    """``limen.sip.digest.parse`` → ``limen.sip``; ``limen.certs`` → ``limen.certs``."""
    return ".".join(module.split(".")[:2])


def in_layer(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


def cycles(nodes: Iterable[str], successors: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(successors.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(successors.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


# -- the contracts (docs/architecture.md, "Layers") --------------------------------------------

STDLIB = frozenset(sys.stdlib_module_names) | {"__future__"}
# Layer → third-party distributions it may import besides the standard library; these
# layers import no other limen package either.
SELF_CONTAINED: dict[str, frozenset[str]] = {
    "limen.sip": frozenset(),
    "limen.sdp": frozenset(),
    "limen.rtp": frozenset({"pylibsrtp"}),
    "limen.security": frozenset(),
}
# Sans-IO: no event loop, sockets, threads or clock reads (time is an argument).
NO_IO: dict[str, frozenset[str]] = {
    "limen.sip": frozenset({"asyncio", "socket", "selectors", "ssl", "threading", "time"}),
}
FORBIDDEN: dict[str, frozenset[str]] = {
    "limen.media": frozenset({"limen.gateway", "limen.api", "limen.web", "limen.store"}),
    "limen.gateway": frozenset({"limen.api", "limen.web"}),
}
BELOW_GATEWAY = (
    "limen.sip",
    "limen.sdp",
    "limen.rtp",
    "limen.security",
    "limen.transport",
    "limen.media",
    "limen.store",
    "limen.certs",
    "limen.config",
    "limen.core",
)
for _layer in BELOW_GATEWAY:
    FORBIDDEN[_layer] = FORBIDDEN.get(_layer, frozenset()) | {"limen.gateway"}
# Modules that may import only these modules of their own package.
NARROW: dict[str, frozenset[str]] = {
    "limen.gateway.media": frozenset({"limen.gateway.sides"}),
    "limen.gateway.sides": frozenset(),
}


def violations(graph: Graph, top: str = "limen") -> list[str]:
    """Every broken contract in ``graph``, one line each (empty when all hold)."""
    problems: list[str] = []
    for module, edges in sorted(graph.items()):
        for edge in edges:
            for layer, allowed in SELF_CONTAINED.items():
                if not in_layer(module, layer.replace("limen", top, 1)):
                    continue
                own = layer.replace("limen", top, 1)
                if edge.internal and not in_layer(edge.target, own):
                    problems.append(f"{layer} imports only itself: {edge}")
                elif not edge.internal and edge.target not in STDLIB | allowed:
                    problems.append(f"{layer} may not import {edge.target}: {edge}")
            for layer, banned in NO_IO.items():
                if in_layer(module, layer.replace("limen", top, 1)) and edge.target in banned:
                    problems.append(f"{layer} is sans-IO: {edge}")
            if not edge.internal:
                continue
            for layer, targets in FORBIDDEN.items():
                if not in_layer(module, layer.replace("limen", top, 1)):
                    continue
                for target in targets:
                    if in_layer(edge.target, target.replace("limen", top, 1)):
                        problems.append(f"{layer} must not import {target}: {edge}")
            narrow = NARROW.get(module.replace(top, "limen", 1))
            if narrow is not None:
                own_package = module.rsplit(".", 1)[0]
                target = edge.target.replace(top, "limen", 1)
                if in_layer(edge.target, own_package) and target not in narrow:
                    problems.append(f"{module} may import only {sorted(narrow)} here: {edge}")
    packages: dict[str, set[str]] = {}
    runtime: dict[str, set[str]] = {}
    for module, edges in graph.items():
        for edge in edges:
            if not edge.internal:
                continue
            a, b = package_of(module), package_of(edge.target)
            if a != b and b != top:  # `from limen import __version__` is the root, not a layer
                packages.setdefault(a, set()).add(b)
            if edge.kind == "runtime" and edge.target != module:
                runtime.setdefault(module, set()).add(edge.target)
    for component in cycles({package_of(m) for m in graph}, packages):
        problems.append(f"import cycle between packages: {' ⇄ '.join(component)}")
    for component in cycles(graph, runtime):
        problems.append(f"import cycle between modules at import time: {' ⇄ '.join(component)}")
    return problems


# -- the real tree -----------------------------------------------------------------------------


def test_limen_keeps_its_layer_contracts() -> None:
    graph = build_graph(ROOT)
    assert len(graph) > 100 and "limen.sip.message" in graph  # the tree was found
    assert violations(graph) == []


def test_the_cycles_issue_13_named_are_gone() -> None:
    graph = build_graph(ROOT)
    targets = {m: {e.target for e in edges} for m, edges in graph.items()}
    # certs.py sits below the store and ops (which use it) and imports only the config.
    assert {t for t in targets["limen.certs"] if t.startswith("limen")} == {"limen.config"}
    assert "limen.gateway.context" not in targets["limen.gateway.media"]
    # Side is one class, re-exported by the context for the rest of the gateway.
    from limen.gateway import context, media, sides

    assert context.Side is sides.Side and media.Side is sides.Side


# -- the checker itself, on a synthetic package -------------------------------------------------


def _tree(tmp_path: Path, files: Mapping[str, str]) -> Path:
    root = tmp_path / "fake"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for directory in [root, *root.rglob("*")]:
        if directory.is_dir() and not (directory / "__init__.py").exists():
            (directory / "__init__.py").write_text("", encoding="utf-8")
    return root


CLEAN = {
    "sip/message.py": "from __future__ import annotations\nimport re\nfrom .uri import parse\n",
    "sip/uri.py": "def parse() -> None: ...\n",
    "rtp/srtp.py": "import pylibsrtp\nfrom fake.rtp import packet\n",
    "rtp/packet.py": "import struct\n",
    "media/relay.py": "import asyncio\nfrom fake.rtp import srtp\nfrom fake.sdp import parse\n",
    "sdp/parse.py": "import re\n",
    "gateway/sides.py": "import enum\n",
    "gateway/media.py": "from fake.gateway.sides import Side\n",
    "gateway/context.py": (
        "from typing import TYPE_CHECKING\nfrom fake.gateway.sides import Side\n"
        "if TYPE_CHECKING:\n    from fake.gateway.media import MediaController\n"
    ),
    "gateway/calls.py": "from fake.gateway import context\nfrom fake.sip import message\n",
    "api/app.py": "from fake.gateway import calls\n",
}


def _check(tmp_path: Path, extra: Mapping[str, str]) -> list[str]:
    return violations(build_graph(_tree(tmp_path, {**CLEAN, **extra})), top="fake")


def test_contracts_hold_on_a_clean_synthetic_tree(tmp_path: Path) -> None:
    graph = build_graph(_tree(tmp_path, CLEAN))
    kinds = {(e.source, e.target): e.kind for edges in graph.values() for e in edges}
    assert kinds[("fake.gateway.context", "fake.gateway.media")] == "type"
    assert kinds[("fake.sip.message", "fake.sip.uri")] == "runtime"  # relative import
    assert kinds[("fake.rtp.srtp", "pylibsrtp")] == "runtime"
    assert violations(graph, top="fake") == []


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        # The sans-IO core reading the clock, or using the event loop, even lazily.
        ({"sip/timer.py": "def now() -> float:\n    import time\n"}, "is sans-IO"),
        ({"sip/loop.py": "import asyncio.events\n"}, "is sans-IO"),
        # A third-party library in a stdlib-only layer; the SDP layer importing RTP.
        ({"sdp/fast.py": "import attrs\n"}, "limen.sdp may not import attrs"),
        ({"sdp/keys.py": "from fake.rtp import srtp\n"}, "limen.sdp imports only itself"),
        ({"security/ban.py": "from fake.sip import uri\n"}, "limen.security imports only"),
        # A type-only import counts: it is still a dependency on the higher layer.
        (
            {
                "media/call.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                "    from fake.gateway.context import X\n"
            },
            "limen.media must not import limen.gateway",
        ),
        ({"media/db.py": "import fake.store.models\n"}, "limen.media must not import limen.store"),
        (
            {"gateway/web.py": "from fake.api import app\n"},
            "limen.gateway must not import limen.api",
        ),
        ({"transport/udp.py": "from fake.gateway import calls\n"}, "must not import limen.gateway"),
        (
            {"gateway/media.py": "from fake.gateway.context import Side\n"},
            "may import only ['limen.gateway.sides']",
        ),
        # Packages importing each other (through a lazy import) and a module cycle.
        (
            {
                "certs.py": "def f() -> None:\n    from fake.store import Store\n",
                "store/__init__.py": "from fake.certs import f\n",
            },
            "import cycle between packages: fake.certs ⇄ fake.store",
        ),
        (
            {"sip/uri.py": "from fake.sip import message\n"},
            "import cycle between modules at import time: fake.sip.message ⇄ fake.sip.uri",
        ),
    ],
)
def test_contracts_catch_a_forbidden_edge(
    tmp_path: Path, extra: Mapping[str, str], expected: str
) -> None:
    problems = _check(tmp_path, extra)
    assert any(expected in p for p in problems), problems


def test_a_type_only_cycle_between_modules_is_allowed(tmp_path: Path) -> None:
    """context → media is type-only and media → sides: no cycle. A type-only import back
    from a module that is imported at run time is not an import-order cycle either."""
    extra = {
        "gateway/calls.py": "from fake.gateway import context\n",
        "gateway/context.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from fake.gateway.calls import Call\n"
        ),
    }
    assert _check(tmp_path, extra) == []
