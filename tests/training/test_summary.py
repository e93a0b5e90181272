"""summary.json: read back as written, byte for byte as the train stage always wrote it, and a
missing or damaged file is an error that names it."""

from __future__ import annotations

import json

import pytest

from segflow.config import ConfigError
from segflow.training.summary import TrainSummary

WRITTEN = {"epochs": 2, "val_dice_mean": 0.11309, "train_loss": 1.57877, "seconds": 5.1, "seconds_this_run": 11.9,
           "seconds_per_epoch": 2.55, "peak_rss_mb": 812.4, "device": "cpu", "fold": 0, "processes": 1}


def test_summary_round_trips_and_writes_what_the_train_stage_wrote(tmp_path):
    path = tmp_path / "fold_0" / "summary.json"
    summary = TrainSummary(**WRITTEN)
    summary.save(path)
    assert path.read_text() == json.dumps(WRITTEN, indent=2) + "\n"
    assert TrainSummary.load(path) == summary


def test_a_budgeted_fold_says_its_minutes_beside_the_plans(tmp_path):
    summary = TrainSummary(**{**WRITTEN, "seconds": 276.0, "predicted_seconds": 240.0})
    summary.save(tmp_path / "summary.json")
    assert json.loads((tmp_path / "summary.json").read_text())["predicted_seconds"] == 240.0
    assert summary.against_prediction() == "4.6 min (the plan predicted 4.0 min, +15%)"
    assert TrainSummary(**WRITTEN).against_prediction() == "0.1 min"


def test_a_fold_that_never_validated_has_no_dice(tmp_path):
    path = tmp_path / "summary.json"
    TrainSummary(**{**WRITTEN, "val_dice_mean": None}).save(path)
    assert '"val_dice_mean": null' in path.read_text()
    assert TrainSummary.load(path).val_dice_mean is None


@pytest.mark.parametrize("content, says", [
    (None, "no training summary"),
    ("{not json", "not valid JSON"),
    (json.dumps({**WRITTEN, "epochs": "many"}), "epochs"),
    (json.dumps({k: v for k, v in WRITTEN.items() if k != "device"}), "device"),
])
def test_a_missing_or_invalid_summary_is_an_error_naming_the_file(tmp_path, content, says):
    path = tmp_path / "summary.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=says) as refused:
        TrainSummary.load(path)
    assert str(path) in str(refused.value)
