"""The plan (artifacts/plan/plan.json): its schema, its one reader and writer, and params with
the plan's values filled in. The planning rules that choose it live in `planner`; every consumer
reads the plan through here (as nnU-Net's plans handler), so a change to a rule does not change
the code of the stages that only read the plan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from segflow.config import AUTO, PLANNED_SECTIONS, RUNTIME_AUTO, ConfigError, Params, parse_params
from segflow.data.preprocess import ChannelNormalisation, Preprocessing
from segflow.files import load_json_model, write_json

PLAN_FORMAT = "segflow-plan/1"


class BudgetPlan(BaseModel):
    """train.budget's decision (segflow.planning.budget): what training the budget buys, with the
    costs measured at plan time it was computed from and the minutes it is predicted to take."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    budget: str  # as params.yaml gives it
    budget_minutes: float
    epochs: int  # per model (a configuration on a fold)
    folds: list[int]
    configurations: list[str]  # the native configuration first
    costs: dict[str, dict[str, float]]  # per configuration: epoch_s, validation_s
    predicted_minutes: dict[str, float]  # per configuration, one fold's model
    predicted_total_minutes: float
    measured_on: str
    reasons: dict[str, str]


class SliceConfiguration(BaseModel):
    """The `2d` configuration of 3D data (segflow.planning.configurations): a 2D network on
    single slices across `slice_axis` of the same preprocessed volumes."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    slice_axis: int
    patch_size: list[int]  # in-plane
    batch_size: int
    network_args: dict  # the 2D network's complete MONAI constructor arguments
    estimated_memory_gb: float
    reasons: dict[str, str]
    # Steps per epoch: the 3d configuration's (train.iterations_per_epoch auto counts cases per
    # batch, and the 2d batch is larger), so an epoch of either is the same number of updates.
    iterations_per_epoch: int | None = None


TRAINING_PLAN_FORMAT = "segflow-training-plan/1"


class TrainingPlan(BaseModel):
    """What training does beyond the network's plan (artifacts/plan/training.json): train.budget's
    decision and the 2d configuration it weighed. A file of its own, so a budget change retrains
    without preparing the data again (preprocess reads plan.json only)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    format: Literal["segflow-training-plan/1"] = TRAINING_PLAN_FORMAT
    budget: BudgetPlan | None = None  # None: train.budget is null; train.epochs and the native configuration
    slice_configuration: SliceConfiguration | None = None  # 3D data with a budget: the 2d candidate

    @classmethod
    def load(cls, path: Path | str) -> TrainingPlan:
        """Read training.json; a missing or invalid file is a `ConfigError` naming it."""
        return load_json_model(cls, path, "training plan", "run the budget stage (dvc repro budget)")

    def save(self, path: Path | str) -> None:
        write_json(path, self.model_dump(mode="json"))


class Plan(BaseModel):
    """The planned settings, each with the reason it was chosen (artifacts/plan/plan.json)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    format: Literal["segflow-plan/1"] = PLAN_FORMAT
    device: Literal["cpu", "cuda"]
    memory_budget_gb: float
    spatial_dims: int
    target_spacing: list[float]
    median_shape: list[int]  # after resampling to target_spacing
    normalisation: list[ChannelNormalisation]
    patch_size: list[int]
    batch_size: int
    network: str
    network_args: dict  # complete MONAI constructor arguments
    estimated_memory_gb: float
    reasons: dict[str, str]

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(target_spacing=self.target_spacing, normalisation=self.normalisation)

    @classmethod
    def load(cls, path: Path | str) -> Plan:
        """Read plan.json; a missing or invalid file is a `ConfigError` naming it."""
        return load_json_model(cls, path, "plan", "run the plan stage (dvc repro plan)")

    def save(self, path: Path | str) -> None:
        write_json(path, self.model_dump(mode="json"))


# -- params with the plan's values ----------------------------------------------------------------

def plan_values(plan: Plan) -> dict[str, dict]:
    """The plan's value for each params key that may be `auto`, by section."""
    return {"preprocess": {"patch_size": plan.patch_size, "target_spacing": plan.target_spacing,
                        "normalisation": plan.normalisation[0].scheme},
            "model": plan.network_args,
            "train": {"batch_size": plan.batch_size, "device": plan.device}}


def resolve_params(params: Params, plan: Plan) -> Params:
    """A copy of `params` with every `auto` replaced by the plan's value; the model section also
    gains the required constructor arguments the plan filled in, so it builds the plan's network."""
    if (plan.network, plan.spatial_dims) != (params.model.name, params.model.spatial_dims):
        raise ConfigError(f"the plan is for a {plan.spatial_dims}D {plan.network} but params.yaml asks for a "
                          f"{params.model.spatial_dims}D {params.model.name}; rerun the plan stage")
    raw, values = params.model_dump(by_alias=True), plan_values(plan)
    for section in PLANNED_SECTIONS:
        keys = raw[section]
        for key in [k for k, v in keys.items() if v == AUTO and f"{section}.{k}" not in RUNTIME_AUTO]:
            if key not in values.get(section, {}):
                raise ConfigError(f"{section}.{key} is auto but the plan has no value for it")
            keys[key] = values[section][key]
    raw["model"] = {**plan.network_args, **raw["model"]}
    return parse_params(raw, source="params.yaml with the plan's values")
