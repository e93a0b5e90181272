"""Dataset fingerprint + params.yaml -> the training plan (nnU-Net's experiment planner).

Every `auto` in params.yaml gets its value here, once, by a small named rule; explicit values
win and the dependent choices honour them (an explicit patch gets a batch sized for it, explicit
channels are what the memory estimate sees). The result is a frozen `Plan` stored as
artifacts/plan/plan.json and read back through `Plan.load`; `resolve_params` puts its values
into a copy of the params, so downstream stages never re-derive a choice.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segflow.config import AUTO, ConfigError, Params, parse_params
from segflow.data.preprocess import ChannelNormalisation, resampled_shape
from segflow.planning.memory import MemoryModel, training_memory_model
from segflow.planning.plan import Plan, SliceConfiguration

# Target spacing: a median axis more than 3x coarser than the finest is "anisotropic" and takes
# its 10th percentile, so the few finely sampled cases are not thrown away (nnU-Net).
ANISOTROPY_RATIO = 3.0
COARSE_AXIS_PERCENTILE = 10
# Topology: halve an axis while its bottleneck side stays >= 4 voxels, at most 5 times.
MIN_BOTTLENECK_SIDE = 4
MAX_LEVELS = 5
# Width of the first level, doubling per level up to 320 (nnU-Net's cap). CPU training is
# compute-bound, so half nnU-Net's 32 there (the tuned Hippocampus default [16, 32, 64, 128]).
BASE_WIDTH = {"cpu": 16, "cuda": 32}
MAX_WIDTH = 320
SWIN_FEATURE_SIZE = {"cpu": 24, "cuda": 48}  # SwinUNETR needs a multiple of 12
# 64³ (3D) or 512² (2D) voxels: beyond this one CPU epoch takes minutes per case.
CPU_MAX_PATCH_VOXELS = 2**18
# Batch 4 gives more updates per CPU-minute than 8 (README, Results).
CPU_BATCH_SIZE = 4
MIN_CUDA_BATCH_SIZE = 2
PATCH_CHECK_BATCH_SIZE = 2  # the patch must fit the budget at least at this batch
DATASET_SHARE_PER_BATCH = 0.05  # a batch sees at most 5% of the dataset's voxels (nnU-Net)
# Networks whose input must divide by a fixed factor: 4 poolings (BasicUNet), ViT patches of 16
# (UNETR), 5 halvings (SwinUNETR).
FIXED_DIVISOR = {"BasicUNet": 16, "BasicUNetPlusPlus": 16, "UNETR": 16, "SwinUNETR": 32}
SEGRESNET_BLOCKS_DOWN = (1, 2, 2, 4)  # MONAI's default
MAX_PATCH_STEPS = 200
FAR_OVER = 4.0  # a patch over 4x too large loses half its largest side per step, not one divisor step
MIN_PATCH_SIDE = 16  # shrinking stops here: smaller patches see too little context to learn from
# No case may exceed this many voxels at the target spacing: preprocess holds a whole case (and its
# resampled copy) in memory, 4 GiB per channel as float32 at this size. A whole-body CT at 0.8 mm
# (512x512x2000, 5.2e8 voxels) and the largest MSD cases (< 3e8) fit; a unit slip in
# preprocess.target_spacing (0.001 for 1 mm: 1e9 times the voxels) does not, by orders of magnitude.
MAX_RESAMPLED_CASE_VOXELS = 2**30
# "CT" starting a word, case-insensitive: "CT", "ct_arterial", "non-contrast CT", not "spectral".
CT_MODALITY = re.compile(r"(?<![a-z])ct", re.IGNORECASE)


# -- device -----------------------------------------------------------------------------------

def plan_device(requested: str, cuda_available: bool | None = None) -> tuple[str, str]:
    """train.device; `auto` is cuda when a GPU is visible at plan time."""
    if requested != AUTO:
        return requested, f"train.device is {requested}"
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    found = "a CUDA GPU is" if cuda_available else "no CUDA GPU is"
    return ("cuda" if cuda_available else "cpu"), f"train.device is auto and {found} visible at plan time"


# -- spacing and shape ------------------------------------------------------------------------

def plan_target_spacing(spacings: Sequence[Sequence[float]]) -> tuple[list[float], str]:
    """Median spacing per axis; a very coarse axis takes its 10th percentile instead (never finer
    than the other axes), as nnU-Net does for thick-slice data."""
    spacings = np.asarray(spacings, dtype=np.float64)
    target = np.median(spacings, axis=0)
    coarse = int(np.argmax(target))
    if target[coarse] / target.min() <= ANISOTROPY_RATIO:
        return [float(s) for s in target], "median spacing of the cases per axis"
    others = max(np.delete(target, coarse))
    target[coarse] = max(float(np.percentile(spacings[:, coarse], COARSE_AXIS_PERCENTILE)), others)
    return [float(s) for s in target], (
        f"median spacing per axis, but axis {coarse} is over {ANISOTROPY_RATIO:g}x coarser than the finest, "
        f"so it takes its {COARSE_AXIS_PERCENTILE}th percentile")


def check_resampled_sizes(fingerprint: dict, target: Sequence[float], why: str) -> None:
    """Refuse a target spacing that would blow the largest case up past MAX_RESAMPLED_CASE_VOXELS
    (`why` says where the target spacing came from)."""
    shapes, spacings = fingerprint["shapes"], fingerprint["spacings"]
    sizes = [math.prod(resampled_shape(shape, spacing, target))
             for shape, spacing in zip(shapes, spacings, strict=True)]
    largest = int(np.argmax(sizes))
    if sizes[largest] <= MAX_RESAMPLED_CASE_VOXELS:
        return
    case = (fingerprint.get("case_ids") or [f"#{i}" for i in range(len(sizes))])[largest]
    raise ConfigError(
        f"preprocess.target_spacing {list(target)} ({why}) would resample case {case} from shape {shapes[largest]} "
        f"at spacing {spacings[largest]} to {resampled_shape(shapes[largest], spacings[largest], target)}, "
        f"{sizes[largest]:.3g} voxels; at most {MAX_RESAMPLED_CASE_VOXELS:.3g} fit in memory "
        f"({MAX_RESAMPLED_CASE_VOXELS * 4 / 2**30:g} GiB per channel as float32). Check the unit (mm per voxel).")


def median_resampled_shape(shapes: Sequence[Sequence[int]], spacings: Sequence[Sequence[float]],
                           target: Sequence[float]) -> list[int]:
    resampled = [resampled_shape(shape, spacing, target) for shape, spacing in zip(shapes, spacings, strict=True)]
    return [int(round(v)) for v in np.median(np.asarray(resampled), axis=0)]


def dataset_voxels(shapes: Sequence[Sequence[int]], spacings: Sequence[Sequence[float]],
                   target: Sequence[float]) -> int:
    """All voxels of the dataset at the target spacing."""
    return int(sum(math.prod(resampled_shape(shape, spacing, target))
                   for shape, spacing in zip(shapes, spacings, strict=True)))


# -- normalisation ----------------------------------------------------------------------------

def channel_scheme(modality: str, requested: str) -> str:
    if requested != AUTO:
        return requested
    return "ct" if CT_MODALITY.search(modality) else "zscore"


def ct_normalisation(statistics: dict | None, channel: int) -> ChannelNormalisation:
    if not statistics:
        raise ConfigError(f"preprocess.normalisation: ct needs foreground intensities of channel {channel}, "
                          "but no case has a voxel labelled > 0")
    return ChannelNormalisation(scheme="ct", clip=(statistics["percentile_00_5"], statistics["percentile_99_5"]),
                                mean=statistics["mean"], std=statistics["std"])


def plan_normalisation(fingerprint: dict, requested: str) -> tuple[list[ChannelNormalisation], str]:
    """Per channel: CT (fixed physical units) clips to the foreground's 0.5-99.5 percentiles and
    uses the dataset's foreground z-score; other modalities (arbitrary scanner units) are
    z-scored per case. An explicit preprocess.normalisation applies to every channel."""
    schemes, described = [], []
    for channel in range(fingerprint["n_channels"]):
        modality = fingerprint["modality"].get(str(channel), "")
        scheme = channel_scheme(modality, requested)
        schemes.append(ct_normalisation(fingerprint["foreground_intensity"].get(str(channel)), channel)
                       if scheme == "ct" else ChannelNormalisation(scheme="zscore"))
        described.append(f"channel {channel} ({modality or 'unnamed'}): {scheme}")
    why = "preprocess.normalisation is explicit" if requested != AUTO else "auto: ct for CT, per-case zscore otherwise"
    return schemes, f"{'; '.join(described)} ({why})"


# -- topology ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Topology:
    """Encoder levels: `strides[level][axis]` is 2 where that axis halves; `kernels[resolution][axis]`
    is the convolution size there (1 on an axis still much coarser than the others)."""

    strides: list[list[int]]
    kernels: list[list[int]]


def level_strides(sides: list[float], spacings: list[float], forced: bool) -> list[int]:
    """Halve each axis that keeps >= MIN_BOTTLENECK_SIDE voxels and is at most twice as coarse as
    the finest axis (a thick-slice axis waits for the others to catch up); `forced`: any axis
    that can halve at all."""
    finest = min(spacings)
    level = [2 if side / 2 >= MIN_BOTTLENECK_SIDE and spacing <= 2 * finest else 1
             for side, spacing in zip(sides, spacings, strict=True)]
    if forced and 2 not in level:
        level = [2 if side >= 2 else 1 for side in sides]
    return level


def plan_topology(patch_size: Sequence[int], spacing: Sequence[float], levels: int | None = None) -> Topology:
    """nnU-Net's pooling plan for `patch_size` at `spacing`: levels until no axis can halve, at
    most MAX_LEVELS, at least one; `levels` (from explicit channels/strides) fixes the count."""
    sides, spacings = [float(s) for s in patch_size], [float(s) for s in spacing]
    strides, resolutions = [], [list(spacings)]
    while len(strides) < (levels if levels is not None else MAX_LEVELS):
        level = level_strides(sides, spacings, forced=levels is not None or not strides)
        if 2 not in level and levels is None:
            break
        strides.append(level)
        sides = [side / s for side, s in zip(sides, level, strict=True)]
        spacings = [sp * s for sp, s in zip(spacings, level, strict=True)]
        resolutions.append(list(spacings))
    kernels = [[3 if sp <= 2 * min(res) else 1 for sp in res] for res in resolutions]
    return Topology(strides, kernels)


def compact(per_axis: list[int]) -> int | list[int]:
    """2 rather than [2, 2, 2]: MONAI takes either; params.yaml reads better."""
    return per_axis[0] if len(set(per_axis)) == 1 else list(per_axis)


def plan_widths(n_levels: int, device: str) -> list[int]:
    return [min(BASE_WIDTH[device] * 2**level, MAX_WIDTH) for level in range(n_levels)]


def stride_product(strides: Sequence, spatial_dims: int) -> list[int]:
    """Per-axis product of MONAI strides given as ints or per-axis sequences."""
    per_axis = [[s] * spatial_dims if isinstance(s, int) else list(s) for s in strides]
    return [math.prod(level[axis] for level in per_axis) for axis in range(spatial_dims)]


# -- network arguments ------------------------------------------------------------------------

@dataclass(frozen=True)
class NetworkContext:
    """What the network rules need besides the patch: params' model args, spacing, device."""

    name: str
    args: dict  # params.model constructor arguments, possibly with "auto"
    spacing: list[float]
    device: str

    def explicit(self, key: str):
        value = self.args.get(key, AUTO)
        return None if value == AUTO else value


def unet_args(ctx: NetworkContext, patch: list[int]) -> dict:
    """UNet / AttentionUnet: widths doubling per level, nnU-Net's per-axis strides."""
    strides, channels = ctx.explicit("strides"), ctx.explicit("channels")
    levels = len(strides) if strides else (len(channels) - 1 if channels else None)
    topology = plan_topology(patch, ctx.spacing, levels)
    strides = strides or [compact(level) for level in topology.strides]
    return {"channels": plan_widths(len(strides) + 1, ctx.device), "strides": strides}


def dynunet_args(ctx: NetworkContext, patch: list[int]) -> dict:
    """DynUNet: nnU-Net's own layout (first stride 1, kernel 1 on a still-coarse axis)."""
    explicit = next((ctx.explicit(k) for k in ("strides", "kernel_size", "filters") if ctx.explicit(k)), None)
    topology = plan_topology(patch, ctx.spacing, len(explicit) - 1 if explicit else None)
    strides = ctx.explicit("strides") or [1, *(compact(level) for level in topology.strides)]
    return {"kernel_size": [compact(k) for k in topology.kernels], "strides": strides,
            "upsample_kernel_size": strides[1:], "filters": plan_widths(len(strides), ctx.device)}


def basic_unet_args(ctx: NetworkContext, patch: list[int]) -> dict:
    base = BASE_WIDTH[ctx.device]
    return {"features": [base, base, 2 * base, 4 * base, 8 * base, base]}


def segresnet_args(ctx: NetworkContext, patch: list[int]) -> dict:
    return {"init_filters": BASE_WIDTH[ctx.device]}


def unetr_args(ctx: NetworkContext, patch: list[int]) -> dict:
    return {"img_size": list(patch), "feature_size": BASE_WIDTH[ctx.device]}


def swin_unetr_args(ctx: NetworkContext, patch: list[int]) -> dict:
    """MONAI 1.6's SwinUNETR takes no img_size: any multiple of 32 goes."""
    return {"feature_size": SWIN_FEATURE_SIZE[ctx.device]}


NETWORK_RULES = {"UNet": unet_args, "AttentionUnet": unet_args, "DynUNet": dynunet_args,
                 "BasicUNet": basic_unet_args, "BasicUNetPlusPlus": basic_unet_args,
                 "SegResNet": segresnet_args, "UNETR": unetr_args, "SwinUNETR": swin_unetr_args}


def required_arguments(name: str) -> set[str]:
    """Constructor arguments of network `name` without a default."""
    from segflow.models import factory

    return factory.required_arguments(factory.network_class(name))


def complete_network_args(ctx: NetworkContext, patch: list[int]) -> dict:
    """params' model args with every `auto` (and every absent required argument) planned."""
    wanted = {k for k, v in ctx.args.items() if v == AUTO} | (required_arguments(ctx.name) - set(ctx.args))
    planned = NETWORK_RULES.get(ctx.name, lambda *_: {})(ctx, patch)
    unplanned = sorted(wanted - set(planned))
    if unplanned:
        raise ConfigError(f"model.{unplanned[0]}: the planner has no value for {ctx.name}; set it in params.yaml")
    return {**ctx.args, **{key: planned[key] for key in wanted}}


def network_divisor(name: str, args: dict, spatial_dims: int) -> list[int]:
    """What every patch side must divide by for network `name` built from `args`."""
    if name in ("UNet", "AttentionUnet", "DynUNet"):
        return stride_product(args["strides"], spatial_dims)
    if name == "SegResNet":
        return [2 ** (len(args.get("blocks_down", SEGRESNET_BLOCKS_DOWN)) - 1)] * spatial_dims
    return [FIXED_DIVISOR.get(name, 1)] * spatial_dims


# -- patch --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Budget:
    """Where the patch must fit: the device and its memory budget."""

    device: str
    memory_gb: float
    amp: bool


def round_up(shape: Sequence[int], divisor: Sequence[int]) -> list[int]:
    return [int(math.ceil(side / d) * d) for side, d in zip(shape, divisor, strict=True)]


def fit_network(ctx: NetworkContext, shape: list[int]) -> tuple[list[int], dict]:
    """Round `shape` up to the divisor of the network planned for it, until they agree (a larger
    patch may allow one more level, and so a larger divisor)."""
    for _ in range(MAX_LEVELS + 2):
        args = complete_network_args(ctx, shape)
        rounded = round_up(shape, network_divisor(ctx.name, args, len(shape)))
        if rounded == shape:
            break
        shape = rounded
    return shape, complete_network_args(ctx, shape)


def shrink_largest_axis(patch: list[int], divisor: list[int]) -> list[int]:
    """One divisor step off the largest side that can lose one and keep MIN_PATCH_SIDE (unchanged
    when none can)."""
    shrinkable = [axis for axis, (side, d) in enumerate(zip(patch, divisor, strict=True))
                  if side - d >= max(MIN_PATCH_SIDE, d)]
    if not shrinkable:
        return patch
    axis = max(shrinkable, key=lambda a: patch[a])
    return [side - divisor[a] if a == axis else side for a, side in enumerate(patch)]


def overshoot(ctx: NetworkContext, patch: list[int], args: dict, budget: Budget) -> float:
    """How many times too large `patch` is (<= 1: it fits): against the CPU voxel cap first (it is
    free), then against the memory budget at batch 2."""
    voxels = math.prod(patch)
    if budget.device == "cpu" and voxels > CPU_MAX_PATCH_VOXELS:
        return voxels / CPU_MAX_PATCH_VOXELS
    memory = training_memory_model(ctx.name, args, patch, budget.amp)
    return memory.total_gb(PATCH_CHECK_BATCH_SIZE) / budget.memory_gb


def halve_largest_axis(patch: list[int], divisor: list[int]) -> list[int]:
    """The largest side halved (down to a multiple of its divisor, keeping MIN_PATCH_SIDE);
    unchanged when it cannot be."""
    axis = max(range(len(patch)), key=patch.__getitem__)
    half = patch[axis] // 2 // divisor[axis] * divisor[axis]
    if half < max(MIN_PATCH_SIDE, divisor[axis]):
        return patch
    return [half if a == axis else side for a, side in enumerate(patch)]


def smaller_patch(patch: list[int], divisor: list[int], over: float) -> list[int]:
    """The next patch to try: half the largest side while the patch is over FAR_OVER times too
    large (a whole large scan would take thousands of single steps), else one divisor step off it."""
    if over > FAR_OVER and (halved := halve_largest_axis(patch, divisor)) != patch:
        return halved
    return shrink_largest_axis(patch, divisor)


def plan_patch_size(ctx: NetworkContext, median_shape: list[int], budget: Budget) -> tuple[list[int], dict, str]:
    """The median shape rounded up to the network's divisor, its largest side shrunk while it
    does not fit; returns the patch, the network args planned for it and why."""
    patch, args = fit_network(ctx, list(median_shape))
    shrunk = False
    for _ in range(MAX_PATCH_STEPS):
        over = overshoot(ctx, patch, args, budget)
        if over <= 1:
            break
        smaller = smaller_patch(patch, network_divisor(ctx.name, args, len(patch)), over)
        if smaller == patch:
            raise ConfigError(f"train.memory_budget_gb: {budget.memory_gb:g} GB is too small for {ctx.name} on "
                              f"{budget.device}, even with patch {patch} at batch {PATCH_CHECK_BATCH_SIZE}")
        patch, args = fit_network(ctx, smaller)
        shrunk = True
    else:
        raise ConfigError(f"preprocess.patch_size: the median shape {median_shape} at preprocess.target_spacing "
                          f"{ctx.spacing} is still {patch} after {MAX_PATCH_STEPS} shrinking steps, over "
                          f"train.memory_budget_gb ({budget.memory_gb:g} GB); check preprocess.target_spacing or "
                          "set preprocess.patch_size")
    divisor = network_divisor(ctx.name, args, len(patch))
    cap = f"at most {CPU_MAX_PATCH_VOXELS} voxels and " if budget.device == "cpu" else ""
    fitted = f"{cap}{budget.memory_gb:g} GB at batch {PATCH_CHECK_BATCH_SIZE}"
    limit = f", then its largest side shrunk to fit {fitted}" if shrunk else ""
    return patch, args, (f"median shape {median_shape} at target spacing rounded up to a multiple of {divisor} "
                         f"({ctx.name}'s divisor){limit}")


def explicit_patch_size(params: Params) -> list[int] | None:
    """preprocess.patch_size, or UNETR's explicit img_size (the two must agree)."""
    if params.preprocess.patch_size != AUTO:
        return list(params.preprocess.patch_size)
    img_size = params.model.network_args().get("img_size", AUTO) if params.model.name == "UNETR" else AUTO
    if img_size == AUTO:
        return None
    return [img_size] * params.model.spatial_dims if isinstance(img_size, int) else list(img_size)


def describe_explicit_patch(ctx: NetworkContext, patch: list[int], args: dict) -> str:
    divisor = network_divisor(ctx.name, args, len(patch))
    fits_network = all(side % d == 0 for side, d in zip(patch, divisor, strict=True))
    return "preprocess.patch_size is explicit" + ("" if fits_network else f" (not a multiple of {divisor}, "
                                                                        f"{ctx.name}'s divisor)")


# -- batch --------------------------------------------------------------------------------------

def plan_batch_size(memory: MemoryModel, budget: Budget, patch: list[int], total_voxels: int) -> tuple[int, str]:
    """cuda: the largest batch within the budget, at most 5% of the dataset per batch, at least 2.
    cpu: 4 (more updates per CPU-minute than larger batches), lowered to fit the budget."""
    if budget.device == "cpu":
        batch = CPU_BATCH_SIZE
        while batch > 1 and memory.total_gb(batch) > budget.memory_gb:
            batch -= 1
        return batch, f"CPU default {CPU_BATCH_SIZE} (more updates per CPU-minute than larger batches)" + (
            f", lowered to fit {budget.memory_gb:g} GB" if batch < CPU_BATCH_SIZE else "")
    fitting = memory.largest_batch(budget.memory_gb)
    share_cap = int(DATASET_SHARE_PER_BATCH * total_voxels // math.prod(patch))
    batch = max(min(fitting, share_cap), MIN_CUDA_BATCH_SIZE)
    return batch, (f"largest batch within {budget.memory_gb:g} GB is {fitting}, and 5% of the dataset's voxels "
                   f"allow {share_cap} patches per batch; at least {MIN_CUDA_BATCH_SIZE}")


# -- the plan -----------------------------------------------------------------------------------

def describe_network(ctx: NetworkContext, args: dict) -> str:
    """Which constructor arguments were planned, and by what rule."""
    planned = sorted(key for key in args if ctx.args.get(key, AUTO) == AUTO)
    if not planned:
        return "every constructor argument is explicit in params.yaml"
    shown = ", ".join(f"{key}={args[key]}" for key in planned)
    return (f"planned {shown} (width base {BASE_WIDTH[ctx.device]} on {ctx.device}, doubling per level; "
            f"an axis halves while it keeps >= {MIN_BOTTLENECK_SIDE} voxels, at most {MAX_LEVELS} levels)")


def describe_channels(params: Params, args: dict) -> str:
    """Where in_channels and out_channels come from."""
    told = [f"{key}={args[key]} from the dataset's {what}" for key, what in
            (("in_channels", "image channels"), ("out_channels", "classes (ignore label left out)"))
            if getattr(params.model, key) == AUTO]
    return "; ".join(told) or "model.in_channels and model.out_channels are explicit"


def network_memory(ctx: NetworkContext, args: dict, patch: list[int], budget: Budget, why_patch: str) -> MemoryModel:
    """The memory model of the planned network; a patch it cannot run on is a ConfigError."""
    try:
        return training_memory_model(ctx.name, args, patch, budget.amp)
    except ValueError as exc:
        raise ConfigError(f"preprocess.patch_size {patch} ({why_patch}): {exc}") from None


def check_fingerprint(fingerprint: dict, params: Params) -> None:
    """The network's dimensions and channels must match the data it is planned for."""
    if fingerprint.get("spatial_dims") != params.model.spatial_dims:
        raise ConfigError(f"model.spatial_dims is {params.model.spatial_dims} but the fingerprint is "
                          f"{fingerprint.get('spatial_dims')}D; rerun the plan stage")
    if params.model.in_channels not in (AUTO, fingerprint["n_channels"]):
        raise ConfigError(f"model.in_channels is {params.model.in_channels} but the cases have "
                          f"{fingerprint['n_channels']} channel(s); set it to auto or {fingerprint['n_channels']}")
    check_classes(fingerprint.get("labels"), params, fingerprint.get("regions"))


def output_channels(labels: dict[str, str], regions: dict | None = None) -> int:
    """One output per class (softmax), or per region (sigmoid: labels name background first)."""
    return len(labels) - 1 if regions else len(labels)


def check_classes(labels: dict[str, str] | None, params: Params, regions: dict | None = None) -> None:
    """model.out_channels must be the number of declared classes (one output per class) or
    regions, caught here rather than when training starts."""
    if labels is None or params.model.out_channels in (AUTO, output_channels(labels, regions)):
        return
    expected = output_channels(labels, regions)
    source = "data.labels" if params.data.layout == "folders2d" else "dataset.json labels"
    what = "regions" if regions else "classes"
    raise ConfigError(f"model.out_channels is {params.model.out_channels} but the {source} declare "
                      f"{expected} {what} ({labels}); set model.out_channels to auto or {expected}")


def dataset_channels(fingerprint: dict, params: Params) -> dict:
    """The network's constructor arguments with in/out channels taken from the dataset where auto."""
    args = params.model.network_args()
    if args.get("in_channels") == AUTO:
        args["in_channels"] = int(fingerprint["n_channels"])
    if args.get("out_channels") == AUTO:
        args["out_channels"] = output_channels(fingerprint["labels"], fingerprint.get("regions"))
    return args


def plan_spacing(fingerprint: dict, params: Params) -> tuple[list[float], str]:
    """preprocess.target_spacing: explicit, or planned; either way no case may become too large."""
    if params.preprocess.target_spacing != AUTO:
        spacing, why = list(params.preprocess.target_spacing), "preprocess.target_spacing is explicit"
    else:
        spacing, why = plan_target_spacing(fingerprint["spacings"])
    check_resampled_sizes(fingerprint, spacing, why)
    return spacing, why


def check_memory(memory: MemoryModel, batch: int, patch: list[int], budget: Budget) -> None:
    """Refuse a plan whose estimated training memory exceeds the budget (an explicit patch or
    batch too large for it): training would run out of memory, or swap for days."""
    needed = memory.total_gb(batch)
    if needed > budget.memory_gb:
        raise ConfigError(f"train.memory_budget_gb: patch {patch} at batch {batch} needs an estimated "
                          f"{needed:.3g} GB, over the budget of {budget.memory_gb:g} GB; lower "
                          "preprocess.patch_size or train.batch_size, or raise train.memory_budget_gb")


def make_plan(fingerprint: dict, params: Params, cuda_available: bool | None = None) -> Plan:
    """Every planned setting from the fingerprint, params (explicit values win) and the device."""
    check_fingerprint(fingerprint, params)
    reasons = {}
    device, reasons["device"] = plan_device(params.train.device, cuda_available)
    spacing, reasons["target_spacing"] = plan_spacing(fingerprint, params)
    median_shape = median_resampled_shape(fingerprint["shapes"], fingerprint["spacings"], spacing)
    normalisation, reasons["normalisation"] = plan_normalisation(fingerprint, params.preprocess.normalisation)
    budget = Budget(device, params.train.memory_budget_gb, params.train.amp and device == "cuda")
    ctx = NetworkContext(params.model.name, dataset_channels(fingerprint, params), spacing, device)
    patch = explicit_patch_size(params)
    if patch is None:
        patch, args, reasons["patch_size"] = plan_patch_size(ctx, median_shape, budget)
    else:
        args = complete_network_args(ctx, patch)
        reasons["patch_size"] = describe_explicit_patch(ctx, patch, args)
    reasons["network_args"] = f"{describe_network(ctx, args)}; {describe_channels(params, args)}"
    memory = network_memory(ctx, args, patch, budget, reasons["patch_size"])
    if params.train.batch_size != AUTO:
        batch, reasons["batch_size"] = params.train.batch_size, "train.batch_size is explicit"
    else:
        total = dataset_voxels(fingerprint["shapes"], fingerprint["spacings"], spacing)
        batch, reasons["batch_size"] = plan_batch_size(memory, budget, patch, total)
    check_memory(memory, batch, patch, budget)
    return Plan(device=device, memory_budget_gb=budget.memory_gb, spatial_dims=params.model.spatial_dims,
                target_spacing=spacing, median_shape=median_shape, normalisation=normalisation, patch_size=patch,
                batch_size=batch, network=ctx.name, network_args=args,
                estimated_memory_gb=round(memory.total_gb(batch), 3), reasons=reasons)


# -- the 2d configuration of 3D data (planning.configurations) ---------------------------------------

def slice_axis(target_spacing: list[float]) -> int:
    """The axis slices are cut across: the coarsest (thick-slice data keeps its in-plane
    resolution, as nnU-Net's 2d does); the first on a tie."""
    return int(np.argmax(target_spacing))


def sliced_fingerprint(fingerprint: dict, axis: int) -> dict:
    """The fingerprint as a 2D dataset of the in-plane axes (shapes and spacings without `axis`)."""
    def drop(values):
        return [[v for i, v in enumerate(case) if i != axis] for case in values]

    return {**fingerprint, "spatial_dims": 2, "shapes": drop(fingerprint["shapes"]),
            "spacings": drop(fingerprint["spacings"])}


def plan_slice_configuration(fingerprint: dict, params: Params, plan: Plan) -> SliceConfiguration:
    """The `2d` configuration of 3D data: the planner's rules on the sliced fingerprint, at the 3D
    plan's in-plane spacing (both read the same preprocessed cache), with a batch of as many slices
    as the 3D batch has voxels (`slice_batch_size`)."""
    axis = slice_axis(plan.target_spacing)
    raw = params.model_dump(by_alias=True)
    raw["model"] = {**raw["model"], "spatial_dims": 2}
    raw["preprocess"] = {**raw["preprocess"], "patch_size": AUTO,
                         "target_spacing": [s for i, s in enumerate(plan.target_spacing) if i != axis]}
    planned = make_plan(sliced_fingerprint(fingerprint, axis), parse_params(raw, source="params.yaml (2d)"),
                        cuda_available=plan.device == "cuda")
    reasons = {k: v for k, v in planned.reasons.items() if k != "target_spacing"}
    batch, memory = planned.batch_size, planned.estimated_memory_gb
    if params.train.batch_size == AUTO:
        total = dataset_voxels(fingerprint["shapes"], fingerprint["spacings"], plan.target_spacing)
        batch, reasons["batch_size"] = slice_batch_size(plan, planned, total)
        memory = round(memory * batch / planned.batch_size, 3)
    return SliceConfiguration(slice_axis=axis, patch_size=planned.patch_size, batch_size=batch,
                              network_args=planned.network_args, estimated_memory_gb=memory, reasons=reasons)


def slice_batch_size(plan: Plan, sliced: Plan, total_voxels: int) -> tuple[int, str]:
    """Slices per batch: as many voxels per step as the 3D configuration's batch, so both learn from
    the same voxels per update and an epoch of either is the same work on the data; within the
    memory budget (scaled from the planned batch, an overestimate: the weights do not grow) and at
    most 5% of the dataset's voxels (nnU-Net)."""
    matched = max(1, round(plan.batch_size * math.prod(plan.patch_size) / math.prod(sliced.patch_size)))
    memory_cap = max(1, int(plan.memory_budget_gb * sliced.batch_size / sliced.estimated_memory_gb))
    share_cap = max(1, int(DATASET_SHARE_PER_BATCH * total_voxels // math.prod(sliced.patch_size)))
    batch = max(1, min(matched, memory_cap, share_cap))
    return batch, (f"{matched} slices carry the voxels of the 3d batch ({plan.batch_size} x {plan.patch_size}); "
                   f"the memory budget allows {memory_cap}, 5% of the dataset {share_cap}")
