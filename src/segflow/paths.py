"""Where each stage writes: the one list of output paths, mirrored by dvc.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path = Path(".")

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    # ingest
    @property
    def manifest(self) -> Path:
        return self.artifacts / "ingest" / "manifest.csv"

    @property
    def splits(self) -> Path:
        return self.artifacts / "ingest" / "splits.json"

    # validate
    @property
    def validation_report(self) -> Path:
        return self.artifacts / "validate" / "report.json"

    @property
    def data_docs(self) -> Path:
        return self.artifacts / "validate" / "data_docs"

    # augment
    @property
    def preprocessed(self) -> Path:
        return self.artifacts / "preprocessed"

    @property
    def augment_preview(self) -> Path:
        return self.artifacts / "augment" / "preview.png"

    # train
    @property
    def train_dir(self) -> Path:
        return self.artifacts / "train"

    @property
    def model(self) -> Path:
        return self.train_dir / "model.pt"

    @property
    def checkpoints(self) -> Path:
        return self.artifacts / "checkpoints"

    @property
    def history(self) -> Path:
        return self.train_dir / "history.csv"

    # evaluate
    @property
    def evaluate_dir(self) -> Path:
        return self.artifacts / "evaluate"

    @property
    def metrics(self) -> Path:
        return self.evaluate_dir / "metrics.json"

    @property
    def per_case(self) -> Path:
        return self.evaluate_dir / "per_case.csv"

    @property
    def overlays(self) -> Path:
        return self.evaluate_dir / "overlays"

    # register
    @property
    def registration(self) -> Path:
        return self.artifacts / "register" / "registration.json"
