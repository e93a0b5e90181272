"""Champion/challenger: a new model replaces the champion only when it is better on the same cases.

Both models' out-of-fold Dice are paired by case id (a case scored by both). The challenger is
promoted when its mean paired gain exceeds `register.min_gain` and a one-sided paired Wilcoxon
signed-rank test (challenger > champion) gives p <= `register.max_p_value`. Too few common
cases, or a champion recorded without per-case scores, is decided conservatively and the
reason says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from segflow.config import RegisterConfig
from segflow.metrics.per_case import case_dice


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    champion: str | None = None
    n_paired: int = 0
    mean_gain: float | None = None
    gain_ci95: tuple[float, float] | None = None
    p_value: float | None = None

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def one_sided_wilcoxon(differences: np.ndarray) -> float:
    """p-value that the paired differences are centred above zero (1.0 when all are zero)."""
    from segflow.metrics.statistics import paired_wilcoxon

    return paired_wilcoxon(differences, np.zeros_like(differences), alternative="greater")["p_value"]


def challenge(challenger: pd.DataFrame, champion_id: str | None, champion: pd.DataFrame | None,
              champion_mean: float | None, rule: RegisterConfig) -> Verdict:
    """Should the challenger (its per-case scores) replace the champion?"""
    if champion_id is None:
        return Verdict(True, "no champion yet: the first registered model becomes champion")
    if champion is None:
        return _by_mean_only(case_dice(challenger), champion_id, champion_mean, rule)
    new, old = case_dice(challenger), case_dice(champion)
    common = new.index.intersection(old.index)
    if len(common) < rule.min_paired_cases:
        return Verdict(False, f"only {len(common)} evaluation case(s) in common with champion {champion_id} "
                              f"(register.min_paired_cases is {rule.min_paired_cases}): not comparable, kept as "
                              f"candidate; `segflow models promote` makes it champion by hand",
                       champion_id, len(common))
    return _paired(new[common].to_numpy() - old[common].to_numpy(), champion_id, rule)


def _paired(differences: np.ndarray, champion_id: str, rule: RegisterConfig) -> Verdict:
    from segflow.metrics.statistics import bootstrap_ci

    interval = bootstrap_ci(differences)
    gain, p_value = float(differences.mean()), one_sided_wilcoxon(differences)
    ci = (round(interval["low"], 5), round(interval["high"], 5))
    measured = (f"mean Dice gain {gain:+.4f} (95% CI {ci[0]:+.4f} to {ci[1]:+.4f}) over champion {champion_id} "
                f"on {differences.size} paired cases, one-sided Wilcoxon p={p_value:.3g}")
    if gain <= rule.min_gain:
        reason = f"not better: {measured}; needs a gain above register.min_gain {rule.min_gain}"
    elif p_value > rule.max_p_value:
        reason = f"not significantly better: {measured} > register.max_p_value {rule.max_p_value}"
    else:
        reason = f"better: {measured}"
    promote = reason.startswith("better")
    return Verdict(promote, reason, champion_id, int(differences.size), round(gain, 5), ci, round(p_value, 6))


def _by_mean_only(new: pd.Series, champion_id: str, champion_mean: float | None, rule: RegisterConfig) -> Verdict:
    """A champion registered before per-case scores were kept: compare means, and say so."""
    if champion_mean is None:
        return Verdict(False, f"champion {champion_id} has neither per-case scores nor a mean Dice: not "
                              f"comparable, kept as candidate", champion_id)
    gain = float(new.mean()) - champion_mean
    promote = gain > rule.min_gain
    verdict = "better" if promote else "not better"
    return Verdict(promote, f"{verdict}: mean Dice gain {gain:+.4f} over champion {champion_id} (means only: the "
                            f"champion has no per-case scores, so no paired test)", champion_id, 0, round(gain, 5))
