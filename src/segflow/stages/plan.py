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
from segflow.planning.fingerprint import compute_fingerprint
from segflow.planning.plan import Plan
from segflow.planning.planner import make_plan
from segflow.validation.report import ValidationReport


def plan_summary(plan: Plan) -> dict:
    """The few numbers a person (and the tracker) looks at first."""
    return {"patch_size": plan.patch_size, "batch_size": plan.batch_size, "device": plan.device,
            "estimated_memory_gb": plan.estimated_memory_gb, "target_spacing": plan.target_spacing}


def print_choices(plan: Plan) -> None:
    values = {"device": plan.device, "target_spacing": plan.target_spacing,
              "normalisation": [n.scheme for n in plan.normalisation], "patch_size": plan.patch_size,
              "network_args": plan.network, "batch_size": plan.batch_size}
    for key, reason in plan.reasons.items():
        print(f"plan {key} = {values.get(key)}: {reason}")
    print(f"plan estimated_memory_gb = {plan.estimated_memory_gb} (budget {plan.memory_budget_gb:g} GB)")


def main(params: Params, paths: Paths, tracker=None) -> dict:
    splits = Splits.load(paths.splits)
    fingerprint = compute_fingerprint(
        paths.root / params.data.root, pd.read_csv(paths.manifest), ValidationReport.load(paths.validation_report).kept,
        splits.labels, splits.modality, params.data.label_map, params.model.spatial_dims, splits.regions)
    write_json(paths.fingerprint, fingerprint)
    plan = make_plan(fingerprint, params)
    plan.save(paths.plan)
    print_choices(plan)
    summary = plan_summary(plan)
    if tracker:
        tracker.summary({f"plan/{key}": value for key, value in summary.items()})
    return summary
