"""The import contract: layers import only downwards, also inside functions, and no file circles.

Layers, lowest first (``ARCHITECTURE.md``)::

    core -> config -> connectors -> storage -> (sources | transforms | models | actions | sinks)
         -> runners -> evaluation -> orchestration -> api -> service -> demo -> cli

``evaluation`` runs pipeline files through the runner and scores what they wrote to the lake;
``orchestration``'s ``evaluate_model`` task uses its registered-model evaluation.

The five pipeline layers in parentheses sit side by side and do not import each other; all of
them may use ``storage`` (metadata tables, the embedded log, the lake). Every ``import`` in
every file counts, whether at the top, inside a function or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import sluice

ROOT = Path(sluice.__file__).parent
LAYERS: list[tuple[str, ...]] = [
    ("core",),
    ("config",),
    ("connectors",),
    ("storage",),
    ("sources", "transforms", "models", "actions", "sinks"),
    ("runners",),
    ("evaluation",),
    ("orchestration",),
    ("api",),
    ("service",),
    ("demo",),
    # the package facade (sluice.run, sluice.predict) and the Airflow operator entry point
    ("cli", "__init__", "airflow"),
]
# Known edges that break the contract, each with the reason it is still there.
ALLOWED: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    """The dotted module name of a file under ``src/sluice``."""
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the package by name."""
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The module that ``name`` (a module or a module attribute) lives in."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base] if base else package)
    # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules()]
    return subs or [base]


@cache
def edges() -> dict[str, set[str]]:
    """Module -> the Sluice modules it imports anywhere in its file."""
    out: dict[str, set[str]] = {}
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        found = out.setdefault(name, set())
        for node in ast.walk(tree):
            for target in _targets(node, name, path.name == "__init__.py"):
                resolved = _resolve(target) if target.startswith("sluice") else None
                # importing a submodule runs its parent packages first: not an edge of its own
                if resolved and resolved != name and not name.startswith(resolved + "."):
                    found.add(resolved)
    return out


def layer(module: str) -> tuple[int, str]:
    """The layer index of ``module`` and the name of its top-level package."""
    top = module.split(".")[1] if "." in module else "__init__"
    for index, names in enumerate(LAYERS):
        if top in names:
            return index, top
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def test_every_package_has_a_layer() -> None:
    for module in modules():
        layer(module)


def test_imports_only_go_down() -> None:
    wrong = []
    for source, targets in edges().items():
        low, top = layer(source)
        for target in targets:
            high, target_top = layer(target)
            upward = high > low or (high == low and target_top != top)
            if upward and (source, target) not in ALLOWED:
                wrong.append(f"{source} imports {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_the_allowed_exceptions_still_exist() -> None:
    stale = [
        f"{a} -> {b}" for a, b in ALLOWED if a in edges() and b not in edges()[a]
    ]  # an exception whose module moved away is moot
    assert not stale, f"remove fixed edges from ALLOWED: {stale}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_no_two_files_import_each_other() -> None:
    assert _cycles(edges()) == []


def test_the_checker_sees_imports_inside_functions() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    # the CLI imports the layers inside its command functions
    assert "sluice.runners.check" in edges()["sluice.cli.pipelines"]
    assert "sluice.orchestration.service" not in edges()["sluice.runners.stages"]
