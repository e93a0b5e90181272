"""evaluate: sliding-window inference on the validation fold; Dice/HD95 per class per case."""

from __future__ import annotations

import numpy as np
import pandas as pd

from segflow.config import Params
from segflow.data.splits import fold_cases
from segflow.inference import pick_device, predict_labels
from segflow.io import read_json, write_csv, write_json
from segflow.metrics.segmentation import dice_per_class, hd95_per_class
from segflow.models.bundle import load_bundle
from segflow.paths import Paths
from segflow.training import load_volumes


def validation_cases(paths: Paths, params: Params) -> list[str]:
    cached = sorted(read_json(paths.preprocessed / "index.json")["cases"])
    return fold_cases(read_json(paths.splits)["folds"], params.split.fold, cached)[1]


def score_case(prediction: np.ndarray, truth: np.ndarray, class_names: list[str], spacing, hd95: bool) -> dict:
    n_classes = len(class_names) + 1
    row = {f"dice_{n}": d for n, d in zip(class_names, dice_per_class(prediction, truth, n_classes), strict=True)}
    if hd95:
        distances = hd95_per_class(prediction, truth, n_classes, spacing)
        row.update({f"hd95_{n}": d for n, d in zip(class_names, distances, strict=True)})
    return row


def summarise(per_case: pd.DataFrame, class_names: list[str]) -> dict:
    """Dataset-level metrics: mean over cases of each class, then the mean over classes."""
    metrics: dict = {"n_cases": int(len(per_case))}
    for kind in ("dice", "hd95"):
        columns = [f"{kind}_{n}" for n in class_names if f"{kind}_{n}" in per_case]
        if columns:
            means = {c: round(float(per_case[c].mean(skipna=True)), 5) for c in columns}
            metrics[f"{kind}_mean"] = round(float(np.mean(list(means.values()))), 5)
            metrics.update(means)
    return metrics


def run(params: Params, paths: Paths, tracker=None) -> tuple[dict, pd.DataFrame]:
    from segflow.plots import plot_prediction

    bundle = load_bundle(paths.model)
    net = bundle.build(pick_device())
    names = [bundle.labels[k].lower() for k in sorted(bundle.labels, key=int)][1:]
    spacing = read_json(paths.preprocessed / "index.json")["cases"]
    cfg = params.evaluate
    rows, overlays = [], []
    for i, item in enumerate(load_volumes(paths.preprocessed, validation_cases(paths, params))):
        prediction = predict_labels(net, item["image"], bundle.patch_size, tta=cfg.tta,
                                    sw_batch_size=cfg.sw_batch_size, overlap=cfg.sw_overlap)
        row = {"case_id": item["case_id"],
               **score_case(prediction, item["label"][0], names, spacing[item["case_id"]]["spacing"], cfg.hd95)}
        rows.append(row)
        if i < cfg.overlay_cases:
            dest = paths.overlays / f"{item['case_id']}.png"
            plot_prediction(item["case_id"], item["image"][0], item["label"][0], prediction,
                            [row[f"dice_{n}"] for n in names], dest)
            overlays.append(dest)
    per_case = pd.DataFrame(rows)
    if tracker:
        tracker.log_images("evaluate/overlays", overlays)
    return summarise(per_case, names), per_case


def main(params: Params, paths: Paths, tracker=None) -> dict:
    paths.overlays.mkdir(parents=True, exist_ok=True)
    metrics, per_case = run(params, paths, tracker)
    write_csv(paths.per_case, per_case.round(5))
    write_json(paths.metrics, metrics)
    if tracker:
        tracker.summary(metrics)
        tracker.log_table("evaluate/per_case", per_case)
    return metrics
