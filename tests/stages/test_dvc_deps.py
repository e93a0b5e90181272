"""dvc.yaml is honest: every stage lists the segflow code it runs and the params it reads.

DVC reruns a stage only when a listed dep or param changes, so a module or key missing from
dvc.yaml makes DVC serve stale results. The code a stage runs is its import closure
(`segflow.stages.dependencies`); the params it reads are found in that code by `ast`: attribute
chains `<...>.<section>.<key>`, names bound to a section (`cfg = params.train`, `cfg:
TrainConfig`), and whole-section reads (`.model_dump()`, `.network_args()`).
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from segflow.config import Params, Section
from segflow.stages import PER_FOLD, PLANNED, STAGES
from segflow.stages.dependencies import code_files, module_file, stage_code

SECTIONS = {name.rstrip("_"): field.annotation for name, field in Params.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, Section)}
ATTRIBUTES = {name: name.rstrip("_") for name in Params.model_fields}  # validate_ -> validate
SECTION_OF_CLASS = {cls.__name__: section for section, cls in SECTIONS.items()}
WHOLE_SECTION_CALLS = {"model_dump", "model_dump_json", "network_args", "check_options"}
# A per-fold stage reads split.folds narrowed to its own --fold (stages.stage_params); dvc.yaml's
# foreach over split.folds is what passes it, so adding a fold must not rerun the others.
NARROWED = {stage: {"split.folds"} for stage in PER_FOLD}


def dvc_stages(dvc_yaml: Path = REPO / "dvc.yaml") -> dict[str, dict]:
    """Each stage's definition (a foreach stage's `do`)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: spec.get("do", spec) for name, spec in stages.items()}


def params_listed(spec: dict) -> set[str]:
    """Dotted keys and sections a stage declares; '*' for the whole params.yaml."""
    listed = set()
    for item in spec.get("params", []):
        listed |= {"*"} if isinstance(item, dict) else {item}
    return listed


def deps_listed(spec: dict) -> list[Path]:
    return [REPO / dep for dep in spec.get("deps", [])]


def covered(path: Path, deps: list[Path]) -> bool:
    return any(path == dep or dep in path.parents for dep in deps)


# -- params read -------------------------------------------------------------------------------------


def _section_of(node: ast.AST, bound: dict[str, str]) -> str | None:
    """The params section `node` evaluates to: `<...>.train`, or a name bound to a section."""
    if isinstance(node, ast.Attribute) and node.attr in ATTRIBUTES and ATTRIBUTES[node.attr] in SECTIONS:
        return ATTRIBUTES[node.attr]
    if isinstance(node, ast.Name):
        return bound.get(node.id)
    return None


def _bound_names(function: ast.AST) -> dict[str, str]:
    """Names bound to a section in `function`: annotated parameters and `x = <...>.section`."""
    bound = {}
    arguments = function.args.args + function.args.kwonlyargs if hasattr(function, "args") else []
    for arg in arguments:
        if isinstance(arg.annotation, ast.Name) and arg.annotation.id in SECTION_OF_CLASS:
            bound[arg.arg] = SECTION_OF_CLASS[arg.annotation.id]
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            section = _section_of(node.value, {})
            if section:
                bound[node.targets[0].id] = section
    return bound


def _reads(node: ast.Attribute, bound: dict[str, str]) -> str | None:
    section = _section_of(node.value, bound)
    if section is None:
        if node.attr == "seed" and isinstance(node.value, (ast.Name, ast.Attribute)) \
                and getattr(node.value, "id", getattr(node.value, "attr", "")) == "params":
            return "seed"
        return None
    if node.attr in WHOLE_SECTION_CALLS:
        return section
    fields = SECTIONS[section].model_fields
    return f"{section}.{node.attr}" if node.attr in fields else None


def params_read(files: list[Path]) -> set[str]:
    """Every params key (or whole section) the code in `files` reads."""
    found = set()
    for path in files:
        tree = ast.parse(path.read_text())
        scopes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for scope in scopes:
            bound = _bound_names(scope)
            found |= {key for node in ast.walk(scope) if isinstance(node, ast.Attribute)
                      if (key := _reads(node, bound))}
    return found


def missing_params(read: set[str], listed: set[str]) -> set[str]:
    if "*" in listed:
        return set()
    return {key for key in read if key not in listed and key.split(".")[0] not in listed}


# -- the checks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_lists_every_module_the_stage_runs(stage):
    spec = dvc_stages()[stage]
    missing = [path.relative_to(REPO).as_posix() for path in code_files(stage_code(stage, stage in PLANNED))
               if not covered(path, deps_listed(spec))]
    assert not missing, f"dvc.yaml stage {stage} runs code it does not list in deps: {missing}"


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_lists_every_param_the_stage_reads(stage):
    read = params_read(code_files(stage_code(stage, stage in PLANNED))) - NARROWED.get(stage, set())
    missing = missing_params(read, params_listed(dvc_stages()[stage]))
    assert not missing, f"dvc.yaml stage {stage} reads params it does not list: {sorted(missing)}"


def test_a_dependency_removed_from_dvc_yaml_is_caught(tmp_path):
    """The check fails when dvc.yaml loses a module or a key (here: train's splits and lr)."""
    broken = tmp_path / "dvc.yaml"
    shutil.copy2(REPO / "dvc.yaml", broken)
    spec = yaml.safe_load(broken.read_text())
    train = spec["stages"]["train"]["do"]
    train["deps"] = [d for d in train["deps"] if d not in ("src/segflow/data/splits.py", "src/segflow/data")]
    train["params"] = [p for p in train["params"] if p != "train"] + ["train.epochs"]
    broken.write_text(yaml.safe_dump(spec))
    spec = dvc_stages(broken)["train"]
    files = code_files(stage_code("train", True))
    assert module_file("segflow.data.splits") in [p for p in files if not covered(p, deps_listed(spec))]
    assert "train.lr" in missing_params(params_read(files), params_listed(spec))


def test_the_params_reader_sees_chains_bound_names_and_whole_sections(tmp_path):
    code = tmp_path / "stage.py"
    code.write_text(
        "def main(params, paths):\n"
        "    cfg = params.train\n"
        "    x = cfg.lr + params.augment.flip_prob + params.seed\n"
        "    return params.model.network_args()\n"
        "def helper(evaluate: EvaluateConfig, other):\n"
        "    return evaluate.tta, other.train\n")
    assert params_read([code]) == {"train.lr", "augment.flip_prob", "seed", "model", "evaluate.tta"}
