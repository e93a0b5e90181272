"""train.budget -> the training a wall-clock budget buys (pure rules; `calibration` measures).

nnU-Net trains every model for a fixed 1000 epochs; here the plan sizes the run to the minutes the
user gives: epochs per model and which configurations, each with its reason and the minutes it is
predicted to take. The decision is written into plan.json before training starts and training
follows it, so the same plan gives the same model. Folds are `split.folds` (DVC's `train@k`
stages are fixed before the plan runs): the budget is shared among them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from segflow.config import ConfigError, parse_duration

MAX_EPOCHS = 1000  # nnU-Net's fixed budget: beyond it a model has long converged


def parse_budget(text: str) -> float:
    """Seconds of train.budget (`20m`, `8h`, `1h30m`, `90s`)."""
    return parse_duration(text, "train.budget")


def describe_minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


@dataclass(frozen=True)
class ConfigurationCost:
    """What training one model (a configuration on one fold) costs, as measured by the plan."""

    name: str
    epoch_s: float  # the optimiser steps of one epoch, with the loader's batches
    validation_s: float  # one validation pass over the fold's validation cases
    startup_s: float = 0.0  # loading the fold's cases and building the model, once per model
    step_s: float = 0.0  # what epoch_s was made of, per step: the network's step and
    load_s: float = 0.0  # the loader's batch (the plan records both)

    def seconds(self, epochs: int, val_every: int) -> float:
        return self.startup_s + epochs * self.epoch_s + validations(epochs, val_every) * self.validation_s


def validations(epochs: int, val_every: int) -> int:
    """How many epochs validate: every `val_every`-th and the last (Trainer.validate)."""
    return epochs // val_every + (1 if epochs % val_every else 0)


def run_seconds(costs: list[ConfigurationCost], epochs: int, n_folds: int, val_every: int) -> float:
    """Predicted wall-clock of training every configuration on every fold for `epochs` epochs."""
    return n_folds * sum(cost.seconds(epochs, val_every) for cost in costs)


def affordable_epochs(budget_s: float, costs: list[ConfigurationCost], n_folds: int, val_every: int,
                      max_epochs: int = MAX_EPOCHS) -> int:
    """The most epochs (at most `max_epochs`) every model can train within the budget; 0 if none."""
    per_epoch = n_folds * sum(c.epoch_s + c.validation_s / val_every for c in costs)
    guess = min(max_epochs, int(budget_s / per_epoch) + 1) if per_epoch > 0 else max_epochs
    while guess > 0 and run_seconds(costs, guess, n_folds, val_every) > budget_s:
        guess -= 1
    return guess


@dataclass(frozen=True)
class BudgetDecision:
    """The training a budget buys; `reasons` says why for each choice."""

    epochs: int
    configurations: list[str]
    predicted_seconds: dict[str, float]  # per configuration, one fold's model
    predicted_total_s: float
    reasons: dict[str, str]


def decide(budget_s: float, costs: list[ConfigurationCost], n_folds: int, val_every: int, min_epochs: int,
           converged_epochs: int, max_epochs: int = MAX_EPOCHS, all_folds: int | None = None) -> BudgetDecision:
    """The native configuration (costs[0]) first, on every fold, for as many epochs as the budget
    buys; the other configurations join (nnU-Net's configuration selection) only when every model
    can still train `converged_epochs`, since a configuration compared before it converges loses
    for that reason alone, and the native one would have used the time better.

    With `all_folds` (split.n_folds) above `n_folds`, the reasons say when the budget would also
    train every fold to `converged_epochs` (a fold ensemble and out-of-fold Dice over every case):
    the folds are the user's to list, since DVC fixes the `train@k` stages before the plan runs.

    Raises ConfigError when the native configuration cannot reach `min_epochs`.
    """
    native = costs[:1]
    epochs = affordable_epochs(budget_s, native, n_folds, val_every, max_epochs)
    fold_text = f"{n_folds} fold{'s' if n_folds > 1 else ''}"
    if epochs < min_epochs:
        needed = run_seconds(native, min_epochs, n_folds, val_every)
        raise ConfigError(f"train.budget of {describe_minutes(budget_s)} buys {epochs} epochs of the {native[0].name} "
                          f"configuration on {fold_text}, under train.budget_min_epochs {min_epochs}; give at least "
                          f"{math.ceil(needed / 60)} min, or train fewer folds (split.folds)")
    chosen, reasons = native, {}
    if len(costs) > 1:
        together = affordable_epochs(budget_s, costs, n_folds, val_every, max_epochs)
        others = ", ".join(c.name for c in costs[1:])
        if together >= converged_epochs:
            chosen, epochs = costs, together
            reasons["configurations"] = (f"{epochs} epochs each for {', '.join(c.name for c in costs)} on {fold_text} "
                                         f">= train.budget_converged_epochs {converged_epochs}: cross-validated side by "
                                         f"side, evaluate picks the best or their ensemble")
        else:
            reasons["configurations"] = (f"{others} left out: with it every model would get {together} epochs, under "
                                         f"train.budget_converged_epochs {converged_epochs}")
    else:
        reasons["configurations"] = f"{native[0].name} is the only configuration of this data"
    if all_folds and all_folds > n_folds:
        every = affordable_epochs(budget_s, native, all_folds, val_every, max_epochs)
        if every >= converged_epochs:
            reasons["folds"] = (f"the budget would also train all {all_folds} folds for {every} epochs each: list them in "
                                f"split.folds for a {all_folds}-fold ensemble")
    predicted = {c.name: round(c.seconds(epochs, val_every), 1) for c in chosen}
    total = run_seconds(chosen, epochs, n_folds, val_every)
    capped = " (the cap, nnU-Net's 1000)" if epochs == max_epochs else ""
    reasons["epochs"] = (f"{epochs} epochs{capped} per model: {len(chosen)} configuration(s) x {fold_text} predicted "
                         f"at {describe_minutes(total)} of the {describe_minutes(budget_s)} budget")
    return BudgetDecision(epochs=epochs, configurations=[c.name for c in chosen], predicted_seconds=predicted,
                          predicted_total_s=round(total, 1), reasons=reasons)
