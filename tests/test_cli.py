"""`segflow` command line: light to import, user errors as one clear message (no traceback)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import BIN, REPO, run

HEAVY = ("torch", "monai", "great_expectations", "wandb")


@pytest.fixture
def project(tmp_path) -> Path:
    """A folder that is a segflow project root: the repo's params.yaml and an empty dvc.yaml."""
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text("")
    return tmp_path


def segflow(project: Path, *args: str) -> subprocess.CompletedProcess:
    return run([str(BIN / "segflow"), *args], project, check=False, timeout=120)


def test_importing_the_cli_loads_no_heavy_library():
    code = f"import segflow.cli, sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_help_lists_the_commands(project):
    done = segflow(project, "--help")
    assert done.returncode == 0
    for command in ("stage", "predict", "fetch-data", "env"):
        assert command in done.stdout


def test_bad_param_names_file_and_key_without_traceback(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["lr"] = -1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    done = segflow(project, "stage", "train")
    assert done.returncode == 1
    assert "params.yaml" in done.stderr and "train.lr" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_unknown_stage_lists_the_stages(project):
    done = segflow(project, "stage", "nosuch")
    assert done.returncode != 0
    assert "nosuch" in done.stderr
    for name in ("ingest", "validate", "preprocess", "train", "evaluate", "register"):
        assert name in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.slow  # real W&B runs or a subprocess: seconds
def test_predict_without_registry_says_no_champion(project):
    from conftest import save_nifti

    save_nifti(project / "in" / "case.nii.gz", np.zeros((8, 8, 8), np.float32))
    done = segflow(project, "predict", "--model", "champion", "-i", "in", "-o", "out")
    assert done.returncode == 1
    assert "no champion" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (project / "out").exists()


def test_env_prints_exports_with_state_inside_the_project(project):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "PREFECT_"))}
    done = subprocess.run([str(BIN / "segflow"), "env"], cwd=project, capture_output=True, text=True,
                          env=clean, check=True)
    exports = dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.splitlines())
    assert exports["WANDB_MODE"] == "offline"
    assert Path(exports["PREFECT_HOME"]).is_relative_to(project.resolve())


def test_env_keeps_a_user_setting(project):
    done = run([str(BIN / "segflow"), "env"], project, env={"WANDB_MODE": "online"})
    assert "export WANDB_MODE=online" in done.stdout.splitlines()
    assert any(line.startswith("export PREFECT_HOME=") for line in done.stdout.splitlines())
