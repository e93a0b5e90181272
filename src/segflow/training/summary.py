"""A fold's training summary (artifacts/train/fold_K/summary.json): its schema, its one writer and
reader. DVC shows it as the train stage's metrics; register reads what each fold cost from it.
A schema only, apart from the trainer that fills it, so a reader's code hash does not follow the
trainer's."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from segflow.files import load_json_model, write_json


class TrainSummary(BaseModel):
    """What training one fold gave and cost (field order is the file's key order)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    epochs: int  # epochs completed
    val_dice_mean: float | None  # the last epoch's; None when it did not validate
    train_loss: float  # the last epoch's mean loss
    seconds: float  # every epoch's training time, those before a resume included (what the model cost)
    seconds_this_run: float  # this process's wall clock (after a resume, only the part it ran)
    seconds_per_epoch: float
    peak_rss_mb: float
    device: str  # "cpu" or "cuda"
    fold: int | Literal["all"]  # "all": nnU-Net's fold all (trained on every case)
    processes: int  # DDP processes (1 without torchrun)
    predicted_seconds: float | None = None  # the budget plan's prediction for this model (train.budget)

    def against_prediction(self) -> str:
        """`4.6 min (the plan predicted 4.4 min, +5%)`: the measured minutes beside the budget's."""
        measured = f"{self.seconds / 60:.1f} min"
        if not self.predicted_seconds:
            return measured
        error = 100 * (self.seconds - self.predicted_seconds) / self.predicted_seconds
        return f"{measured} (the plan predicted {self.predicted_seconds / 60:.1f} min, {error:+.0f}%)"

    @classmethod
    def load(cls, path: Path | str) -> TrainSummary:
        """Read summary.json; a missing or invalid file is a `ConfigError` naming it."""
        return load_json_model(cls, path, "training summary", "run the train stage for this fold (dvc repro train)")

    def save(self, path: Path | str) -> None:
        # Python mode, not "json": a NaN loss stays NaN, as json.dumps writes it. Without a budget
        # the file is what it always was.
        write_json(path, self.model_dump(exclude=None if self.predicted_seconds else {"predicted_seconds"}))
