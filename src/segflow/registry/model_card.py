"""The model card kept with every registry entry: data, training, metrics with 95% CIs, compute,
exports, intended use and limits (after Mitchell et al., "Model Cards for Model Reporting")."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from segflow.config import Params
from segflow.metrics.per_case import score_intervals
from segflow.tracking.provenance import describe_code

if TYPE_CHECKING:
    from segflow.validation.report import ValidationReport


def metric_rows(per_case: pd.DataFrame) -> str:
    """One table row per class and metric: mean over cases with a 95% bootstrap interval."""
    return "\n".join(f"| {r['metric']} | {r['mean']:.4f} | {r['low']:.4f} – {r['high']:.4f} | {r['n']} |"
                     for r in score_intervals(per_case))


def compute_rows(compute: list[dict]) -> str:
    return "\n".join(f"| {c.get('configuration', '')} | {c['fold']} | {c['device']} | {c['processes']} | {c['epochs']} | "
                     f"{c['seconds']} | {c.get('predicted_seconds') or ''} | {c['seconds_per_epoch']} | "
                     f"{c['peak_rss_mb']} |" for c in compute)


def configuration_line(entry: dict) -> str:
    """Which configuration ships and why (entries made before configurations: nothing)."""
    choice = entry.get("configuration")
    if not choice:
        return ""
    return f"- Configuration: {choice['selected']}: {choice['reason']}\n"


def export_lines(exported: dict) -> str:
    if exported.get("error"):
        return f"- Export failed, no bundle published: {exported['error']}"
    if not exported.get("formats"):
        return "- No export (register.export is empty)."
    parity = exported.get("parity", {})
    checks = ", ".join(f"{k} {v:.1e}" for k, v in parity.items())
    return (f"- MONAI bundle in `bundle/` with {', '.join(exported['formats'])}; largest absolute difference "
            f"from the eager model on a random patch: {checks or 'n/a'}.")


def training_settings(params: Params) -> str:
    """The settings a reader of the card asks for first: patch, batch, learning rate."""
    cfg = params.train
    return (f"Patch {params.preprocess.patch_size}, batch {cfg.batch_size}, lr {cfg.lr} ({cfg.lr_schedule}), "
            f"weight decay {cfg.weight_decay}")


def postprocessing_lines(entry: dict) -> str:
    """Each class's verdict with its paired evidence (entries made before it was kept: the choice only)."""
    lines = entry.get("postprocessing_evidence") or [entry["postprocessing"]]
    return "\n".join(f"- {line}" for line in lines)


def shipped_models(entry: dict, params: Params) -> str:
    """What the model file holds: the fold ensemble, or the model trained on all cases (fold all)."""
    split = f"of {params.split.n_folds} (case-level split, seed {params.split.seed})"
    if entry["folds"] == ["all"]:
        return (f"One model trained on every case (fold all); its metrics are the out-of-fold scores of folds "
                f"{entry.get('evaluated_folds')} {split}")
    return f"Ensemble of the models of folds {entry['folds']} {split}"


def model_card(entry: dict, params: Params, report: ValidationReport, per_case: pd.DataFrame) -> str:
    """Markdown for MODEL_CARD.md of a registry entry."""
    dataset = entry["dataset"]
    return f"""# Model card: {params.model.name} ensemble for {dataset}

## Intended use
Research segmentation of {dataset} volumes acquired and prepared like the training data (same
modality and field of view; {entry['preprocessing']}). Not a medical device: not for diagnosis or
treatment decisions. Its status (champion, candidate, retired) is in `entry.json` and
`segflow models show`.

## Data
- Dataset {dataset}; raw data md5 (data.dvc) `{entry['data_hash']}`
- Cases kept by validation: {report.n_kept}; quarantined: {report.n_quarantined} (see the validate report)
- {shipped_models(entry, params)}

## Training
- Network: {params.model.name} {params.model.network_args()}
- {training_settings(params)}
{configuration_line(entry)}- Postprocessing: {entry['postprocessing']} (evidence below)
- Code: git {describe_code(entry)}; full parameters in `params.yaml`, plan in `plan.json` beside this card

## Metrics (out of fold: each case scored by the fold model that did not train on it)
| metric | mean | 95% bootstrap CI | cases |
|---|---|---|---|
{metric_rows(per_case)}

Per-case scores: `per_case.csv`. HD95 in mm.

## Postprocessing
Keep-largest-connected-component was tried per class on the out-of-fold predictions; `segflow predict
--no-postprocess` skips it.
{postprocessing_lines(entry)}

## Compute
| configuration | fold | device | processes | epochs | seconds | predicted s (train.budget) | s/epoch | peak RAM MB |
|---|---|---|---|---|---|---|---|---|
{compute_rows(entry['compute'])}

## Exports
{export_lines(entry['export'])}

## Limits
- Validated on held-out folds of one delivery, not on an external test set: expect lower scores on
  other scanners, sequences, field strengths or crops.
- Cases the validation quarantined (missing or unreadable files) were never seen; inputs far from the
  training intensity and spacing distribution are outside the tested range.
- The intervals cover case sampling only, not retraining variance (seed, fold assignment).
"""
