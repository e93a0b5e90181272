"""budget: train.budget -> the training it buys (artifacts/plan/training.json).

Times the planned network's training steps, the trainer's loader over a few cached training cases
and a validation pass on the planned device (and, for 3D data, those of the 2d configuration),
then decides the epochs per model and the configurations (segflow.planning.budget). A stage of
its own after preprocess: a new budget or another fold reruns this and training, never the
fingerprint or the preprocessing. Without a budget it writes an empty decision (train.epochs and
the native configuration).
"""

from __future__ import annotations

from segflow.config import Params
from segflow.data.cache import PreprocessedCache
from segflow.data.regions import Regions
from segflow.data.splits import Splits
from segflow.files import read_json
from segflow.paths import Paths
from segflow.planning.plan import Plan, TrainingPlan
from segflow.training.calibration import describe_budget, loading_timer, training_plan


def decide(params: Params, paths: Paths) -> TrainingPlan:
    """The decision, costs measured with the first numbered fold's cases."""
    splits = Splits.load(paths.splits)
    train_ids, val_ids = PreprocessedCache(paths.preprocessed).fold_cases(splits, params.split.held_out[0])
    return training_plan(Plan.load(paths.plan), params, read_json(paths.fingerprint), len(train_ids), len(val_ids),
                         len(splits.labels), loading_timer(paths, train_ids, splits.ignore_label), splits.ignore_label,
                         Regions.of(splits.regions))


def main(params: Params, paths: Paths, tracker=None) -> dict:
    training = decide(params, paths)
    training.save(paths.training_plan)
    if training.budget is None:
        print("budget: train.budget is null: train.epochs for the native configuration")
        return {"configurations": 1}
    for line in describe_budget(training.budget):
        print(f"budget: {line}")
    budget = training.budget
    summary = {"epochs": budget.epochs, "configurations": len(budget.configurations),
               "predicted_minutes": budget.predicted_total_minutes}
    if tracker:
        tracker.summary({f"budget/{key}": value for key, value in summary.items()})
    return summary
