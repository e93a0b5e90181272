"""The segflow code a stage runs: its import closure, read statically from the source (`ast`).

`dvc.yaml` lists each stage's code deps by hand, so that it stays readable; a test checks that
list against `stage_code` here, so a module a stage starts to import cannot be left out (DVC
would serve stale results). The train stage hashes the same files into its resume fingerprint.
Infrastructure that shapes no result (config parsing, atomic file writes, paths, errors, W&B)
is left out on purpose: `INFRASTRUCTURE` names it.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

PACKAGE = "segflow"
INFRASTRUCTURE = frozenset({
    "segflow", "segflow.config", "segflow.files", "segflow.paths", "segflow.errors", "segflow.env",
    "segflow.tracking", "segflow.tracking.runs", "segflow.tracking.provenance", "segflow.stages",
    "segflow.processes", "segflow.processes.parent_watch", "segflow.stages.dependencies",
})
# Stages whose params reach them through the plan (stages.stage_params -> resolve_params).
PLAN_READER = "segflow.planning.plan"


def module_file(module: str) -> Path | None:
    """The source file of a segflow module (a package's __init__.py), or None when there is none."""
    spec = importlib.util.find_spec(module)
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _imported_names(node: ast.AST) -> list[str]:
    """segflow modules named by one import statement (`from pkg import name` may name a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
            and node.module.split(".")[0] == PACKAGE:
        submodules = [f"{node.module}.{a.name}" for a in node.names if _is_module(f"{node.module}.{a.name}")]
        return [node.module, *submodules]
    return []


def _with_parents(module: str) -> list[str]:
    """`a.b.c` and the packages importing it runs first: a.b, a."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


@cache
def imports_of(module: str) -> frozenset[str]:
    """Every segflow module `module` imports, at module level or inside a function."""
    source = module_file(module)
    if source is None:
        return frozenset()
    tree = ast.parse(source.read_text(), filename=str(source))
    found = {parent for node in _runtime_nodes(tree) for name in _imported_names(node) for parent in _with_parents(name)}
    return frozenset(found - {module})


def _is_type_checking(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`): imports there never run."""
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING")


def _runtime_nodes(node: ast.AST):
    """Every node of `node`'s tree that can run (the bodies of `if TYPE_CHECKING:` left out)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if _is_type_checking(child):
            for other in child.orelse:
                yield from _runtime_nodes(other)
        else:
            yield from _runtime_nodes(child)


def import_closure(roots: list[str], stop_at: frozenset[str] = frozenset()) -> set[str]:
    """`roots` and every segflow module they reach through imports; the imports of a module in
    `stop_at` are not followed (infrastructure: what it imports is its own business)."""
    seen: set[str] = set()
    todo = [parent for root in roots for parent in _with_parents(root)]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(imports_of(module) if module not in stop_at else ())
    return seen


def _holds_code(module: str) -> bool:
    """False for a package __init__ that is a docstring only (importing it runs nothing)."""
    source = module_file(module)
    if source is None:
        return False
    body = ast.parse(source.read_text()).body
    return not all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def stage_code(stage: str, planned: bool) -> set[str]:
    """The segflow modules whose code the stage runs, infrastructure left out. `planned`: the
    stage reads params through the plan, so the plan's reader is part of it."""
    roots = [f"segflow.stages.{stage}"] + ([PLAN_READER] if planned else [])
    return {m for m in import_closure(roots, INFRASTRUCTURE) if m not in INFRASTRUCTURE and _holds_code(m)}


def code_files(modules: set[str]) -> list[Path]:
    """The source files of `modules`, sorted."""
    return sorted(path for path in map(module_file, modules) if path is not None)
