"""bin/segflow, which every dvc.yaml stage runs: the project's venv without activating it, and one
line saying what to do when the Python it finds lacks segflow's dependencies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO

from segflow.__main__ import missing_dependency_message

SYSTEM_PATH = "/usr/bin:/bin"


def bare_env(path: str) -> dict[str, str]:
    """The environment of a shell that never activated the venv: no venv on PATH, no PYTHONPATH."""
    return {k: v for k, v in os.environ.items() if k not in ("PATH", "PYTHONPATH", "VIRTUAL_ENV")} | {"PATH": path}


def stage_cmd(stage: str) -> str:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["cmd"]


@pytest.mark.slow
@pytest.mark.integration
def test_dvc_repro_runs_a_stage_without_the_venv_on_path(tiny_project):
    """`.venv/bin/dvc repro` from a shell that never activated the venv: the stage's command finds
    the project's venv by itself (before, it failed with `segflow: not found`)."""
    (tiny_project / ".venv").symlink_to(BIN.parent, target_is_directory=True)
    done = subprocess.run([str(BIN / "dvc"), "repro", "ingest"], cwd=tiny_project, env=bare_env(SYSTEM_PATH),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"> {stage_cmd('ingest')}" in done.stdout
    assert (tiny_project / "artifacts" / "ingest" / "manifest.csv").is_file()


def test_a_python_without_the_dependencies_gets_one_line(tmp_path):
    """No .venv and a python3 without segflow's dependencies: one line naming that Python and
    `make setup`, exit 1, no traceback."""
    project = tmp_path / "project"
    for name in ("bin", "src"):
        shutil.copytree(REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    python_dir = tmp_path / "python"
    python_dir.mkdir()
    (python_dir / "python3").symlink_to(Path(sys._base_executable).resolve())  # the venv's base: no packages
    done = subprocess.run(["/bin/sh", "-c", stage_cmd("ingest")], cwd=project,
                          env=bare_env(f"{python_dir}:{SYSTEM_PATH}"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert "is not installed in" in line and "make setup" in line, line


def test_the_message_names_segflow_or_the_missing_dependency():
    assert missing_dependency_message(ModuleNotFoundError("x", name="segflow")).startswith("segflow is not installed in ")
    assert missing_dependency_message(ModuleNotFoundError("x", name="typer.core")).startswith(
        "segflow's dependency typer is not installed in ")


def test_python_m_segflow_is_the_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "segflow", "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env=os.environ | {"PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 0, done.stderr
    assert "Usage: segflow" in done.stdout and "stage" in done.stdout
