"""Project environment: user settings win, defaults keep all W&B/Prefect state inside the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from segflow.env import apply_project_env, find_project_root, project_env


@pytest.fixture
def root(tmp_path) -> Path:
    (tmp_path / "dvc.yaml").write_text("")
    (tmp_path / "params.yaml").write_text("")
    return tmp_path


@pytest.fixture
def clean_env(monkeypatch):
    """No segflow variable set beforehand (monkeypatch restores the session's values after)."""
    for key in project_env(Path("/unused")):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_user_set_wandb_mode_is_kept(root, clean_env):
    clean_env.setenv("WANDB_MODE", "online")
    applied = apply_project_env(root)
    assert applied["WANDB_MODE"] == "online"
    assert os.environ["WANDB_MODE"] == "online"


def test_defaults_are_set_when_unset(root, clean_env):
    applied = apply_project_env(root)
    assert applied["WANDB_MODE"] == os.environ["WANDB_MODE"] == "offline"
    assert os.environ["DVC_NO_ANALYTICS"] == "1"


def test_all_state_folders_lie_inside_the_project(root, clean_env):
    applied = apply_project_env(root)
    folders = {k: v for k, v in applied.items() if k == "PREFECT_HOME" or (k.startswith("WANDB_") and k.endswith("_DIR"))}
    assert {"PREFECT_HOME", "WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR",
            "WANDB_ARTIFACT_DIR"} <= set(folders)
    for key, value in folders.items():
        assert Path(value).resolve().is_relative_to(root.resolve()), f"{key}={value} is outside {root}"


def test_prefect_home_exists_in_a_fresh_project(root, clean_env):
    """Prefect creates only the last level of PREFECT_HOME; without .segflow/ its ephemeral
    server cannot open its database and every flow fails after a timeout."""
    applied = apply_project_env(root)
    assert Path(applied["PREFECT_HOME"]).is_dir()


def test_project_root_is_found_from_a_subfolder(root):
    sub = root / "artifacts" / "train"
    sub.mkdir(parents=True)
    assert find_project_root(sub) == root.resolve()


def test_project_root_needs_both_markers(tmp_path):
    (tmp_path / "dvc.yaml").write_text("")  # no params.yaml: not a project root
    sub = tmp_path / "sub"
    sub.mkdir()
    assert find_project_root(sub) == sub.resolve()  # no root above: the start folder itself


def test_project_root_defaults_to_the_working_directory(root, monkeypatch):
    sub = root / "src"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert find_project_root() == root.resolve()
