"""A fold's per-epoch history: one record per epoch, written as the plot files dvc.yaml declares
(artifacts/train/fold_K/history.csv, val_history.csv, and val_dice_per_class.csv: the same Dice
in long form, one row per epoch and class, so DVC draws one line per class whatever the classes)."""

from __future__ import annotations

import pandas as pd

from segflow.files import write_csv
from segflow.paths import Paths

VAL_DICE = "val_dice_"  # prefix of a validation Dice column: val_dice_mean, val_dice_<class>
VAL_DICE_MEAN = VAL_DICE + "mean"


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
    """The plot files: loss every epoch; validation Dice where it was measured, wide and long."""
    frame = pd.DataFrame(history)
    write_csv(paths.history_for(fold), frame[["epoch", "train_loss", "lr", "seconds"]])
    val = frame.dropna(subset=["val_dice_mean"]) if "val_dice_mean" in frame else frame.iloc[:0]
    write_csv(paths.val_history_for(fold), val[["epoch"] + [c for c in val if c.startswith("val_")]])
    classes = [c for c in val if c.startswith(VAL_DICE) and c != VAL_DICE_MEAN]
    long = val.melt(id_vars="epoch", value_vars=classes, var_name="class", value_name="dice")
    long["class"] = long["class"].str.removeprefix(VAL_DICE)
    write_csv(paths.val_dice_per_class_for(fold), long[["epoch", "class", "dice"]])


class FoldHistory:
    """A fold's two history files read back (the one reader beside `write_history`): `train` has
    epoch, train_loss, lr, seconds per epoch; `val` has epoch, val_dice_mean and val_dice_<class>
    per validated epoch."""

    def __init__(self, fold: int, train: pd.DataFrame, val: pd.DataFrame):
        self.fold, self.train, self.val = fold, train, val

    @property
    def class_names(self) -> list[str]:
        """The classes with a validation Dice column, in the file's order."""
        return [c.removeprefix(VAL_DICE) for c in self.val.columns if c.startswith(VAL_DICE) and c != VAL_DICE_MEAN]

    def class_dice(self, name: str) -> pd.Series:
        return self.val[VAL_DICE + name]

    @classmethod
    def load(cls, paths: Paths, fold: int) -> FoldHistory:
        """Read the fold's history.csv and val_history.csv (an absent val file: no validated epoch)."""
        val_file = paths.val_history_for(fold)
        val = pd.read_csv(val_file) if val_file.is_file() else pd.DataFrame(columns=["epoch", VAL_DICE_MEAN])
        return cls(fold, pd.read_csv(paths.history_for(fold)), val)
