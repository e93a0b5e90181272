"""register: bundle the fold models as one ensemble with the chosen postprocessing, export it
(TorchScript, ONNX, MONAI bundle; each checked against the eager model), gate it on the
cross-validation Dice, and record it in the registry. It becomes champion only when it beats the
current champion on the same cases (segflow.registry.promotion); otherwise it stays a candidate.

Each run builds its ensemble and export in its own hidden folder, registers from there, then
publishes both into artifacts/register/ by rename: runs at once never share a half-written file."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pandas as pd

from segflow.config import ALL_FOLDS, Params
from segflow.data.preprocess import describe_preprocessing
from segflow.data.splits import Splits
from segflow.files import read_json, write_json
from segflow.inference.postprocessing import describe_decision
from segflow.metrics.per_case import read_per_case
from segflow.models.model_file import ModelFile, ensemble, load_model_file, save_model_file, with_companions
from segflow.paths import Paths
from segflow.planning.configurations import ENSEMBLE, native_name, planned_configurations
from segflow.planning.fingerprint import training_ranges_from_fingerprint
from segflow.planning.plan import TrainingPlan
from segflow.registry.catalog import Catalog, dataset_key, project_dataset
from segflow.registry.model_card import model_card
from segflow.registry.promotion import challenge
from segflow.registry.store import Registry
from segflow.tracking.provenance import data_hash, git_commit, git_state
from segflow.training.summary import TrainSummary
from segflow.validation.report import ValidationReport


def trivial_dice(fingerprint: dict) -> float:
    """The dataset's own baseline: mean over foreground classes of the Dice of predicting the class
    everywhere (2f / (1 + f) for a class covering a share f of the voxels)."""
    fractions = [c["voxel_fraction"] for k, c in fingerprint.get("class_frequencies", {}).items() if k != "0"]
    return float(sum(2 * f / (1 + f) for f in fractions) / len(fractions)) if fractions else 0.0


def gate(metrics: dict, floor: float | str, fingerprint: dict, dataset: str = "") -> tuple[bool, str]:
    """Is the model good enough to register at all? `floor` is register.min_mean_dice for the
    dataset: a number (met at or above it), or "auto" (strictly above the dataset's trivial baseline)."""
    dice = metrics.get("dice_mean")
    if dice is None:
        return False, "evaluate produced no dice_mean"
    if floor == "auto":
        baseline = trivial_dice(fingerprint)
        passed = dice > baseline
        return passed, (f"mean Dice {dice:.4f} is {'above' if passed else 'not above'} the trivial baseline "
                        f"{baseline:.4f} of {dataset or 'the dataset'} (register.min_mean_dice auto: the Dice of "
                        f"predicting each class everywhere)")
    passed, where = dice >= floor, f" for {dataset}" if dataset else ""
    return passed, f"mean Dice {dice:.4f} {'meets' if passed else 'is below'} register.min_mean_dice {floor:.4f}{where}"


def shipped_configurations(params: Params, paths: Paths) -> list[str]:
    """The configuration(s) evaluate selected: one, or every trained one for their ensemble."""
    selected = read_json(paths.configuration_choice)["selected"]
    return trained_configurations(params, paths) if selected == ENSEMBLE else [selected]


def trained_configurations(params: Params, paths: Paths) -> list[str]:
    return planned_configurations(TrainingPlan.load(paths.training_plan), params.model.spatial_dims)


def shipped_folds(params: Params) -> list:
    """The folds whose models ship: the one trained on all cases when split.folds lists `all`
    (nnU-Net's fold all), else every numbered fold as an ensemble."""
    return [ALL_FOLDS] if ALL_FOLDS in params.split.folds else params.split.held_out


def fold_ensemble(params: Params, paths: Paths, configuration: str) -> ModelFile:
    """A configuration's shipped fold models as one model file (their probabilities averaged)."""
    native = native_name(params.model.spatial_dims)
    own = paths.of_configuration(configuration, native)
    return ensemble([load_model_file(own.model_for(fold)) for fold in shipped_folds(params)])


def build_ensemble(params: Params, paths: Paths, dest: Path) -> dict:
    """Write what evaluate selected, the fold models of a configuration (or of each, for their
    ensemble), as one model file at `dest` with the postprocessing chosen on validation and the
    training cases' shape and spacing ranges (predict flags inputs far outside)."""
    decision = read_json(paths.postprocessing)
    first, *others = [fold_ensemble(params, paths, name) for name in shipped_configurations(params, paths)]
    ranges = training_ranges_from_fingerprint(read_json(paths.fingerprint))
    bundle = replace(with_companions(first, others), postprocessing=decision,
                     info={**first.info, "training_ranges": ranges})
    save_model_file(dest, bundle)
    return decision


def export_ensemble(params: Params, model_file: Path, dest: Path) -> dict:
    """The ensemble as a MONAI bundle at `dest` with the formats in register.export; an export that
    fails (or does not match the eager model) is reported, never published, and does not stop register."""
    from segflow.errors import SegflowError
    from segflow.models.export import export_model

    if not params.register_.export:
        return _not_exported(dest, {"formats": [], "skipped": "register.export is empty"})
    try:
        return export_model(model_file, dest, formats=tuple(params.register_.export))
    except SegflowError as exc:
        print(f"register: WARNING export failed, no bundle published: {exc}")
        return _not_exported(dest, {"formats": [], "error": str(exc)})


def _not_exported(bundle: Path, outcome: dict) -> dict:
    """The bundle folder is a DVC output, so it always exists; here it only says why it is empty."""
    from segflow.files import write_text

    reason = outcome.get("error") or outcome.get("skipped")
    write_text(bundle / "NOT_EXPORTED.txt", f"No export was published: {reason}\n")
    return outcome


@contextlib.contextmanager
def own_folder(paths: Paths) -> Iterator[Path]:
    """This run's hidden working folder in artifacts/register/ (one a killed run left is removed)."""
    from segflow.models.export import staging_folder

    with staging_folder(paths.ensemble.parent / "run") as own:
        yield own


def publish_outputs(own: Path, paths: Paths) -> None:
    """This run's ensemble and bundle into artifacts/register/, each by rename: runs at once each
    publish whole outputs (the last one wins), never a mix or a half."""
    from segflow.models.export import publish

    os.replace(own / "model.pt", paths.ensemble)
    publish(own / "bundle", paths.export_bundle, replace=True)


def compute_record(params: Params, paths: Paths) -> list[dict]:
    """What training each fold of each configuration cost (from train's summaries), beside what
    the budget plan predicted (train.budget)."""
    keys = ("fold", "device", "epochs", "seconds", "seconds_per_epoch", "peak_rss_mb", "processes", "predicted_seconds")
    native, record = native_name(params.model.spatial_dims), []
    for name in trained_configurations(params, paths):
        own = paths.of_configuration(name, native)
        summaries = [TrainSummary.load(own.train_summary_for(f)) for f in params.split.folds]
        record += [{"configuration": name, **{k: getattr(s, k) for k in keys}} for s in summaries]
    return record


def make_entry(params: Params, paths: Paths, model_file: Path, metrics: dict, pp_decision: dict,
               exported: dict) -> dict:
    kept = pp_decision["keep_largest_component"]
    dataset, task = project_dataset(paths)
    return {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "dataset": dataset, "task": task,
            "dataset_key": dataset_key(dataset, task),
            "network": params.model.name, "data_hash": data_hash(paths.root), "git_commit": git_commit(paths.root),
            "git_modified": git_state(paths.root)[1],
            "metrics": metrics, "folds": shipped_folds(params), "evaluated_folds": params.split.held_out,
            "compute": compute_record(params, paths),
            "configuration": read_json(paths.configuration_choice),
            "preprocessing": describe_preprocessing(load_model_file(model_file).preprocessing),
            "postprocessing": f"largest component kept for classes {kept}" if kept else "none",
            "postprocessing_evidence": describe_decision(pp_decision), "export": exported}


def champion_scores(registry: Registry, champion: dict) -> pd.DataFrame | None:
    """The champion's per-case scores; None for a champion registered before they were kept."""
    per_case = registry.model_dir(champion["id"]) / "per_case.csv"
    return read_per_case(per_case) if per_case.is_file() else None


def registry_of(params: Params, paths: Paths) -> Registry:
    """This run's dataset's registry in register.registry_dir (relative to the project root)."""
    return Catalog(paths.root / params.register_.registry_dir).for_dataset(dataset_key(*project_dataset(paths)))


def record(params: Params, paths: Paths, entry: dict, own: Path) -> dict:
    """Add this run's model and bundle (from its own folder) to the registry; the promotion
    decision is taken under the registry's lock."""
    registry = registry_of(params, paths)
    per_case = read_per_case(paths.per_case)
    verdicts = []

    def decide(champion: dict | None) -> tuple[bool, str]:
        scores = champion_scores(registry, champion) if champion else None
        mean = (champion.get("metrics") or {}).get("dice_mean") if champion else None
        verdicts.append(challenge(per_case, champion and champion["id"], scores, mean, params.register_))
        return verdicts[-1].promote, verdicts[-1].reason

    files = {"params.yaml": (paths.root / "params.yaml").read_text(), "plan.json": paths.plan.read_text(),
             "metrics.json": paths.metrics.read_text(), "per_case.csv": paths.per_case.read_text(),
             "MODEL_CARD.md": model_card(entry, params, ValidationReport.load(paths.validation_report), per_case)}
    folders = {"bundle": own / "bundle"} if entry["export"].get("formats") else {}
    model_id, promoted, reason = registry.add(own / "model.pt", entry, files, decide, folders)
    return {"model_id": model_id, "promoted": promoted, "reason": reason, "comparison": verdicts[-1].as_dict(),
            "model_dir": (params.register_.registry_dir / registry.root.name / "models" / model_id).as_posix()}


def main(params: Params, paths: Paths, tracker=None) -> dict:
    metrics, dataset = read_json(paths.metrics), Splits.load(paths.splits).dataset
    passed, gate_reason = gate(metrics, params.register_.dice_floor(dataset), read_json(paths.fingerprint), dataset)
    if passed:
        registry_of(params, paths).check()  # a damaged registry stops register before the export
    with own_folder(paths) as own:
        pp_decision = build_ensemble(params, paths, own / "model.pt")
        exported = export_ensemble(params, own / "model.pt", own / "bundle")
        decision = {"registered": passed, "gate": gate_reason, "metrics": metrics, "export": exported}
        if passed:
            entry = make_entry(params, paths, own / "model.pt", metrics, pp_decision, exported)
            decision |= record(params, paths, entry, own)
        publish_outputs(own, paths)
    write_json(paths.registration, decision)
    print(f"register: {describe(decision)}")
    if tracker:
        log_to_wandb(params, paths, decision, tracker)
    return {"registered": passed, "promoted": bool(decision.get("promoted"))}


def describe(decision: dict) -> str:
    if not decision["registered"]:
        return f"not registered: {decision['gate']}"
    status = "champion" if decision["promoted"] else "candidate"
    return f"registered {decision['model_id']} as {status}: {decision['reason']}"


def log_to_wandb(params: Params, paths: Paths, decision: dict, tracker) -> None:
    """Lineage: evaluation and fold models in; the ensemble out, aliased candidate or champion."""
    from segflow.tracking.runs import EVALUATION_ARTIFACT, MODEL_ARTIFACT, fold_model_artifact

    tracker.use_artifact_files([paths.per_case, paths.metrics], name=EVALUATION_ARTIFACT, type="evaluation")
    for fold in params.split.folds:
        tracker.use_artifact_files(paths.model_for(fold), name=fold_model_artifact(fold), type="model")
    if decision["registered"]:
        aliases = ["champion" if decision["promoted"] else "candidate", decision["model_id"]]
        files = [paths.ensemble] + ([paths.export_bundle] if decision["export"].get("formats") else [])
        tracker.log_artifact(files, name=MODEL_ARTIFACT, type="model", aliases=aliases,
                             metadata={"metrics": decision["metrics"], "promotion": decision["comparison"]})
    tracker.summary({"register/reason": decision.get("reason") or decision["gate"]})
