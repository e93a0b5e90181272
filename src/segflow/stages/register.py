"""register: gate the evaluated model on a minimum Dice, then record it in the registry."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import yaml

from segflow.config import Params
from segflow.io import read_json, write_json
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
data (same modality, per-case z-score intensities). Not a medical device; not for diagnosis.

## Data
- Dataset: {entry['dataset']}, raw data md5 (data.dvc) `{entry['data_hash']}`
- Cases kept by validation: {report['n_kept']}, quarantined: {report['n_quarantined']}
- Validation fold {params.split.fold} of {params.split.n_folds} (case-level split, seed {params.split.seed})

## Training
- Network: {params.model.name} {params.model.network_args()}
- Epochs {summary.get('epochs')}, batch {params.train.batch_size}, lr {params.train.lr} ({params.train.lr_schedule})
- Compute: {summary.get('device')}, {summary.get('seconds')} s, peak RAM {summary.get('peak_rss_mb')} MB
- Code: git `{entry['git_commit']}`

## Validation-fold metrics
| metric | value |
|---|---|
{rows}

## Limits
Evaluated on one validation fold of the training delivery, not on an external test set; scores on
other scanners, field strengths or crops will differ. Full parameters: params.yaml in this folder.
"""


def main(params: Params, paths: Paths, tracker=None) -> dict:
    metrics = read_json(paths.metrics)
    passed, reason = gate(metrics, params.register_.min_mean_dice)
    decision = {"registered": passed, "reason": reason, "metrics": metrics}
    if passed:
        splits, report = read_json(paths.splits), read_json(paths.validation_report)
        entry = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "dataset": splits["dataset"],
                 "data_hash": data_hash(paths.root), "git_commit": git_commit(paths.root), "metrics": metrics}
        summary = read_json(paths.train_dir / "summary.json")
        files = {"params.yaml": (paths.root / "params.yaml").read_text(),
                 "metrics.json": paths.metrics.read_text(),
                 "MODEL_CARD.md": model_card(entry, params, report, summary)}
        registry = Registry(paths.root / params.register_.registry_dir)
        decision["model_id"] = registry.add(paths.model, entry, files, promote=True)
        decision["model_dir"] = (params.register_.registry_dir / "models" / decision["model_id"]).as_posix()
    write_json(paths.registration, decision)
    print(f"register: {'registered ' + decision['model_id'] + ' as champion' if passed else 'not registered'}: {reason}")
    if tracker and passed:
        tracker.log_artifact(paths.model, name="model", type="model",
                             aliases=["champion", decision["model_id"]], metadata=metrics)
    return decision
