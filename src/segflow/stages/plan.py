"""plan: fingerprint the kept cases, then plan spacing, normalisation, patch, network and batch.

Writes artifacts/plan/fingerprint.json and artifacts/plan/plan.json; later stages read the plan
through `segflow.planning.plan.Plan.load` and `resolve_params`, never re-deriving a choice.
"""

from __future__ import annotations

import pandas as pd

from segflow.config import Params
from segflow.data.splits import Splits
from segflow.files import write_json
from segflow.paths import Paths
from segflow.planning.calibration import describe_budget, training_plan
from segflow.planning.fingerprint import compute_fingerprint
from segflow.planning.plan import Plan, TrainingPlan
from segflow.planning.planner import make_plan
from segflow.validation.report import ValidationReport


def plan_summary(plan: Plan, training: TrainingPlan) -> dict:
    """The few numbers a person (and the tracker) looks at first."""
    summary = {"patch_size": plan.patch_size, "batch_size": plan.batch_size, "device": plan.device,
               "estimated_memory_gb": plan.estimated_memory_gb, "target_spacing": plan.target_spacing}
    if training.budget:
        budget = training.budget
        summary |= {"budget_epochs": budget.epochs, "budget_configurations": budget.configurations,
                    "budget_predicted_minutes": budget.predicted_total_minutes}
    return summary


def print_choices(plan: Plan, training: TrainingPlan) -> None:
    values = {"device": plan.device, "target_spacing": plan.target_spacing,
              "normalisation": [n.scheme for n in plan.normalisation], "patch_size": plan.patch_size,
              "network_args": plan.network, "batch_size": plan.batch_size}
    for key, reason in plan.reasons.items():
        print(f"plan {key} = {values.get(key)}: {reason}")
    print(f"plan estimated_memory_gb = {plan.estimated_memory_gb} (budget {plan.memory_budget_gb:g} GB)")
    for line in describe_budget(training.budget) if training.budget else []:
        print(f"plan {line}")


def budgeted(plan: Plan, params: Params, fingerprint: dict, splits: Splits, kept: list[str]) -> TrainingPlan:
    """train.budget's decision, costs measured on the first fold's case counts."""
    from segflow.data.regions import Regions

    train_ids, val_ids = splits.cases_of_fold(params.split.held_out[0], [str(k) for k in kept])
    return training_plan(plan, params, fingerprint, len(train_ids), len(val_ids), len(splits.labels), splits.ignore_label,
                       Regions.of(splits.regions))


def main(params: Params, paths: Paths, tracker=None) -> dict:
    splits, kept = Splits.load(paths.splits), ValidationReport.load(paths.validation_report).kept
    fingerprint = compute_fingerprint(
        paths.root / params.data.root, pd.read_csv(paths.manifest), kept,
        splits.labels, splits.modality, params.data.label_map, params.model.spatial_dims, splits.regions)
    write_json(paths.fingerprint, fingerprint)
    plan = make_plan(fingerprint, params)
    training = budgeted(plan, params, fingerprint, splits, kept)
    plan.save(paths.plan)
    training.save(paths.training_plan)
    print_choices(plan, training)
    summary = plan_summary(plan, training)
    if tracker:
        tracker.summary({f"plan/{key}": value for key, value in summary.items()})
    return summary
