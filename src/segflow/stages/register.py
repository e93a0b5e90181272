"""register: bundle the fold models as one ensemble with the chosen postprocessing, gate it on the
cross-validation Dice, then record it in the registry."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import yaml

from segflow.config import Params
from segflow.io import read_json, write_json
from segflow.models.bundle import ensemble, load_bundle, save_bundle
from segflow.paths import Paths
from segflow.registry import Registry


def git_commit(root: Path) -> str:
    """HEAD commit, with '-dirty' when tracked files differ from it; 'unknown' outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{'-dirty' if dirty else ''}" if head else "unknown"


def data_hash(root: Path) -> str:
    """The md5 DVC recorded for the raw data (data.dvc)."""
    try:
        outs = yaml.safe_load((root / "data.dvc").read_text())["outs"]
        return str(outs[0]["md5"])
    except (OSError, KeyError, IndexError, TypeError):
        return "unknown"


def gate(metrics: dict, minimum: float) -> tuple[bool, str]:
    dice = metrics.get("dice_mean")
    if dice is None:
        return False, "evaluate produced no dice_mean"
    if dice < minimum:
        return False, f"mean Dice {dice:.4f} is below register.min_mean_dice {minimum:.4f}"
    return True, f"mean Dice {dice:.4f} meets register.min_mean_dice {minimum:.4f}"


def model_card(entry: dict, params: Params, report: dict, summary: dict) -> str:
    metrics = entry["metrics"]
    rows = "\n".join(f"| {k} | {v} |" for k, v in metrics.items())
    return f"""# Model card: {params.model.name} ({entry['dataset']})

**Intended use.** Research segmentation of {entry['dataset']} volumes prepared like the training
data (same modality; {entry['preprocessing']}). Not a medical device; not for diagnosis.

## Data
- Dataset: {entry['dataset']}, raw data md5 (data.dvc) `{entry['data_hash']}`
- Cases kept by validation: {report['n_kept']}, quarantined: {report['n_quarantined']}
- Ensemble of the models of folds {params.split.folds} of {params.split.n_folds} (case-level split, seed {params.split.seed})

## Training
- Network: {params.model.name} {params.model.network_args()}
- Patch {params.augment.patch_size}, epochs {summary.get('epochs')}, batch {params.train.batch_size}, lr {params.train.lr} ({params.train.lr_schedule})
- Compute per fold: {summary.get('device')}, {summary.get('seconds')} s, peak RAM {summary.get('peak_rss_mb')} MB
- Postprocessing: {entry['postprocessing']}
- Code: git `{entry['git_commit']}`

## Cross-validation metrics (out-of-fold, each case scored by the fold model that did not see it)
| metric | value |
|---|---|
{rows}

## Limits
Evaluated on held-out folds of the training delivery, not on an external test set; scores on
other scanners, field strengths or crops will differ. Full parameters: params.yaml in this folder.
"""


def build_ensemble(params: Params, paths: Paths) -> dict:
    """Write the fold models as one ensemble file with the postprocessing chosen on validation."""
    decision = read_json(paths.postprocessing)
    bundles = [load_bundle(paths.model_for(fold)) for fold in params.split.folds]
    save_bundle(paths.ensemble, ensemble(bundles, postprocessing=decision))
    return decision


def describe_preprocessing(preprocessing: dict | None) -> str:
    if not preprocessing:
        return "per-case z-score intensities"
    schemes = sorted({c["scheme"] for c in preprocessing["normalisation"]})
    return f"{'/'.join(schemes)} normalisation, resampled to {preprocessing['target_spacing']}"


def main(params: Params, paths: Paths, tracker=None) -> dict:
    metrics = read_json(paths.metrics)
    decision_pp = build_ensemble(params, paths)
    passed, reason = gate(metrics, params.register_.min_mean_dice)
    decision = {"registered": passed, "reason": reason, "metrics": metrics}
    if passed:
        splits, report = read_json(paths.splits), read_json(paths.validation_report)
        kept = decision_pp["keep_largest_component"]
        entry = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "dataset": splits["dataset"],
                 "data_hash": data_hash(paths.root), "git_commit": git_commit(paths.root), "metrics": metrics,
                 "folds": list(params.split.folds),
                 "preprocessing": describe_preprocessing(load_bundle(paths.ensemble).preprocessing),
                 "postprocessing": f"largest component kept for classes {kept}" if kept else "none"}
        summary = read_json(paths.train_summary_for(params.split.folds[0]))
        files = {"params.yaml": (paths.root / "params.yaml").read_text(),
                 "plan.json": paths.plan.read_text(),
                 "metrics.json": paths.metrics.read_text(),
                 "MODEL_CARD.md": model_card(entry, params, report, summary)}
        registry = Registry(paths.root / params.register_.registry_dir)
        decision["model_id"] = registry.add(paths.ensemble, entry, files, promote=True)
        decision["model_dir"] = (params.register_.registry_dir / "models" / decision["model_id"]).as_posix()
    write_json(paths.registration, decision)
    print(f"register: {'registered ' + decision['model_id'] + ' as champion' if passed else 'not registered'}: {reason}")
    if tracker and passed:
        tracker.log_artifact(paths.ensemble, name="model", type="model",
                             aliases=["champion", decision["model_id"]], metadata=metrics)
    return decision
