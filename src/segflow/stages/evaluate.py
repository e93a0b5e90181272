"""evaluate: each fold's model on its own validation cases (sliding window, optional mirror TTA).

The out-of-fold predictions of all folds in split.folds give the cross-validation metrics: Dice
and HD95 per class per case, their means with 95% bootstrap intervals, and per-fold means. When the
plan trained more than one configuration (3d and 2d), each and the ensemble of them (mean of their
probabilities) are scored on the same cases and the best by out-of-fold mean Dice is selected
(planning.configurations.select_configuration); the rest is about the selected one. Keeping the
largest connected component per class is tried on the same predictions and kept only where the
paired evidence says it helps (segflow.inference.postprocessing.RULE); the metrics are those after it.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd

from segflow.config import Params
from segflow.data.cache import PreprocessedCache
from segflow.data.regions import Regions
from segflow.data.splits import Splits
from segflow.files import write_json
from segflow.inference.postprocessing import (
    VOXELS,
    Rule,
    apply_postprocessing,
    choose_postprocessing,
    describe_decision,
    keep_largest_component,
)
from segflow.inference.sliding_window import PROGRESS_WINDOWS, count_windows, pick_device, predict_probabilities, to_labels
from segflow.metrics.per_case import CASE_ID, DICE, FOLD, HD95, raw_dice_column, score_column, write_per_case
from segflow.metrics.segmentation import dice_per_output, hd95_per_class, hd95_per_region, without_ignored
from segflow.models.model_file import ModelFile, load_model_file
from segflow.paths import Paths
from segflow.planning.configurations import ENSEMBLE, Selection, native_name, planned_configurations, select_configuration
from segflow.planning.plan import Plan, TrainingPlan

LCC = "_lcc"  # column suffix: the score after keeping the largest component of the class


def validation_cases(paths: Paths, fold: int) -> list[str]:
    return PreprocessedCache(paths.preprocessed).fold_cases(Splits.load(paths.splits), fold)[1]


def score_case(prediction: np.ndarray, truth: np.ndarray, class_names: list[str], spacing, hd95: bool,
               suffix: str = "", regions: Regions | None = None) -> dict:
    """Dice (and HD95) per foreground class, or per region for region-based labels."""
    n_classes = len(class_names) + 1
    scores = dice_per_output(prediction, truth, n_classes, regions)
    row = {f"dice_{n}{suffix}": d for n, d in zip(class_names, scores, strict=True)}
    if hd95:
        distances = (hd95_per_region(prediction, truth, regions, spacing) if regions
                     else hd95_per_class(prediction, truth, n_classes, spacing))
        row.update({f"hd95_{n}{suffix}": d for n, d in zip(class_names, distances, strict=True)})
    return row


def class_names_of(bundle: ModelFile) -> list[str]:
    return [bundle.labels[k].lower() for k in sorted(bundle.labels, key=int)][1:]


def score_both(prediction: np.ndarray, item: dict, names: list[str], spacing, hd95: bool,
               ignore_label: int | None = None, regions: Regions | None = None) -> dict:
    """Scores of the raw prediction and of the prediction with every class's largest component kept
    (a class's score depends only on its own mask, so one pass serves every class); voxels of the
    ignore label count for no class. Region-based labels are not post-processed (the same scores)."""
    cleaned = prediction if regions else keep_largest_component(prediction, list(range(1, len(names) + 1)))
    truth = item["label"][0]
    return {**score_case(*without_ignored(prediction, truth, ignore_label), names, spacing, hd95, regions=regions),
            **score_case(*without_ignored(cleaned, truth, ignore_label), names, spacing, hd95, suffix=LCC,
                         regions=regions),
            **({} if regions else {**voxel_counts(prediction, names), **voxel_counts(cleaned, names, LCC)})}


def voxel_counts(labels: np.ndarray, names: list[str], suffix: str = "") -> dict:
    """Predicted voxels per class (the postprocessing rule weighs how much cleaning removes)."""
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=len(names) + 1)
    return {VOXELS.format(name) + suffix: int(counts[i]) for i, name in enumerate(names, start=1)}


def case_probabilities(nets, bundle: ModelFile, item: dict, cfg, regions: Regions | None):
    """A model's class probabilities of one cached case (sliding window, optional mirror TTA)."""
    windows = count_windows(item["image"].shape[1:], bundle.patch_size, cfg.sw_overlap)
    return predict_probabilities(nets, item["image"], bundle.patch_size, tta=cfg.tta,
                                 sw_batch_size=cfg.sw_batch_size, overlap=cfg.sw_overlap,
                                 progress=windows > PROGRESS_WINDOWS,  # a bar for a long case (stderr)
                                 sigmoid=regions is not None)


class FoldModels:
    """A fold's model of each trained configuration, and the candidates made of them: each
    configuration alone and, with more than one, their ensemble (the mean of their probabilities)."""

    def __init__(self, paths: Paths, fold: int, configurations: list[str], native: str):
        self.bundles = {name: load_model_file(paths.of_configuration(name, native).model_for(fold))
                        for name in configurations}
        device = pick_device()
        self.nets = {name: bundle.build(device) for name, bundle in self.bundles.items()}
        self.candidates = configurations + ([ENSEMBLE] if len(configurations) > 1 else [])

    @property
    def native(self) -> ModelFile:
        return next(iter(self.bundles.values()))

    def predictions(self, item: dict, cfg, regions: Regions | None, only: str | None = None) -> dict[str, np.ndarray]:
        """Label map of each candidate (or of `only`) for one cached case."""
        needed = list(self.bundles) if only in (None, ENSEMBLE) else [only]
        probabilities = {name: case_probabilities(self.nets[name], self.bundles[name], item, cfg, regions)
                         for name in needed}
        if len(needed) > 1:
            probabilities[ENSEMBLE] = sum(probabilities.values()) / len(needed)
        wanted = self.candidates if only is None else [only]
        return {name: to_labels(probabilities[name], regions) for name in wanted}


def case_progress(cases, total: int, what: str):
    """`cases` behind a bar on stderr with tqdm's rate and ETA (`12/40 [00:30<01:10]`)."""
    import sys

    from tqdm import tqdm

    return tqdm(cases, total=total, desc=what, unit="case", file=sys.stderr, mininterval=5)


def evaluate_fold(params: Params, paths: Paths, fold: int, spacing: dict, configurations: list[str],
                  native: str) -> dict[str, list[dict]]:
    """Score rows of each candidate for the fold's validation cases (predictions are not kept:
    memory holds one case)."""
    models = FoldModels(paths, fold, configurations, native)
    names, cfg = class_names_of(models.native), params.evaluate
    rows, ignore_label = {name: [] for name in models.candidates}, Splits.load(paths.splits).ignore_label
    regions = Regions.of(models.native.info.get("regions"))
    case_ids = validation_cases(paths, fold)
    cases = PreprocessedCache(paths.preprocessed).iter_cases(case_ids)
    for item in case_progress(cases, len(case_ids), f"evaluate fold {fold}"):
        case_spacing = spacing[item["case_id"]]["spacing"]
        for name, prediction in models.predictions(item, cfg, regions).items():
            rows[name].append({"case_id": item["case_id"], "fold": fold,
                               **score_both(prediction, item, names, case_spacing, cfg.hd95, ignore_label, regions)})
    return rows


def select(rows: dict[str, list[dict]], names: list[str], order: list[str]) -> Selection:
    """The candidate to ship by out-of-fold mean Dice before postprocessing (nnU-Net selects the
    configuration first, then its postprocessing)."""
    dice = {c: float(pd.DataFrame(rows[c])[[score_column(DICE, n) for n in names]].mean().mean()) for c in order}
    return select_configuration(dice, order)


def apply_decision(scores: pd.DataFrame, names: list[str], decision: dict) -> pd.DataFrame:
    """Final per-case table: each class's scores after the chosen postprocessing; raw Dice kept
    beside it as dice_<class>_raw."""
    chosen = {names[i - 1] for i in decision["keep_largest_component"]}
    table = scores[[CASE_ID, FOLD]].copy()
    for name in names:
        source = LCC if name in chosen else ""
        for kind in (DICE, HD95):
            if score_column(kind, name) in scores:
                table[score_column(kind, name)] = scores[score_column(kind, name) + source]
        table[raw_dice_column(name)] = scores[score_column(DICE, name)]
    return table


def summarise(per_case: pd.DataFrame, class_names: list[str]) -> dict:
    """Dataset-level metrics: mean over cases of each class, then the mean over classes, the 95%
    bootstrap interval of the per-case mean Dice, and each fold's mean Dice."""
    from segflow.metrics.statistics import bootstrap_ci

    metrics: dict = {"n_cases": int(len(per_case)), "folds": sorted(int(f) for f in per_case["fold"].unique())}
    for kind in ("dice", "hd95"):
        columns = [f"{kind}_{n}" for n in class_names if f"{kind}_{n}" in per_case]
        if columns:
            means = {c: round(float(per_case[c].mean(skipna=True)), 5) for c in columns}
            metrics[f"{kind}_mean"] = round(float(np.mean(list(means.values()))), 5)
            metrics.update(means)
    case_dice = per_case[[f"dice_{n}" for n in class_names]].mean(axis=1)
    interval = bootstrap_ci(case_dice.to_numpy())
    metrics["dice_mean_ci95"] = [round(interval["low"], 5), round(interval["high"], 5)]
    raw = per_case[[f"dice_{n}_raw" for n in class_names]].mean(axis=0)
    metrics["dice_mean_before_postprocessing"] = round(float(raw.mean()), 5)
    for fold, group in per_case.groupby("fold"):
        metrics[f"dice_mean_fold_{fold}"] = round(float(group[[f"dice_{n}" for n in class_names]].mean().mean()), 5)
    return metrics


def overlay_predictions(params: Params, paths: Paths, per_case: pd.DataFrame, case_ids: list[str], selected: str):
    """(item, prediction) of each case in `case_ids`, predicted again by the selected candidate of
    the fold that scored it (a handful of cases: cheaper than holding every prediction in memory)."""
    from segflow.reporting.overlays import fold_of

    cache = PreprocessedCache(paths.preprocessed)
    plan = Plan.load(paths.plan)
    configurations = planned_configurations(TrainingPlan.load(paths.training_plan), plan.spatial_dims)
    for fold in sorted({fold_of(per_case, c) for c in case_ids}):
        models = FoldModels(paths, fold, configurations, native_name(plan.spatial_dims))
        regions = Regions.of(models.native.info.get("regions"))
        for item in cache.iter_cases([c for c in case_ids if fold_of(per_case, c) == fold]):
            yield item, models.predictions(item, params.evaluate, regions, only=selected)[selected]


def overlay_case(per_case: pd.DataFrame, case_id: str, names: list[str]):
    """The index entry of a drawn case, its Dice per class from the final per-case table."""
    from segflow.reporting.overlays import OverlayCase, fold_of

    row = per_case[per_case[CASE_ID].astype(str) == case_id].iloc[0]
    dice = {n: round(float(row[score_column(DICE, n)]), 5) for n in names}
    finite = [d for d in dice.values() if np.isfinite(d)]
    return OverlayCase(case_id=case_id, fold=fold_of(per_case, case_id), file=f"{case_id}.png",
                       mean_dice=round(float(np.mean(finite)), 5) if finite else float("nan"), dice=dice)


def write_overlays(params: Params, paths: Paths, per_case: pd.DataFrame, names: list[str], decision: dict,
                   selected: str, tracker) -> None:
    """Overlays of the evaluate.overlay_cases worst cases by mean Dice and of the best few, with the
    chosen postprocessing applied, and their index for the results page."""
    from segflow.reporting.figures import plot_prediction
    from segflow.reporting.overlays import OverlayIndex, pick_cases

    if paths.overlays.exists():
        shutil.rmtree(paths.overlays)  # a case drawn by an earlier run must not linger
    paths.overlays.mkdir(parents=True)
    worst, best = pick_cases(per_case, params.evaluate.overlay_cases)
    drawn = {}
    for item, prediction in overlay_predictions(params, paths, per_case, worst + best, selected):
        case = overlay_case(per_case, str(item["case_id"]), names)
        plot_prediction(case.case_id, item["image"][0], item["label"][0], apply_postprocessing(prediction, decision),
                        names, list(case.dice.values()), paths.overlays / case.file)
        drawn[case.case_id] = case
    OverlayIndex(worst=[drawn[c] for c in worst], best=[drawn[c] for c in best]).save(paths.overlay_index)
    if tracker:
        tracker.log_images("evaluate/overlays", [paths.overlays / drawn[c].file for c in worst + best],
                           captions=[f"{c} ({'worst' if c in worst else 'best'})" for c in worst + best])


def postprocessing_rule(params: Params) -> Rule:
    cfg = params.evaluate
    return Rule(cfg.postprocess_min_gain, cfg.postprocess_max_p_value, cfg.postprocess_max_removed)


def run(params: Params, paths: Paths, tracker=None) -> tuple[dict, pd.DataFrame, dict, Selection]:
    spacing = PreprocessedCache(paths.preprocessed).entries()
    plan = Plan.load(paths.plan)
    configurations = planned_configurations(TrainingPlan.load(paths.training_plan), plan.spatial_dims)
    native = native_name(plan.spatial_dims)
    rows: dict[str, list[dict]] = {}
    for fold in params.split.held_out:  # fold all holds no case out: its numbered folds estimate it
        for name, fold_rows in evaluate_fold(params, paths, fold, spacing, configurations, native).items():
            rows.setdefault(name, []).extend(fold_rows)
    bundle = load_model_file(paths.model_for(params.split.held_out[0]))
    names = class_names_of(bundle)
    selection = select(rows, names, list(rows))
    scores = pd.DataFrame(rows[selection.selected])
    decision = (choose_postprocessing(scores, names, postprocessing_rule(params)) if params.evaluate.postprocess
                else {"keep_largest_component": [], "rule": "evaluate.postprocess is false"})
    per_case = apply_decision(scores, names, decision)
    write_overlays(params, paths, per_case, names, decision, selection.selected, tracker)
    return summarise(per_case, names), per_case, decision, selection


def main(params: Params, paths: Paths, tracker=None) -> dict:
    metrics, per_case, decision, selection = run(params, paths, tracker)
    write_per_case(paths.per_case, per_case)
    write_json(paths.postprocessing, decision)
    write_json(paths.configuration_choice, selection.as_dict())
    write_json(paths.metrics, metrics)
    kept = decision["keep_largest_component"]
    print(f"evaluate: {metrics['n_cases']} out-of-fold cases over folds {metrics['folds']}: mean Dice "
          f"{metrics['dice_mean']} (95% CI {metrics['dice_mean_ci95']}); largest-component "
          f"postprocessing for classes {kept or 'none'}")
    print(f"  configuration {selection.selected}: {selection.reason}")
    for line in describe_decision(decision):
        print(f"  postprocessing {line}")
    if tracker:
        log_lineage(params, paths, tracker)
        tracker.log_table("evaluate/per_case", per_case)
    return metrics


def log_lineage(params: Params, paths: Paths, tracker) -> None:
    """W&B lineage: the fold models in, the per-case scores and metrics out."""
    from segflow.tracking.runs import EVALUATION_ARTIFACT, fold_model_artifact

    for fold in params.split.held_out:
        tracker.use_artifact_files(paths.model_for(fold), name=fold_model_artifact(fold), type="model")
    tracker.log_artifact([paths.per_case, paths.metrics], name=EVALUATION_ARTIFACT, type="evaluation")
