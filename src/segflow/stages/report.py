"""report: the run's results page (artifacts/report/index.html), offline, from the files the
earlier stages wrote; `segflow.reporting.results_page` builds it, this stage only reads its inputs.
"""

from __future__ import annotations

from pathlib import Path

from segflow.config import Params
from segflow.data.splits import Splits
from segflow.files import read_json
from segflow.metrics.per_case import read_per_case
from segflow.paths import Paths
from segflow.planning.plan import Plan
from segflow.reporting.overlays import OverlayIndex
from segflow.reporting.results_page import RunResults, write_results_page
from segflow.training.history import FoldHistory
from segflow.validation.report import ValidationReport


def model_card_of(paths: Paths, registration: dict | None) -> str | None:
    """The registered model's MODEL_CARD.md (in the registry), or None when none was registered."""
    card = paths.root / registration["model_dir"] / "MODEL_CARD.md" if registration and "model_dir" in registration else None
    return card.read_text() if card and card.is_file() else None


def collect(params: Params, paths: Paths, group: str) -> RunResults:
    """Everything the page shows, each file through its own reader."""
    from segflow.tracking.runs import runs_of_group

    registration = read_json(paths.registration) if paths.registration.is_file() else None
    return RunResults(
        dataset=Splits.load(paths.splits).dataset, metrics=read_json(paths.metrics),
        per_case=read_per_case(paths.per_case),
        histories=[FoldHistory.load(paths, f) for f in params.split.folds if paths.history_for(f).is_file()],
        validation=ValidationReport.load(paths.validation_report), plan=Plan.load(paths.plan),
        overlays=OverlayIndex.load(paths.overlay_index) if paths.overlay_index.is_file() else None,
        overlay_dir=paths.overlays, registration=registration, model_card=model_card_of(paths, registration),
        runs=runs_of_group(group), data_docs=paths.data_docs / "index.html")


def main(params: Params, paths: Paths, tracker=None) -> dict:
    from segflow.tracking.runs import pipeline_group

    group = tracker.group if tracker else pipeline_group()
    page = write_results_page(collect(params, paths, group), paths.report_dir)
    print(f"report: results page {page}")
    if tracker:
        tracker.log_artifact(paths.report_dir, name="results-page", type="report")
    return {"page": str(Path(page))}
