"""The layers of docs/architecture.md, counted the honest way: every import statement of every
module, inside functions and ``if TYPE_CHECKING:`` blocks included (import-linter's contracts
in ``make test`` are the same table, read from pyproject.toml here so there is one).

Checked: every module belongs to a layer; no import reaches a higher layer; no import cycle
between modules, nor between the children of any package (``bench -> record -> bench`` is a
cycle even when the modules involved differ); huggingface_hub only in ``gradience_hub.hub``,
PyGithub only in ``gradience_hub.github``, click / fastapi / uvicorn only in the apps layer; no
module imports another module's underscore names.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gradience_hub"


def _contracts() -> list[dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(config["tool"]["importlinter"]["contracts"])


def layers() -> list[list[str]]:
    """The layers, lowest first, each a list of top-level modules."""
    (contract,) = [c for c in _contracts() if c["type"] == "layers"]
    return [[name.strip() for name in layer.split(":")] for layer in reversed(contract["layers"])]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _owner(name: str) -> str:
    """The module of ours that ``name`` (a module or a name inside one) belongs to."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports(module: str) -> list[tuple[str, int, str | None]]:
    """(imported module or top-level package, line, imported name) for every import statement
    in ``module``, wherever it stands."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES:
                    found.append((full, node.lineno, None))
                else:
                    found.append((base, node.lineno, alias.name))
    return found


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for module in MODULES:
        for target, _, _ in imports(module):
            if target == "gradience_hub" or target.startswith("gradience_hub."):
                owner = _owner(target)
                if owner != module:
                    edges[module].add(owner)
    return edges


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, or None (depth-first search, colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def top(module: str) -> str:
    """The top-level module or package of ours that holds ``module``."""
    return ".".join(module.split(".")[:2])


def layer_of() -> dict[str, int]:
    return {name: i for i, layer in enumerate(layers()) for name in layer}


def test_every_module_has_a_layer() -> None:
    table = layer_of()
    missing = sorted({top(m) for m in MODULES if m != "gradience_hub"} - set(table))
    assert missing == [], f"add these to [tool.importlinter] layers: {missing}"


def test_no_import_reaches_a_higher_layer() -> None:
    table = layer_of()
    names = [" : ".join(layer) for layer in layers()]
    upward = [
        f"{source} (layer {table[top(source)]}) imports {target} (layer {table[top(target)]}: "
        f"{names[table[top(target)]]})"
        for source, targets in graph().items()
        for target in targets
        if top(target) in table  # a module without a layer: test_every_module_has_a_layer
        and top(source) in table
        and table[top(target)] > table[top(source)]
    ]
    assert upward == []


def test_no_module_cycle() -> None:
    assert cycle(graph()) is None


def test_no_package_cycle() -> None:
    """For every package, the imports between its children (modules and subpackages, each
    with everything under it) form no cycle."""
    edges = graph()
    packages = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    for package in sorted(packages):
        depth = package.count(".") + 2

        def child(module: str, package: str = package, depth: int = depth) -> str | None:
            inside = module.startswith(package + ".")
            return ".".join(module.split(".")[:depth]) if inside else None

        collapsed: dict[str, set[str]] = defaultdict(set)
        for source, targets in edges.items():
            for target in targets:
                a, b = child(source), child(target)
                if a and b and a != b:
                    collapsed[a].add(b)
        assert cycle(collapsed) is None, f"a cycle between the children of {package}"


def _external(forbidden: str) -> dict[str, list[str]]:
    """Our modules that import the outside package ``forbidden`` (a statement anywhere)."""
    users: dict[str, list[str]] = defaultdict(list)
    for module in MODULES:
        for target, line, _ in imports(module):
            if target == forbidden or target.startswith(forbidden + "."):
                users[module].append(f"l.{line}")
    return users


def test_outside_systems_have_one_importer_each() -> None:
    assert {top(m) for m in _external("huggingface_hub")} == {"gradience_hub.hub"}
    assert set(_external("github")) == {"gradience_hub.github"}
    apps = set(layers()[-1])
    for framework in ("click", "fastapi", "uvicorn"):
        below = {m: lines for m, lines in _external(framework).items() if top(m) not in apps}
        assert below == {}, f"{framework} imported below the apps layer"


def test_the_contracts_list_every_other_module_for_the_outside_systems() -> None:
    """The forbidden contracts name every top-level module except the one allowed, so a new
    module is checked by import-linter too."""
    everything = {name for layer in layers() for name in layer}
    allowed = {
        "huggingface_hub": {"gradience_hub.hub"},
        "github": {"gradience_hub.github"},
        "click": set(layers()[-1]),
    }
    for contract in _contracts():
        if contract["type"] != "forbidden":
            continue
        (key,) = [k for k in allowed if k in contract["forbidden_modules"]]
        assert set(contract["source_modules"]) == everything - allowed[key], contract["name"]


def test_no_module_imports_another_modules_private_names() -> None:
    private = [
        f"{module} l.{line}: {target}.{name}"
        for module in MODULES
        for target, line, name in imports(module)
        if name is not None
        and name.startswith("_")
        and not name.startswith("__")
        and (target == "gradience_hub" or target.startswith("gradience_hub."))
        and target != module
    ]
    assert private == []


def test_no_function_over_80_lines() -> None:
    """The thirteen functions that were longer when the limit came in (issue 20) are split."""
    long = set()
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            functions = (ast.FunctionDef, ast.AsyncFunctionDef)
            if isinstance(node, functions) and (node.end_lineno or 0) - node.lineno + 1 > 80:
                long.add(f"{module}.{node.name}")
    assert sorted(long) == []


def test_a_module_over_500_lines_says_why_at_its_top() -> None:
    """The reason is a ``# Over 500 lines: ...`` comment right after the docstring."""
    unexplained = []
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        if len(lines) > 500 and not any(
            line.startswith("# Over 500 lines: ") for line in lines[:60]
        ):
            unexplained.append(f"{module} ({len(lines)} lines)")
    assert unexplained == []
