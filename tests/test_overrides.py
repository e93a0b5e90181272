"""params.yaml overrides (`dvc exp run -S` grammar): applied whole and validated, or not at all."""

from __future__ import annotations

import shutil

import pytest
import yaml
from conftest import REPO

from segflow.config import ConfigError, load_params
from segflow.overrides import apply_overrides


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy2(REPO / "params.yaml", path)
    return path


def test_overrides_set_nested_keys_lists_and_keep_comments(params_file):
    apply_overrides(params_file, ["train.epochs=3", "model.channels=[8,16,32]", "split.folds=[0,1]"])
    params = load_params(params_file)
    assert params.train.epochs == 3
    assert list(params.model.channels) == [8, 16, 32]
    assert list(params.split.folds) == [0, 1]
    assert "#" in params_file.read_text()  # DVC's round-trip YAML keeps the comments


@pytest.mark.parametrize("override, named", [
    ("train.epochz=3", "train.epochz"),          # a typo'd key
    ("train.epochs=many", "train.epochs"),       # breaks the typed config
    ("train.epochs", "not key=value"),           # no value at all
    ("~", "not key=value"),                      # a deletion of nothing
])
def test_a_bad_override_is_a_config_error_and_params_yaml_is_untouched(params_file, override, named):
    before = params_file.read_bytes()
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        apply_overrides(params_file, ["train.val_every=2", override])
    assert params_file.read_bytes() == before


def test_hydra_adds_and_removes_keys_as_dvc_exp_run_does(params_file):
    apply_overrides(params_file, ["model.name=AttentionUnet", "~model.num_res_units", "~model.norm",
                                  "+model.kernel_size=3"])
    model = load_params(params_file).model
    assert model.name == "AttentionUnet"
    assert "num_res_units" not in model.network_args() and "norm" not in model.network_args()
    assert model.network_args()["kernel_size"] == 3


def test_no_overrides_leave_the_file_byte_for_byte(params_file):
    before = params_file.read_bytes()
    apply_overrides(params_file, [])
    assert params_file.read_bytes() == before
    assert yaml.safe_load(before)
