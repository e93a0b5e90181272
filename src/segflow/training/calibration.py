"""What an epoch costs on the planned device, measured at plan time, and the budget plan from it.

A few optimiser steps of the planned network on a synthetic batch of the planned patch and batch
size, through the trainer's own loop; a few batches of the trainer's own loader (its patch
sampling and augmentation) over a few of the fold's cached cases; and one validation pass over a
synthetic case of the median shape: what `budget.decide` needs. Measured, not modelled, so the plan fits the machine it runs
on; written into plan.json, so the training that follows is the same for a given plan.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

from segflow.config import AUTO, Params
from segflow.planning.budget import ConfigurationCost, decide, parse_budget
from segflow.planning.plan import BudgetPlan, Plan, SliceConfiguration, TrainingPlan

WARMUP_STEPS = 2  # oneDNN picks its kernels on the first steps
# Each step and batch is timed on its own and the median kept: one slow step (another process, the
# host) would otherwise be multiplied by every step of every epoch.
TIMED_STEPS = 9
# The loader's cost per batch is timed on real cached cases: augmentation of a 2d configuration's
# 160 one-slice samples costs more than its network's step, and depends on the data.
LOADING_CASES = 4
WARMUP_BATCHES = 1  # the first batch seeds the transforms' random states (loader.Reseeder)
TIMED_BATCHES = 5

LoadingTimer = Callable[[Params], float]  # params (a configuration's) -> loader seconds per batch


def synthetic_batch(params: Params, batch: int, shape: list[int], n_labels: int):
    import torch

    generator = torch.Generator().manual_seed(0)
    channels = params.model.network_args()["in_channels"]
    return {"image": torch.randn(batch, channels, *shape, generator=generator),
            "label": torch.randint(0, n_labels, (batch, 1, *shape), generator=generator)}


def loading_timer(paths, train_ids: list[str], ignore_label: int | None) -> LoadingTimer:
    """Times the trainer's loader (`loader.fold_loader`) for a configuration's params over the
    first LOADING_CASES of the fold's training cases, held or streamed as training will."""

    def seconds_per_batch(params: Params) -> float:
        from segflow.data.cache import PreprocessedCache
        from segflow.training.distributed import training_device
        from segflow.training.loader import fits_in_memory, fold_loader

        cache = PreprocessedCache(paths.preprocessed)
        in_memory = fits_in_memory(cache, train_ids, params.train.cache_ram_gb)
        batches = iter(fold_loader(params, cache, train_ids[:LOADING_CASES], ignore_label,
                                   training_device(params.train.device), in_memory,
                                   iterations=WARMUP_BATCHES + TIMED_BATCHES))
        for _ in range(WARMUP_BATCHES):
            next(batches)
        return median_seconds(lambda: next(batches), TIMED_BATCHES)

    return seconds_per_batch


def measure_cost(params: Params, name: str, n_train: int, n_val: int, val_shape: list[int], n_labels: int,
                 load_s: float, ignore_label: int | None = None, regions=None) -> ConfigurationCost:
    """One model's cost per epoch for `params` (plan values in), timed on its training device;
    `load_s` is the loader's seconds per batch (`loading_timer`). With train.num_workers 0 the
    loader runs between the steps; with workers it overlaps them and the slower of the two sets
    the pace."""
    import torch

    from segflow.models.factory import build_network, network_dims
    from segflow.models.losses import build_loss
    from segflow.training import distributed as D
    from segflow.training import loop
    from segflow.training.distributed import training_device
    from segflow.training.loader import epoch_iterations

    cfg, patch = params.train, list(params.preprocess.patch_size)
    torch.set_num_threads(cfg.num_threads or D.cpu_threads_per_process())
    device = training_device(cfg.device)
    amp = cfg.amp and device.type == "cuda"
    torch.manual_seed(0)  # timing only: any weights do
    layout = loop.memory_format(cfg.channels_last, network_dims(params.model.network_args()))
    net = build_network(params.model.name, params.model.network_args()).to(device, memory_format=layout)
    loss_fn = build_loss(params.model, ignore_label, regions)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)  # its step costs the same for any lr
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    batch = synthetic_batch(params, cfg.batch_size, patch, n_labels)
    loop.train_epoch(net, [batch] * WARMUP_STEPS, loss_fn, optimizer, scaler, device, amp)
    step_s = median_seconds(lambda: loop.train_epoch(net, [batch], loss_fn, optimizer, scaler, device, amp),
                            TIMED_STEPS, device)
    case = synthetic_batch(params, 1, val_shape, n_labels)
    item = {"image": case["image"][0].numpy(), "label": case["label"][0].numpy()}
    outputs = params.model.network_args()["out_channels"]
    loop.validate(net, [item], patch, outputs, amp, ignore_label, regions)  # its first pass picks kernels
    case_s = timed(lambda: loop.validate(net, [item], patch, outputs, amp, ignore_label, regions), device)
    iterations = epoch_iterations(cfg.iterations_per_epoch, n_train, cfg.batch_size, cfg.nproc_per_node)
    per_step = step_s + load_s if cfg.num_workers == 0 else max(step_s, load_s)
    return ConfigurationCost(name=name, epoch_s=round(iterations * per_step, 3), validation_s=round(n_val * case_s, 3),
                             step_s=round(step_s, 4), load_s=round(load_s, 4))


def timed(work, device=None) -> float:
    import torch

    start = time.perf_counter()
    work()
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def median_seconds(work, times: int, device=None) -> float:
    """The median wall-clock of `times` calls of `work`."""
    return statistics.median(timed(work, device) for _ in range(times))


def plan_budget(params: Params, costs: list[ConfigurationCost], device: str) -> BudgetPlan:
    """The budget's decision for `costs` (the native configuration first)."""
    cfg = params.train
    budget_s = parse_budget(cfg.budget)
    decision = decide(budget_s, costs, len(params.split.folds), cfg.val_every, cfg.budget_min_epochs,
                      cfg.budget_converged_epochs, all_folds=params.split.n_folds)
    budget = BudgetPlan(budget=str(cfg.budget), budget_minutes=round(budget_s / 60, 2), epochs=decision.epochs,
                        folds=list(params.split.folds), configurations=decision.configurations,
                        costs={c.name: {"epoch_s": c.epoch_s, "validation_s": c.validation_s, "step_s": c.step_s,
                                        "load_s": c.load_s} for c in costs},
                        predicted_minutes={k: round(v / 60, 2) for k, v in decision.predicted_seconds.items()},
                        predicted_total_minutes=round(decision.predicted_total_s / 60, 2),
                        measured_on=device, reasons=decision.reasons)
    return budget


def describe_budget(budget: BudgetPlan) -> list[str]:
    """The plan's budget lines for the console and the results page."""
    lines = [f"train.budget {budget.budget}: {budget.epochs} epochs per model, configurations "
             f"{budget.configurations}, folds {budget.folds}; predicted "
             f"{budget.predicted_total_minutes:.1f} min (measured on {budget.measured_on})"]
    return lines + [f"  {key}: {reason}" for key, reason in budget.reasons.items()]


def training_plan(plan: Plan, params: Params, fingerprint: dict, n_train: int, n_val: int, n_labels: int,
                  time_loading: LoadingTimer, ignore_label: int | None = None, regions=None) -> TrainingPlan:
    """train.budget's decision (none without a budget). For 3D data the `2d` configuration is
    planned and timed too, and the budget decides whether it trains."""
    if params.train.budget is None:
        return TrainingPlan()
    from monai.data import set_track_meta

    set_track_meta(False)  # as the Trainer runs: MONAI's metadata tracking doubles the loader's time
    from segflow.planning.configurations import SLICE, configuration_params, native_name
    from segflow.planning.plan import resolve_params
    from segflow.planning.planner import plan_slice_configuration

    resolved = resolve_params(params, plan)
    if resolved.train.batch_size == AUTO:  # never: the plan fills it; guards a schema change
        raise ValueError("train.batch_size is unresolved")
    slices: SliceConfiguration | None = None
    if plan.spatial_dims == 3:
        from segflow.training.loader import epoch_iterations

        cfg = resolved.train
        steps = epoch_iterations(cfg.iterations_per_epoch, n_train, cfg.batch_size, cfg.nproc_per_node)
        slices = plan_slice_configuration(fingerprint, params, plan).model_copy(update={"iterations_per_epoch": steps})
    candidates = TrainingPlan(slice_configuration=slices)

    def cost(name: str) -> ConfigurationCost:
        configured = configuration_params(resolved, plan, candidates, name)
        return measure_cost(configured, name, n_train, n_val, plan.median_shape, n_labels, time_loading(configured),
                            ignore_label, regions)

    native = cost(native_name(plan.spatial_dims))
    plan_budget(params, [native], "")  # a native configuration the budget cannot train is refused before
    costs = [native] + ([cost(SLICE)] if slices else [])  # the 2d one is timed (as long again)
    budget = plan_budget(params, costs, f"{plan.device}, {threads_used()} threads")
    return TrainingPlan(budget=budget, slice_configuration=slices)


def threads_used() -> int:
    import torch

    return torch.get_num_threads()
