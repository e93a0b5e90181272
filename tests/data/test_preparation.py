"""Preparing the cache: every channel file of a case reaches the cache (nnU-Net's `_0000`, `_0001` in an MSD
or v2 delivery), cases are prepared in worker processes with the same result as in one, and a
case that cannot be prepared is named and left out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import save_nifti, synthetic_case

from segflow.data.cache import PreprocessedCache
from segflow.data.manifest import build_manifest
from segflow.data.msd import read_msd_dataset
from segflow.data.preparation import preprocess_cases
from segflow.data.preprocess import ChannelNormalisation, Preprocessing
from segflow.errors import StageFailed

PLAN = Preprocessing(target_spacing=[1.0, 1.0, 1.0], normalisation=[ChannelNormalisation(scheme="zscore")] * 2)


def write_two_channel_msd(root, n=3):
    """An MSD delivery whose dataset.json names `x.nii.gz` while the files are `x_0000`, `x_0001`."""
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    for i in range(n):
        image, label = synthetic_case(i, (12, 14, 10))
        save_nifti(root / "imagesTr" / f"case_{i}_0000.nii.gz", image)
        save_nifti(root / "imagesTr" / f"case_{i}_0001.nii.gz", -image)
        save_nifti(root / "labelsTr" / f"case_{i}.nii.gz", label)
    (root / "dataset.json").write_text(json.dumps({
        "name": "Two", "modality": {"0": "T1", "1": "T2"}, "labels": {"0": "bg", "1": "a", "2": "b"},
        "training": [{"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"}
                     for i in range(n)]}))
    return [f"case_{i}" for i in range(n)]


@pytest.mark.parametrize("workers", [1, 2])
def test_every_channel_file_reaches_the_cache(tmp_path, workers):
    cases = write_two_channel_msd(tmp_path / "data")
    manifest = build_manifest(read_msd_dataset(tmp_path / "data"))
    cache = PreprocessedCache(tmp_path / "cache")

    entries, failed = preprocess_cases(tmp_path / "data", manifest, cases, cache, preprocessing=PLAN, workers=workers)

    assert failed == {} and list(entries) == cases
    image = cache.load(["case_1"])[0]["image"]
    assert image.shape == (2, 12, 14, 10) and np.allclose(image[0], -image[1], atol=1e-5)


def test_a_case_that_cannot_be_prepared_is_named_and_left_out(tmp_path, capsys):
    cases = write_two_channel_msd(tmp_path / "data")
    manifest = build_manifest(read_msd_dataset(tmp_path / "data"))
    (tmp_path / "data" / "imagesTr" / "case_1_0001.nii.gz").write_bytes(b"broken since validation")

    entries, failed = preprocess_cases(tmp_path / "data", manifest, cases, PreprocessedCache(tmp_path / "cache"),
                                       preprocessing=PLAN)

    assert list(entries) == ["case_0", "case_2"] and list(failed) == ["case_1"]
    assert "case case_1 left out [case_preprocessable]" in capsys.readouterr().err


def test_no_case_prepared_stops_the_stage(tmp_path):
    cases = write_two_channel_msd(tmp_path / "data", n=1)
    manifest = build_manifest(read_msd_dataset(tmp_path / "data"))
    (tmp_path / "data" / "labelsTr" / "case_0.nii.gz").unlink()
    with pytest.raises(StageFailed, match="no case could be prepared"):
        preprocess_cases(tmp_path / "data", manifest, cases, PreprocessedCache(tmp_path / "cache"), preprocessing=PLAN)


def test_auto_workers_are_one_per_core_but_not_for_a_handful_of_cases(monkeypatch):
    from segflow.data.preparation import worker_count

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert worker_count(0, 220) == 8 and worker_count(0, 40) == 2 and worker_count(0, 10) == 1
    assert worker_count(3, 2) == 2 and worker_count(3, 100) == 3
