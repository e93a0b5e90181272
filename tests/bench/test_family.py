"""The family benchmark's overrides and record folders (no pipeline run)."""

from __future__ import annotations

import shutil

import pytest
from conftest import REPO

from bench import family
from segflow.config import load_params
from segflow.overrides import apply_overrides
from segflow.reporting.compare import load_record


@pytest.mark.parametrize("network", sorted(family.NETWORKS))
def test_each_network_s_overrides_give_a_valid_params_yaml_for_it(tmp_path, network):
    params_file = tmp_path / "params.yaml"
    shutil.copy2(REPO / "params.yaml", params_file)
    apply_overrides(params_file, [*family.NETWORKS[network], "train.budget=5m"])
    params = load_params(params_file)
    assert params.model.name == network.partition("-")[0]
    assert params.train.budget == "5m"


def test_a_record_folder_is_what_segflow_compare_reads(tmp_path):
    from segflow.paths import Paths

    paths = Paths(tmp_path / "project")
    paths.per_case.parent.mkdir(parents=True)
    paths.per_case.write_text("case_id,fold,dice_a\nc1,0,0.9\nc2,0,0.8\n")
    paths.metrics.write_text("{}")
    record = load_record(tmp_path, str(family.copy_record(paths.root, tmp_path / "records" / "UNet")),
                         tmp_path, want_model=False)
    assert record.name == "UNet" and len(record.per_case) == 2 and record.model_path is None
