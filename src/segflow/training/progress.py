"""A fold's training progress (artifacts/checkpoints/fold_K/progress.json): its schema, its one
writer (the trainer, as training starts and after each epoch) and reader. The Prefect flow relays
it to the flow run while `dvc repro train` runs; it is no DVC output and shapes no result."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from segflow.files import write_json


class TrainProgress(BaseModel):
    """Where one fold's training stands and when it should end."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    fold: int | Literal["all"]  # "all": nnU-Net's fold all (trained on every case)
    epoch: int  # epochs completed, those before a resume included
    epochs: int  # train.epochs
    seconds_per_epoch: float | None  # mean of the measured epochs; None before the first
    updated: float  # unix time of the write

    @property
    def eta_seconds(self) -> float | None:
        return None if self.seconds_per_epoch is None else (self.epochs - self.epoch) * self.seconds_per_epoch

    def line(self) -> str:
        """`epoch 3/40 (8%, ETA 2m10s)`, the console's and the flow run's progress line."""
        return f"epoch {self.epoch}/{self.epochs} ({self.epoch / self.epochs:.0%}, ETA {format_duration(self.eta_seconds)})"

    def save(self, path: Path) -> None:
        write_json(path, self.model_dump())

    @classmethod
    def read(cls, path: Path) -> TrainProgress | None:
        """The progress in `path`, or None when there is none (not started, or being replaced)."""
        try:
            return cls.model_validate_json(path.read_text())
        except (OSError, ValueError, ValidationError):
            return None


def format_duration(seconds: float | None) -> str:
    """`45s`, `2m10s`, `3h05m` (one line per epoch reads well in DVC and Prefect logs); `?` unknown."""
    if seconds is None:
        return "?"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def fold_progress(fold: int, epochs: int, history: Sequence[dict]) -> TrainProgress:
    """Progress after the epochs in `history` (their measured `seconds` give the pace)."""
    pace = sum(h["seconds"] for h in history) / len(history) if history else None
    return TrainProgress(fold=fold, epoch=len(history), epochs=epochs, seconds_per_epoch=pace, updated=time.time())


def overall_progress(folds: Sequence[TrainProgress | None], epochs: int) -> tuple[float, float | None]:
    """(fraction of all folds' epochs done, seconds left) for folds trained one after another;
    a fold not started yet (None) counts 0 epochs, at the pace of those that have one."""
    done = sum(p.epoch for p in folds if p is not None)
    paces = [p.seconds_per_epoch for p in folds if p is not None and p.seconds_per_epoch is not None]
    total = epochs * len(folds)
    left = (total - done) * sum(paces) / len(paces) if paces else None
    return (done / total if total else 1.0), left
