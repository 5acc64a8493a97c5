"""Layering of the package: no import cycle between its subpackages (and root modules), counting
deferred imports too, and importing a run-time module never imports torch or the training code
(checked on the source, so it is fast)."""

from __future__ import annotations

import ast
from pathlib import Path

import sage_ros

PACKAGE_DIR = Path(sage_ros.__file__).resolve().parent

# What the ROS node, the CLI's fuse path and the ONNX/OpenVINO/TensorRT backends load: torch-free.
RUNTIME_UNITS = ("image", "pairing", "bags", "node", "tensorrt", "pipeline", "paths", "cpu_features")
RUNTIME_MODEL_MODULES = ("weights", "model_files", "model_variants", "quantize", "classes", "onnx_builder", "refiner")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _walk(node: ast.AST, into_functions: bool):
    for child in ast.iter_child_nodes(node):
        if not into_functions and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield child
        yield from _walk(child, into_functions)


def _imports(path: Path, into_functions: bool = True) -> set[str]:
    """Absolute names of the modules the file imports: everywhere, or only when it is imported
    (`into_functions=False`: leaves out the imports deferred into functions)."""
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


def _unit(module: str) -> str | None:
    """`sage_ros.X...` -> X (a subpackage or a root module); None for the package root itself."""
    parts = module.split(".")
    if parts[0] != "sage_ros" or len(parts) < 2:
        return None
    return parts[1] if (PACKAGE_DIR / parts[1]).is_dir() or (PACKAGE_DIR / f"{parts[1]}.py").is_file() else None


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}


def _unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in _sources().items():
        unit = _unit(module)
        if unit is None or unit == "__main__":
            continue
        targets = {_unit(name) for name in _imports(path)} - {None, unit}
        graph.setdefault(unit, set()).update(targets)
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


def test_no_import_cycle_between_subpackages():
    graph = _unit_graph()
    assert {"image", "pairing", "model", "evaluation", "cli", "node"} <= set(graph)
    assert _cycles(graph) == []


def test_runtime_modules_import_no_torch_or_training():
    offenders = []
    for module, path in _sources().items():
        parts = module.split(".")
        runtime = _unit(module) in RUNTIME_UNITS or (
            len(parts) > 2 and parts[1] == "model" and parts[2] in RUNTIME_MODEL_MODULES
        ) or module in ("sage_ros", "sage_ros.model", "sage_ros.evaluation.metrics")
        if not runtime:
            continue
        imported = _imports(path, into_functions=False)  # a deferred import (a test helper) costs nothing here
        bad = sorted(n for n in imported if n.split(".")[0] == "torch" or n.startswith("sage_ros.training"))
        if bad:
            offenders.append((module, bad))
    assert offenders == []


def test_package_root_keeps_only_entry_modules():
    loose = sorted(p.stem for p in PACKAGE_DIR.glob("*.py"))
    assert loose == ["__init__", "__main__", "cpu_features", "paths", "pipeline"]
