"""Where each stage writes: the one list of output paths, mirrored by dvc.yaml."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path = Path(".")
    # A configuration besides the data's native one (segflow.planning.configurations): its train
    # files and checkpoints lie in their own folder of each fold; None: the native configuration's.
    configuration: str | None = None

    def of_configuration(self, name: str | None, native: str | None = None) -> Paths:
        """These paths for configuration `name`; the native configuration (or None) has the fold's
        own files."""
        return replace(self, configuration=None if name == native else name)

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

    # plan
    @property
    def plan_dir(self) -> Path:
        return self.artifacts / "plan"

    @property
    def fingerprint(self) -> Path:
        return self.plan_dir / "fingerprint.json"

    @property
    def training_plan(self) -> Path:
        """train.budget's decision and the configurations (planning.plan.TrainingPlan)."""
        return self.plan_dir / "training.json"

    @property
    def plan(self) -> Path:
        return self.plan_dir / "plan.json"

    # preprocess
    @property
    def preprocessed(self) -> Path:
        return self.artifacts / "preprocessed"

    @property
    def preprocess_preview(self) -> Path:
        return self.artifacts / "preprocess" / "preview.png"

    # train: one folder per fold (dvc.yaml `foreach` over split.folds)
    @property
    def train_dir(self) -> Path:
        return self.artifacts / "train"

    def fold_dir(self, fold: int) -> Path:
        own = self.train_dir / f"fold_{fold}"
        return self.configurations_dir(fold) / self.configuration if self.configuration else own

    def configurations_dir(self, fold: int) -> Path:
        """The fold's other configurations (a DVC output of train@fold, never empty: index.json)."""
        return self.train_dir / f"fold_{fold}" / "configurations"

    def configurations_index(self, fold: int) -> Path:
        return self.configurations_dir(fold) / "index.json"

    def model_for(self, fold: int) -> Path:
        return self.fold_dir(fold) / "model.pt"

    def history_for(self, fold: int) -> Path:
        return self.fold_dir(fold) / "history.csv"

    def val_history_for(self, fold: int) -> Path:
        return self.fold_dir(fold) / "val_history.csv"

    def val_dice_per_class_for(self, fold: int) -> Path:
        return self.fold_dir(fold) / "val_dice_per_class.csv"

    def train_summary_for(self, fold: int) -> Path:
        return self.fold_dir(fold) / "summary.json"

    def checkpoints_for(self, fold: int) -> Path:
        own = self.artifacts / "checkpoints" / f"fold_{fold}"
        return own / self.configuration if self.configuration else own

    def train_progress_for(self, fold: int) -> Path:
        """Beside the checkpoint: no DVC output, it only tells a watcher how far training is."""
        return self.checkpoints_for(fold) / "progress.json"

    # evaluate
    @property
    def evaluate_dir(self) -> Path:
        return self.artifacts / "evaluate"

    @property
    def configuration_choice(self) -> Path:
        """Which configuration (or ensemble of them) ships, with each candidate's out-of-fold Dice."""
        return self.evaluate_dir / "configuration.json"

    @property
    def metrics(self) -> Path:
        return self.evaluate_dir / "metrics.json"

    @property
    def per_case(self) -> Path:
        return self.evaluate_dir / "per_case.csv"

    @property
    def overlays(self) -> Path:
        return self.evaluate_dir / "overlays"

    @property
    def overlay_index(self) -> Path:
        """Which cases the overlays show (the worst and the best by Dice), read by the results page."""
        return self.overlays / "index.json"

    @property
    def postprocessing(self) -> Path:
        return self.evaluate_dir / "postprocessing.json"

    # register: the fold models as one ensemble file, plus the registry record
    @property
    def ensemble(self) -> Path:
        return self.artifacts / "register" / "model.pt"

    @property
    def registration(self) -> Path:
        return self.artifacts / "register" / "registration.json"

    @property
    def export_bundle(self) -> Path:
        """The ensemble as a MONAI bundle (TorchScript, ONNX), checked against the eager model."""
        return self.artifacts / "register" / "bundle"

    # report: the run's results page (offline HTML with its figures beside it)
    @property
    def report_dir(self) -> Path:
        return self.artifacts / "report"

    @property
    def report_page(self) -> Path:
        return self.report_dir / "index.html"
