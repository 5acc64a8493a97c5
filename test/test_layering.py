"""Layering of the package, checked on the source (fast):

- no import cycle anywhere: between any two modules of the package, deferred imports included, and
  between its subpackages;
- the torch-free set comes from the layout: only `sage_ros.networks` (the PyTorch definitions) and
  `sage_ros.training` (offline training) may import torch, and nothing outside `sage_ros.training` imports
  it; run-time modules import neither at module level (a deferred import inside a function, e.g. the
  PyTorch exporter where it is installed, costs a robot nothing).
"""

from __future__ import annotations

import ast
from pathlib import Path

import sage_ros

PACKAGE_DIR = Path(sage_ros.__file__).resolve().parent
TORCH_UNITS = ("networks", "training")  # the only subpackages whose modules may import torch at import time


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _walk(node: ast.AST, into_functions: bool):
    for child in ast.iter_child_nodes(node):
        if not into_functions and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(child, ast.If) and _is_type_checking(child):
            continue  # annotations only: never imported at run time
        yield child
        yield from _walk(child, into_functions)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, into_functions: bool = True) -> set[str]:
    """Absolute names of the modules the file imports: everywhere, or only when it is imported."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    names: set[str] = set()
    for node in _walk(tree, into_functions):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}


def _unit(module: str) -> str | None:
    """`sage_ros.X...` -> X (a subpackage or a root module); None for the package root itself."""
    parts = module.split(".")
    if parts[0] != "sage_ros" or len(parts) < 2:
        return None
    return parts[1] if (PACKAGE_DIR / parts[1]).is_dir() or (PACKAGE_DIR / f"{parts[1]}.py").is_file() else None


def _module_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (an imported name resolves to its longest module prefix).
    A package's own __init__ is not an edge of its members (importing a submodule runs it anyway)."""
    sources = _sources()
    graph: dict[str, set[str]] = {}
    for module, path in sources.items():
        targets = set()
        for name in _imports(path):
            parts = name.split(".")
            while parts and ".".join(parts) not in sources:
                parts.pop()
            target = ".".join(parts)
            if target and target != module and target != "sage_ros" and not module.startswith(target + "."):
                targets.add(target)
        graph[module] = targets
    return graph


def _unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, targets in _module_graph().items():
        unit = _unit(module)
        if unit is None or unit == "__main__":
            continue
        graph.setdefault(unit, set()).update({_unit(t) for t in targets} - {None, unit})
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_cycle_finder_finds_a_planted_circle():
    # The checks below are only as good as the finder: a two-module circle and a longer one are found.
    assert _cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_between_any_two_modules():
    graph = _module_graph()
    assert len(graph) > 50 and "sage_ros.pipeline.builder" in graph
    assert _cycles(graph) == []


def test_no_import_cycle_between_subpackages():
    graph = _unit_graph()
    assert {"image", "pairing", "model", "networks", "graphs", "pipeline", "evaluation", "cli", "node"} <= set(graph)
    assert _cycles(graph) == []


def test_only_the_torch_units_import_torch_and_nothing_imports_training():
    offenders = []
    for module, path in _sources().items():
        unit = _unit(module)
        if unit in TORCH_UNITS:
            continue
        imported = _imports(path, into_functions=False)
        bad = sorted(n for n in imported if n.split(".")[0] == "torch" or n.startswith("sage_ros.training")
                     or n.startswith("sage_ros.networks"))
        if bad:
            offenders.append((module, bad))
    assert offenders == []


def test_run_time_units_never_reach_training():
    # Not even deferred: the node, the pipeline and the backends are what a robot runs.
    offenders = []
    for module, path in _sources().items():
        if _unit(module) in ("node", "pipeline", "backends", "image", "pairing", "tensorrt", "model", "graphs"):
            bad = sorted(n for n in _imports(path) if n.startswith("sage_ros.training"))
            if bad:
                offenders.append((module, bad))
    assert offenders == []


def test_package_root_keeps_only_entry_modules():
    loose = sorted(p.stem for p in PACKAGE_DIR.glob("*.py"))
    assert loose == ["__init__", "__main__", "cpu_features", "paths"]
