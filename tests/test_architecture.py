"""The package's layers hold: flows and the CLI on top, stages below them, the library below the
stages, and no import cycle between packages (the module graph read by segflow.stages.dependencies)."""

from __future__ import annotations

import pkgutil

import segflow
from segflow.stages.dependencies import imports_of

MODULES = [m.name for m in pkgutil.walk_packages(segflow.__path__, "segflow.")]
# Above the stages: they run them (the command line, Prefect's helpers).
ABOVE_STAGES = {"segflow.__main__", "segflow.cli", "segflow.orchestration"}


def package(module: str) -> str:
    """`segflow.data.cache` -> `data`; a top-level module is its own package."""
    return module.split(".")[1]


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        for imported in imports_of(module):
            if imported != "segflow" and package(imported) != package(module):
                graph.setdefault(package(module), set()).add(package(imported))
    return graph


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path start -> ... -> start, or None."""
    todo, seen = [[start]], set()
    while todo:
        path = todo.pop()
        for nxt in graph.get(path[-1], ()):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                todo.append(path + [nxt])
    return None


def test_no_import_cycle_between_packages():
    graph = package_graph()
    cycles = [c for c in (cycle_through(graph, p) for p in graph) if c]
    assert not cycles, f"import cycles between segflow packages: {cycles}"


def test_the_library_never_imports_a_stage():
    library = [m for m in MODULES if package(m) != "stages"
               and not any(m == top or m.startswith(f"{top}.") for top in ABOVE_STAGES)]
    offenders = {m: sorted(i for i in imports_of(m) if i.startswith("segflow.stages")) for m in library}
    assert not {m: i for m, i in offenders.items() if i}, "library modules importing stages"


def test_the_top_level_shows_the_pipelines_phases():
    """Packages name the phases; the few top-level modules are the project's plumbing."""
    packages = {m.split(".")[1] for m in MODULES if any(n.startswith(m + ".") for n in MODULES)}
    modules = {m.split(".")[1] for m in MODULES if m.count(".") == 1} - packages
    assert {"data", "validation", "planning", "training", "inference", "metrics", "registry",
            "reporting", "stages"} <= packages
    assert modules <= {"__main__", "cli", "config", "env", "errors", "files", "overrides", "paths"}, sorted(modules)
