"""The configurations of one dataset (nnU-Net's `3d_fullres` and `2d`): the native one the plan
makes for the data's own dimensions, and for 3D data a `2d` one, a 2D network trained on single
slices of the same preprocessed volumes and run slice by slice (models.factory.SliceWise).

Each is cross-validated on the same folds; evaluate picks the best by out-of-fold Dice
(`select_configuration`, nnU-Net's find_best_configuration) and register ships that one.
"""

from __future__ import annotations

from dataclasses import dataclass

from segflow.config import Params, parse_params
from segflow.models.factory import SLICE_AXIS
from segflow.planning.plan import Plan, TrainingPlan

SLICE = "2d"
ENSEMBLE = "ensemble"  # the mean of the configurations' probabilities


def native_name(spatial_dims: int) -> str:
    return f"{spatial_dims}d"


def configuration_params(resolved: Params, plan: Plan, training: TrainingPlan, name: str) -> Params:
    """Params (the plan's values in) as configuration `name` trains: the budget's epochs; the
    native configuration as planned, `2d` with the 2D network slice-wise, a one-slice patch and
    its own batch."""
    raw = resolved.model_dump(by_alias=True)
    if training.budget is not None:  # the budget's epochs; train.epochs otherwise (left as it is)
        raw["train"] = {**raw["train"], "epochs": training.budget.epochs}
    if name != native_name(plan.spatial_dims):
        slices = training.slice_configuration
        if name != SLICE or slices is None:
            raise ValueError(f"the training plan has no {name} configuration; rerun the budget stage")
        raw["model"] = {"name": plan.network, **slices.network_args, "spatial_dims": 3, SLICE_AXIS: slices.slice_axis}
        patch = list(slices.patch_size)
        patch.insert(slices.slice_axis, 1)
        raw["preprocess"] = {**raw["preprocess"], "patch_size": patch}
        raw["train"] = {**raw["train"], "batch_size": slices.batch_size,
                        "iterations_per_epoch": slices.iterations_per_epoch or raw["train"]["iterations_per_epoch"]}
    elif training.budget is None:
        return resolved
    return parse_params(raw, source=f"params.yaml ({name} configuration)")


def planned_configurations(training: TrainingPlan, spatial_dims: int) -> list[str]:
    """The configurations training follows: the budget's choice, else the native one alone."""
    return list(training.budget.configurations) if training.budget else [native_name(spatial_dims)]


def planned_epochs(training: TrainingPlan, epochs: int) -> int:
    """Epochs per model: the budget's, else train.epochs (`epochs`)."""
    return training.budget.epochs if training.budget else epochs


@dataclass(frozen=True)
class Selection:
    """Which candidate ships, with every candidate's out-of-fold mean Dice."""

    selected: str
    dice: dict[str, float]
    reason: str

    def as_dict(self) -> dict:
        return {"selected": self.selected, "dice_mean": self.dice, "reason": self.reason}


def select_configuration(dice: dict[str, float], order: list[str]) -> Selection:
    """The candidate with the highest out-of-fold mean Dice (nnU-Net's find_best_configuration);
    on a tie the earlier in `order` (the native configuration first, the ensemble last: the
    simpler model wins what it does not lose)."""
    best = max(order, key=lambda name: (round(dice[name], 6), -order.index(name)))
    others = ", ".join(f"{n} {dice[n]:.4f}" for n in order if n != best)
    reason = (f"{best} has the highest out-of-fold mean Dice ({dice[best]:.4f}; {others})" if others
              else f"{best} is the only configuration trained")
    return Selection(selected=best, dice={n: round(dice[n], 5) for n in order}, reason=reason)
