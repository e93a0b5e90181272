"""A fold's per-epoch history: one record per epoch, written as the two plot files dvc.yaml
declares (artifacts/train/fold_K/history.csv and val_history.csv)."""

from __future__ import annotations

import pandas as pd

from segflow.files import write_csv
from segflow.paths import Paths


def epoch_record(epoch: int, loss: float, lr: float, seconds: float, val: list[float] | None,
                 labels: dict[str, str]) -> dict:
    """One epoch's row: loss, LR, seconds and, where it validated, mean and per-class Dice
    (`val_dice_<class name>`, background left out)."""
    record = {"epoch": epoch, "train_loss": round(loss, 5), "lr": lr, "seconds": round(seconds, 1)}
    if val is not None:
        record["val_dice_mean"] = round(sum(val) / len(val), 5)
        names = [labels[k] for k in sorted(labels, key=int)][1:]
        record.update({f"val_dice_{n.lower()}": round(v, 5) for n, v in zip(names, val, strict=True)})
    return record


def write_history(paths: Paths, fold: int, history: list[dict]) -> None:
    """Two plot files: loss every epoch, validation Dice where it was measured."""
    frame = pd.DataFrame(history)
    write_csv(paths.history_for(fold), frame[["epoch", "train_loss", "lr", "seconds"]])
    val = frame.dropna(subset=["val_dice_mean"]) if "val_dice_mean" in frame else frame.iloc[:0]
    write_csv(paths.val_history_for(fold), val[["epoch"] + [c for c in val if c.startswith("val_")]])
