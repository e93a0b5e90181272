"""Typed, validated view of params.yaml: the only module that reads it.

Each section is a pydantic model; a bad value raises `ConfigError` whose message names the
file, the key and the rule, so a user never sees a pydantic traceback.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

PARAMS_FILE = "params.yaml"
AUTO = "auto"
PLANNED_SECTIONS = ("preprocess", "model", "train")  # where an `auto` takes the plan's value
Auto = Literal["auto"]  # "take the plan's value" (artifacts/plan/plan.json); explicit values win


class ConfigError(ValueError):
    """params.yaml is missing, unreadable or breaks a rule."""


_DURATION_UNITS = {"h": 3600.0, "min": 60.0, "m": 60.0, "s": 1.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(h|min|m|s)")


def parse_duration(text: str, key: str) -> float:
    """Seconds of a duration spelled like `20m`, `8h`, `1h30m`, `90s`; a ValueError names `key`."""
    spelled = str(text).strip().lower()
    parts = _DURATION_PART.findall(spelled)
    if not parts or _DURATION_PART.sub("", spelled).strip():
        raise ValueError(f"{key} {text!r} is not a duration: write it as e.g. 20m, 8h, 1h30m or 90s")
    seconds = sum(float(value) * _DURATION_UNITS[unit] for value, unit in parts)
    if seconds <= 0:
        raise ValueError(f"{key} {text!r} is not a positive duration")
    return seconds


class Section(BaseModel):
    # allow_inf_nan=False: `.inf` or `.nan` passes `gt=0` checks (inf > 0) but means nothing.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataConfig(Section):
    """Where the raw data lies and how it is laid out.

    `layout: auto` detects the layout (segflow.data.layouts). `msd` reads dataset.json +
    imagesTr/labelsTr (MSD / nnU-Net v1), `nnunetv2` an nnU-Net v2 raw dataset, `folders2d`
    image/mask pairs (PNG/TIF/BMP) matched by file stem from `image_dir`/`label_dir`; there
    `label_map` maps raw mask values to class indices and `labels` names the classes.
    """

    root: Path
    layout: Literal["auto", "msd", "nnunetv2", "folders2d"] = "auto"
    local_copy: Path | None = None
    url: str | None = None
    md5: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    image_dir: str = "train/image"
    label_dir: str = "train/label"
    labels: dict[int, str] | None = None
    label_map: dict[int, int] | None = None
    # How far an archive (data.url, `segflow validate --data x.tar.gz`) may expand: bytes in all,
    # and times its own size (the numbers are justified in params.yaml).
    archive_max_bytes: int = Field(64 * 2**30, ge=1)
    archive_max_ratio: float = Field(200.0, ge=1)

    @model_validator(mode="after")
    def _folders_need_labels(self) -> DataConfig:
        if self.layout == "folders2d" and not self.labels:
            raise ValueError("layout folders2d needs `labels` (class index -> name)")
        if self.label_map and self.labels and not set(self.label_map.values()) <= set(self.labels):
            raise ValueError(f"label_map targets {sorted(set(self.label_map.values()))} are not all in labels")
        return self

    @property
    def marker(self) -> str:
        """A path below `root` whose presence means the dataset is in place."""
        two_d = self.layout == "folders2d" or (self.layout == "auto" and self.labels)
        return self.image_dir if two_d else "dataset.json"


ALL_FOLDS = "all"  # a model trained on every case (nnU-Net's `fold all`): nothing held out


class SplitConfig(Section):
    """Case-level k-fold split; `folds` are the folds trained (one model each) and evaluated; `all`
    trains one more model on every case, which register then ships (the numbered folds' out-of-fold
    scores estimate it)."""

    n_folds: int = Field(5, ge=2)
    folds: list[int | Literal["all"]] = Field(default_factory=lambda: [0], min_length=1)
    seed: int = Field(0, ge=0)  # numpy's generators take no negative seed

    @field_validator("folds")
    @classmethod
    def _folds_in_range(cls, folds: list, info: ValidationInfo) -> list:
        n_folds = info.data.get("n_folds")
        bad = [f for f in folds if f != ALL_FOLDS and (f < 0 or (n_folds is not None and f >= n_folds))]
        if bad:
            raise ValueError(f"fold(s) {bad} do not exist with n_folds={n_folds}")
        if len(set(folds)) != len(folds):
            raise ValueError(f"folds {folds} lists a fold twice")
        return folds

    @property
    def held_out(self) -> list[int]:
        """The numbered folds: the ones with validation cases (evaluate scores these)."""
        return [f for f in self.folds if f != ALL_FOLDS]


class ValidateConfig(Section):
    min_cases: int = Field(10, ge=1)
    max_dim: int = Field(1024, ge=1)
    strict: bool = False  # true: any quarantined case stops the pipeline, not only dataset errors
    foreground_labels: list[int] | None = None  # raw label values; default: every declared one but 0
    spacing_tolerance: float = Field(1e-3, ge=0)
    affine_tolerance: float = Field(1e-3, ge=0)
    outlier_z: float = Field(5.0, gt=0)


Probability = Field(ge=0.0, le=1.0)
FACTOR_RANGES = ("brightness_range", "contrast_range", "gamma_range")  # multiply or raise to the power


class PreprocessConfig(Section):
    """How cases meet the network (the preprocess stage caches them so): resampled to
    `target_spacing`, normalised, and seen in patches of `patch_size`. `auto`: the plan's value."""

    patch_size: Annotated[list[int], Field(min_length=2, max_length=3)] | Auto = AUTO
    target_spacing: Annotated[list[float], Field(min_length=2, max_length=3)] | Auto = AUTO  # mm per axis
    normalisation: Literal["auto", "zscore", "ct"] = AUTO  # auto: ct for CT modality, else zscore
    num_workers: int = Field(0, ge=0)  # processes preparing cases in parallel; 0: one per core (and per 16 cases)

    @field_validator("patch_size", "target_spacing")
    @classmethod
    def _positive_axes(cls, value: list | str) -> list | str:
        if value != AUTO and any(axis <= 0 for axis in value):
            raise ValueError("every axis must be positive")
        return value


class AugmentConfig(Section):
    """The training augmentation, as in nnU-Net (applied on the fly in train, never cached)."""

    foreground_oversample: float = Probability
    flip_prob: float = Probability
    rotate_prob: float = Probability
    rotate_range_deg: float = Field(15.0, ge=0, le=180)
    scale_prob: float = Probability
    scale_range: float = Field(0.15, ge=0, lt=1)
    noise_prob: float = Probability
    noise_std: float = Field(0.1, ge=0)
    intensity_shift_prob: float = Probability
    intensity_shift: float = Field(0.1, ge=0)
    blur_prob: float = Field(0.0, ge=0, le=1)
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness_prob: float = Field(0.0, ge=0, le=1)  # multiplicative, like nnU-Net
    brightness_range: tuple[float, float] = (0.75, 1.25)
    contrast_prob: float = Field(0.0, ge=0, le=1)  # scale around the mean
    contrast_range: tuple[float, float] = (0.75, 1.25)
    gamma_prob: float = Field(0.0, ge=0, le=1)
    gamma_range: tuple[float, float] = (0.7, 1.5)
    preview_samples: int = Field(4, ge=1, le=16)

    @field_validator("blur_sigma", "brightness_range", "contrast_range", "gamma_range")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        low, high = value
        if not 0 <= low <= high:
            raise ValueError("must be [low, high] with 0 <= low <= high")
        if info.field_name in FACTOR_RANGES and low == 0:
            raise ValueError("must start above 0 (a factor of 0 erases the image)")
        return value


class ModelConfig(Section):
    """Network name plus MONAI constructor arguments, spelled as MONAI spells them.

    An argument set to `auto` (e.g. `channels`, `strides`) takes the plan's value."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    name: str
    spatial_dims: Literal[2, 3] = 3
    in_channels: Annotated[int, Field(ge=1)] | Auto = AUTO  # auto: the dataset's channels
    out_channels: Annotated[int, Field(ge=2)] | Auto = AUTO  # auto: its classes (ignore label left out)

    def network_args(self) -> dict:
        """Keyword arguments for the MONAI constructor (everything but `name`)."""
        return self.model_dump(exclude={"name"})


class TrainConfig(Section):
    epochs: int = Field(ge=1)
    # Wall-clock for the whole training of the run (all folds and configurations), e.g. 20m or 8h;
    # the plan measures the planned network's step time and decides the epochs (and whether the
    # other configuration joins) from it (segflow.planning.budget). None: `epochs` as given.
    budget: str | None = None
    budget_min_epochs: int = Field(20, ge=1)  # a budget that buys fewer is refused
    budget_converged_epochs: int = Field(150, ge=1)  # other configurations join only at this many
    batch_size: Annotated[int, Field(ge=1)] | Auto = AUTO
    # The plan sizes patch, batch and network for this device under this memory budget.
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when present at plan time
    memory_budget_gb: float = Field(8.0, gt=0)
    nproc_per_node: int = Field(1, ge=1)  # >1: the stage runs itself under torchrun (DDP)
    compile: bool = False  # torch.compile the network (needs a C++ compiler on CPU)
    lr: float = Field(gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_schedule: Literal["poly", "constant"] = "poly"
    num_threads: int = Field(0, ge=0)
    num_workers: int = Field(0, ge=0)  # loader worker processes; 0: augment in the training process
    channels_last: bool = True  # train in channels-last memory layout (faster convolutions)
    amp: bool = True
    val_every: int = Field(5, ge=1)
    # Optimiser steps per epoch; auto: one pass over the fold's training cases, at most
    # MAX_AUTO_ITERATIONS (nnU-Net's 250), so epoch time stops growing with the dataset.
    iterations_per_epoch: Annotated[int, Field(ge=1)] | Auto = AUTO
    # Training cases are held in memory while they fit this budget per process (GB, with the
    # foreground indices the patch sampler keeps); beyond it patches are read from the
    # memory-mapped cache on disk, so memory stays flat however many cases there are.
    cache_ram_gb: float = Field(4.0, ge=0)


    @field_validator("budget")
    @classmethod
    def _budget_is_duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value, "train.budget")
        return value


MAX_AUTO_ITERATIONS = 250
# `auto` keys that are not the plan's to fill: resolved where their inputs are known.
RUNTIME_AUTO = ("train.iterations_per_epoch",)


class EvaluateConfig(Section):
    sw_batch_size: int = Field(4, ge=1)
    sw_overlap: float = Field(0.5, ge=0, lt=1)
    tta: bool = True
    overlay_cases: int = Field(4, ge=0)
    hd95: bool = True
    # Try keep-largest-connected-component per class; keep it only where the paired evidence says
    # it helps (segflow.inference.postprocessing.RULE).
    postprocess: bool = True
    postprocess_min_gain: float = Field(0.005, ge=0, le=1)
    postprocess_max_p_value: float = Field(0.05, gt=0, le=1)
    postprocess_max_removed: float = Field(0.10, ge=0, le=1)


DiceFloor = Annotated[float, Field(ge=0, le=1)] | Literal["auto"]


class RegisterConfig(Section):
    # The mean Dice a model needs to be registered at all: one value, `auto` (above the dataset's
    # trivial baseline), or per dataset name with `default` for the others.
    min_mean_dice: DiceFloor | dict[str, DiceFloor] = "auto"
    registry_dir: Path = Path("registry")
    # Champion/challenger on the cases both models were evaluated on (segflow.registry.promotion).
    min_gain: float = Field(0.0, ge=0, le=1)
    max_p_value: float = Field(0.05, gt=0, le=1)
    min_paired_cases: int = Field(5, ge=1)
    export: list[Literal["torchscript", "onnx"]] = ["torchscript", "onnx"]

    def dice_floor(self, dataset: str) -> float | str:
        """min_mean_dice for `dataset` (a number or "auto")."""
        if isinstance(self.min_mean_dice, dict):
            return self.min_mean_dice.get(dataset, self.min_mean_dice.get("default", "auto"))
        return self.min_mean_dice


class Params(Section):
    """All of params.yaml. `validate` and `register` are reached as `validate_`/`register_`
    because pydantic reserves those names."""

    seed: int = Field(0, ge=0)  # numpy's generators take no negative seed
    data: DataConfig
    split: SplitConfig
    validate_: ValidateConfig = Field(alias="validate")
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    augment: AugmentConfig
    model: ModelConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    register_: RegisterConfig = Field(alias="register")

    def with_fold(self, fold: int) -> Params:
        """This params with `split.folds` narrowed to the one fold a per-fold stage runs."""
        return self.model_copy(update={"split": self.split.model_copy(update={"folds": [fold]})})

    def unresolved(self) -> list[str]:
        """The dotted keys still set to `auto` that the plan fills (data.layout is detected by ingest)."""
        dumped = self.model_dump(by_alias=True)
        return [f"{section}.{key}" for section, values in dumped.items() if isinstance(values, dict)
                for key, value in values.items()
                if value == AUTO and section in PLANNED_SECTIONS and f"{section}.{key}" not in RUNTIME_AUTO]

    @model_validator(mode="after")
    def _dims_agree(self) -> Params:
        for key in ("patch_size", "target_spacing"):
            value = getattr(self.preprocess, key)
            if value != AUTO and len(value) != self.model.spatial_dims:
                raise ValueError(f"preprocess.{key} has {len(value)} axes but model.spatial_dims is "
                                 f"{self.model.spatial_dims}")
        return self


UNION_TAGS = {"int", "float", "str", "bool"}  # pydantic names a union branch in the location


def _is_key(part: object) -> bool:
    """A params key or list index in an error location, not a union branch such as
    `constrained-int` or `literal['auto']`."""
    return isinstance(part, int) or (str(part).isidentifier() and str(part) not in UNION_TAGS)


def _describe(error: dict) -> str:
    where = ".".join(str(part).rstrip("_") for part in error["loc"] if _is_key(part))
    shown = "input" in error and error["type"] != "missing" and not isinstance(error["input"], dict)
    got = f" (got {error['input']!r})" if shown else ""
    return f"{where or '<top level>'}: {error['msg']}{got}"


# Keys that moved section, old -> new. Read from the old place for one release, with a warning.
MOVED_KEYS = {("augment", key): ("preprocess", key) for key in ("patch_size", "target_spacing", "normalisation")}


def moved_keys_in_place(raw: dict, source: str) -> dict:
    """A copy of `raw` with keys from before a move (`augment.patch_size`) put where they live now
    (`preprocess.patch_size`), each named in a FutureWarning; a key set in both places is an error."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for (old_section, key), (new_section, _) in MOVED_KEYS.items():
        if not isinstance(raw.get(old_section), dict) or key not in raw[old_section]:
            continue
        section = raw.get(new_section) or {}
        if not isinstance(section, dict) or key in section:
            raise ConfigError(f"{source}: {old_section}.{key} moved to {new_section}.{key}; set it there only")
        raw[new_section] = {**section, key: raw[old_section].pop(key)}
        warnings.warn(f"{source}: {old_section}.{key} is deprecated and will stop working in the next release; "
                      f"move it to {new_section}.{key} (dvc.yaml tracks it there)", FutureWarning, stacklevel=3)
    return raw


def parse_params(raw: object, source: str = PARAMS_FILE) -> Params:
    """Validate an already-loaded params mapping; errors name `source` and every bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    try:
        return Params.model_validate(moved_keys_in_place(raw, source))
    except ValidationError as exc:
        lines = "\n".join(f"  - {_describe(e)}" for e in exc.errors(include_url=False))
        raise ConfigError(f"{source} is not valid:\n{lines}") from None


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (run from the project root)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    params = parse_params(raw, str(path))
    if not params.split.held_out:  # here, not in SplitConfig: train@all narrows split.folds to [all]
        raise ConfigError(f"{path}: split.folds: fold all holds no case out, so nothing could evaluate it: list a "
                          "numbered fold beside it (e.g. [0, all]), whose out-of-fold scores estimate the model "
                          "trained on all")
    return params
