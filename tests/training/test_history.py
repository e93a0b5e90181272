"""The per-epoch history: records named by class, and the plot files dvc.yaml declares."""

from __future__ import annotations

import pandas as pd
from training_fixtures import LABELS

from segflow.paths import Paths
from segflow.training.history import epoch_record, write_history


def test_a_validated_epoch_records_dice_by_class_name():
    record = epoch_record(3, 0.123456789, 0.01, 12.34, [0.5, 0.25], LABELS)
    assert record == {"epoch": 3, "train_loss": 0.12346, "lr": 0.01, "seconds": 12.3, "val_dice_mean": 0.375,
                      "val_dice_anterior": 0.5, "val_dice_posterior": 0.25}
    assert "val_dice_mean" not in epoch_record(4, 0.1, 0.01, 1.0, None, LABELS)


def test_history_has_every_epoch_and_val_history_only_the_validated_ones(tmp_path):
    paths = Paths(tmp_path)
    history = [epoch_record(1, 0.9, 0.01, 1.0, None, LABELS), epoch_record(2, 0.8, 0.005, 1.0, [0.5, 0.7], LABELS)]
    write_history(paths, 1, history)

    loss = pd.read_csv(paths.history_for(1))
    assert list(loss.columns) == ["epoch", "train_loss", "lr", "seconds"] and list(loss["epoch"]) == [1, 2]
    val = pd.read_csv(paths.val_history_for(1))
    assert list(val.columns) == ["epoch", "val_dice_mean", "val_dice_anterior", "val_dice_posterior"]
    assert list(val["epoch"]) == [2]
    per_class = pd.read_csv(paths.val_dice_per_class_for(1))  # one line per class in DVC's plot
    assert per_class.to_dict("records") == [{"epoch": 2, "class": "anterior", "dice": 0.5},
                                            {"epoch": 2, "class": "posterior", "dice": 0.7}]


def test_a_run_that_never_validated_writes_an_empty_val_history(tmp_path):
    paths = Paths(tmp_path)
    write_history(paths, 0, [epoch_record(1, 0.9, 0.01, 1.0, None, LABELS)])
    assert paths.val_history_for(0).read_text().strip() == "epoch"
